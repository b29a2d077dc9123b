#!/usr/bin/env bash
# Runs `cargo test --all-targets` RUNS times (default 50) and reports every test that failed
# even once, with how often. BUSY=1 keeps both cores busy with a spinning process each while
# the tests run, as a parallel build would. Logs of failed runs stay in target/flaky/.
# Exit status: 0 when every run passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-50}"
logs=target/flaky
rm -rf "$logs"
mkdir -p "$logs"

cargo test --all-targets --no-run --quiet

busy=()
stop_busy() { [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null || true; }
trap stop_busy EXIT
if [ "${BUSY:-0}" = 1 ]; then
  for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    busy+=($!)
  done
fi

failed_runs=0
for run in $(seq "$runs"); do
  log="$logs/run-$run.log"
  started=$SECONDS
  if cargo test --all-targets --no-fail-fast >"$log" 2>&1; then
    echo "run $run/$runs: ok ($((SECONDS - started)) s)"
    rm "$log"
  else
    failed_runs=$((failed_runs + 1))
    # `Running tests/x.rs (...)` names the binary of the `test name ... FAILED` lines below it.
    awk '/^ *Running /{bin=$2} /^test .* \.\.\. FAILED$/{print bin": "$2}' "$log" \
      >"$log.failed"
    [ -s "$log.failed" ] || echo "a test binary failed without naming a test: see $log" >"$log.failed"
    echo "run $run/$runs: FAILED ($((SECONDS - started)) s): $(paste -sd' ' "$log.failed")"
  fi
done

echo
echo "$runs runs, $failed_runs failed (BUSY=${BUSY:-0})"
if [ "$failed_runs" -gt 0 ]; then
  echo "failures by test:"
  cat "$logs"/*.failed | sort | uniq -c | sort -rn
  exit 1
fi
