#!/usr/bin/env bash
# Compares two oddsbus binaries on the fan-out targets of BENCHMARKS.md, the way this 2-core
# machine allows: alternating old and new on fresh servers, ROUNDS times each (default 3),
# then the median of each: throughput of T1 and T2 (unpaced), latency p99 of T3 and T4
# (paced), and the ingests' p99 of each. Usage: scripts/compare.sh OLD_BIN NEW_BIN [ROUNDS]
# (a binary may be a script that execs one with flags, e.g. with --database-url).
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
  t3=$("$load" --server "$ADDR" --server-pid "$pid" --clients 1000 --events 10000 --batch 1 --rate 1000 --inflight 32 | tail -1)
  t4=$("$load" --server "$ADDR" --server-pid "$pid" --clients 100 --events 2000 --batch 1 --rate 200 --inflight 8 | tail -1)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  for pair in "T1:$t1" "T2:$t2" "T3:$t3" "T4:$t4"; do
    echo "$1 ${pair%%:*} $(echo "${pair#*:}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["deliveries_per_sec"], r["lost"], r["latency_ms"]["p99"], r["ingest_latency_ms"]["p99"])')" | tee -a "$results"
  done
}

for round in $(seq "$rounds"); do
  run old "$old"
  run new "$new"
done
echo "medians (T1, T2: deliveries/s; T3, T4: latency p99):"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for target in ("T1", "T2", "T3", "T4"):
    for binary in ("old", "new"):
        mine = [r for r in rows if r[0] == binary and r[1] == target]
        lost = sum(int(r[3]) for r in mine)
        if target in ("T1", "T2"):
            values = [float(r[2]) / 1e6 for r in mine]
            unit = "M/s"
        else:
            values = [float(r[4]) for r in mine]
            unit = "ms p99"
        ingest = statistics.median(float(r[5]) for r in mine)
        print(f"{target} {binary}: {statistics.median(values):.2f} {unit} "
              f"(runs: {', '.join(f'{v:.2f}' for v in values)}; lost {lost}); "
              f"ingest p99 {ingest:.2f} ms")
PY
