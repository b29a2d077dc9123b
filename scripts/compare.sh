#!/usr/bin/env bash
# Compares two oddsbus builds on the fan-out targets of BENCHMARKS.md, the way this 2-core
# machine allows: alternating old and new on fresh servers, ROUNDS times each (default 3),
# then the median of each: throughput of T1 and T2 (unpaced) and the server's CPU per
# delivered id, latency p99 of T3 and T4 (paced), the ingests' p99 of each, and the server
# RSS per idle subscribed connection (10,000 held). T1 and T2 run 5 and 8 times the events of
# BENCHMARKS.md's targets (100,000 and 40,000), so that each run lasts 1.5 to 2 s: the
# targets' own 0.3 to 0.5 s runs vary by a third from one run to the next here.
# Usage: scripts/compare.sh [OLD] [NEW] [ROUNDS]
#   OLD and NEW are each a binary (or a script that execs one with flags, e.g. with
#   --database-url) or a commit, built once into target/compare/COMMIT/. OLD defaults to the
#   fixed baseline named at the top of BENCHMARKS.md, NEW to this tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=$(grep -o 'The fixed baseline is `[0-9a-f]*`' BENCHMARKS.md | grep -o '[0-9a-f]\{7,\}')
old=${1:-$baseline} new=${2:-./target/release/oddsbus} rounds=${3:-3}
cargo build --release -p oddsbus-load -p oddsbus >/dev/null
load=./target/release/oddsbus-load
ADDR=127.0.0.1:8100
results=$(mktemp)

# A binary for $1: itself if it is a file, else the commit's build (made once, in a worktree
# sharing one target directory so that dependencies build once).
binary() {
  if [ -f "$1" ]; then echo "$1"; return; fi
  local sha; sha=$(git rev-parse --short=7 "$1^{commit}")
  local out=target/compare/$sha/oddsbus
  if [ ! -x "$out" ]; then
    local tree; tree=$(mktemp -d /tmp/oddsbus-compare.XXXXXX)
    git worktree add --detach -f "$tree" "$sha" >/dev/null 2>&1
    echo "building $sha ..." >&2
    CARGO_TARGET_DIR=$PWD/target/compare/build cargo build --release --manifest-path "$tree/Cargo.toml" --bin oddsbus >&2
    mkdir -p "$(dirname "$out")"
    cp target/compare/build/release/oddsbus "$out"
    git worktree remove --force "$tree"
  fi
  echo "$out"
}
old=$(binary "$old") new=$(binary "$new")
echo "old: $old, new: $new"
trap 'rm -f "$results"; [ -n "${pid:-}" ] && kill -TERM "$pid" 2>/dev/null || true' EXIT

run() {  # label, binary
  "$2" --listen "$ADDR" --scrape-interval 0 --log warn >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sf "http://$ADDR/healthz" >/dev/null && break; sleep 0.1; done
  t1=$("$load" --server "$ADDR" --server-pid "$pid" --clients 1000 --events 100000 --batch 50 --inflight 8 | tail -1)
  t2=$("$load" --server "$ADDR" --server-pid "$pid" --clients 1000 --events 40000 --batch 1 --inflight 8 | tail -1)
  t3=$("$load" --server "$ADDR" --server-pid "$pid" --clients 1000 --events 10000 --batch 1 --rate 1000 --inflight 32 | tail -1)
  t4=$("$load" --server "$ADDR" --server-pid "$pid" --clients 100 --events 2000 --batch 1 --rate 200 --inflight 8 | tail -1)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  "$2" --listen "$ADDR" --scrape-interval 0 --log warn --max-connections 20000 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sf "http://$ADDR/healthz" >/dev/null && break; sleep 0.1; done
  idle=$("$load" --server "$ADDR" --server-pid "$pid" --connect --clients 10000 --hold 1 | tail -1)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "$1 idle $(echo "$idle" | python3 -c 'import json,sys; print(json.load(sys.stdin)["server_rss_per_connection_bytes"])')" | tee -a "$results"
  for pair in "T1:$t1" "T2:$t2" "T3:$t3" "T4:$t4"; do
    echo "$1 ${pair%%:*} $(echo "${pair#*:}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["deliveries_per_sec"], r["lost"], r["latency_ms"]["p99"], r["ingest_latency_ms"]["p99"], r["server_cpu_ns_per_id"])')" | tee -a "$results"
  done
}

for round in $(seq "$rounds"); do
  run old "$old"
  run new "$new"
done
echo "medians (T1, T2: deliveries/s; T3, T4: latency p99; idle: server RSS per connection):"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for binary in ("old", "new"):
    idle = [float(r[2]) / 1024 for r in rows if r[0] == binary and r[1] == "idle"]
    print(f"idle {binary}: {statistics.median(idle):.2f} KiB "
          f"(runs: {', '.join(f'{v:.2f}' for v in idle)})")
for target in ("T1", "T2", "T3", "T4"):
    for binary in ("old", "new"):
        mine = [r for r in rows if r[0] == binary and r[1] == target]
        lost = sum(int(r[3]) for r in mine)
        cpu = ""
        if target in ("T1", "T2"):
            values = [float(r[2]) / 1e6 for r in mine]
            unit = "M/s"
            cpu = f"; server CPU {statistics.median(float(r[6]) for r in mine):.1f} ns per id"
        else:
            values = [float(r[4]) for r in mine]
            unit = "ms p99"
        ingest = statistics.median(float(r[5]) for r in mine)
        print(f"{target} {binary}: {statistics.median(values):.2f} {unit} "
              f"(runs: {', '.join(f'{v:.2f}' for v in values)}; lost {lost}); "
              f"ingest p99 {ingest:.2f} ms{cpu}")
PY
