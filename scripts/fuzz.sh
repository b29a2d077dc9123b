#!/usr/bin/env bash
# Runs each cargo-fuzz target for FUZZ_SECS seconds (default 30), starting from the seeds in
# fuzz/seeds and the corpus kept in target/fuzz-corpus by earlier runs. A crash fails the
# run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-30}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

# cargo-fuzz passes compiler flags that only nightly accepts (-Zsanitizer=address);
# RUSTC_BOOTSTRAP lets the stable compiler take them, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
for target in client_message ingest_body; do
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "fuzzing $target for ${secs}s"
  cargo fuzz run --release "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -dict=fuzz/json.dict -print_final_stats=1 2>&1 |
    grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)|NEW_FUNC|Uses: '
done
