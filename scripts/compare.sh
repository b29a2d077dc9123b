#!/usr/bin/env bash
# Compares two oddsbus binaries on the fan-out targets T1 and T2 of BENCHMARKS.md, the way
# this 2-core machine allows: alternating old and new on fresh servers, ROUNDS times each
# (default 3), then the median of each. Usage: scripts/compare.sh OLD_BIN NEW_BIN [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-3}
cargo build --release -p oddsbus-load >/dev/null
load=./target/release/oddsbus-load
ADDR=127.0.0.1:8100
results=$(mktemp)
trap 'rm -f "$results"; [ -n "${pid:-}" ] && kill -TERM "$pid" 2>/dev/null || true' EXIT

run() {  # label, binary
  "$2" --listen "$ADDR" --scrape-interval 0 --log warn >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sf "http://$ADDR/healthz" >/dev/null && break; sleep 0.1; done
  t1=$("$load" --server "$ADDR" --server-pid "$pid" --clients 1000 --events 20000 --batch 50 --inflight 8 | tail -1)
  t2=$("$load" --server "$ADDR" --server-pid "$pid" --clients 1000 --events 5000 --batch 1 --inflight 8 | tail -1)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  for pair in "T1:$t1" "T2:$t2"; do
    echo "$1 ${pair%%:*} $(echo "${pair#*:}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["deliveries_per_sec"], r["lost"])')" | tee -a "$results"
  done
}

for round in $(seq "$rounds"); do
  run old "$old"
  run new "$new"
done
echo "medians (deliveries/s):"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for target in ("T1", "T2"):
    for binary in ("old", "new"):
        values = [float(r[2]) for r in rows if r[0] == binary and r[1] == target]
        lost = sum(int(r[3]) for r in rows if r[0] == binary and r[1] == target)
        print(f"{target} {binary}: {statistics.median(values)/1e6:.2f} M/s "
              f"(runs: {', '.join(f'{v/1e6:.2f}' for v in values)}; lost {lost})")
PY
