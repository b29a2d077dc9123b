#!/usr/bin/env bash
# Cluster against single node on this machine, alternating ROUNDS times (default 3), fresh
# processes each run. Single: one node. Cluster: a redis-server of its own and three nodes,
# subscribers spread over the three, ingests on the first. Two runs each:
#   T1: 1,000 subscribers, batch 50, unpaced, 20,000 events (deliveries/s, and the messages
#       per second the subscribers received: merging makes them fewer than the log entries)
#   P:  100 subscribers, batch 1, paced 200 ingests/s for 10 s (latency p99)
# Usage: scripts/cluster-bench.sh [BIN] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p oddsbus-load -p oddsbus >/dev/null
bin=${1:-./target/release/oddsbus} rounds=${2:-3}
load=./target/release/oddsbus-load
redis_port=6398
results=$(mktemp)
pids=()
stop() { [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
trap 'stop; rm -f "$results"' EXIT

up() {  # port [redis]
  if [ -n "${2:-}" ]; then
    "$bin" --listen "127.0.0.1:$1" --scrape-interval 0 --log warn --redis "$2" >/dev/null 2>&1 &
  else
    "$bin" --listen "127.0.0.1:$1" --scrape-interval 0 --log warn >/dev/null 2>&1 &
  fi
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done
  echo "node on $1 did not come up" >&2; exit 1
}

measure() {  # label, load flags...
  local label=$1; shift
  local t1 p
  t1=$("$load" "$@" --clients 1000 --events 20000 --batch 50 --inflight 8 | tail -1)
  p=$("$load" "$@" --clients 100 --events 2000 --batch 1 --inflight 8 --rate 200 | tail -1)
  for pair in "T1:$t1" "P:$p"; do
    echo "$label ${pair%%:*} $(echo "${pair#*:}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["deliveries_per_sec"], r["latency_ms"]["p99"], r["lost"], r["duplicates"], r["frames_per_sec"])')" | tee -a "$results"
  done
}

for round in $(seq "$rounds"); do
  up 8100
  measure single --server 127.0.0.1:8100
  stop
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for port in 8101 8102 8103; do up "$port" "redis://127.0.0.1:$redis_port"; done
  measure cluster --server 127.0.0.1:8101 --nodes 127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103
  stop
done
echo "medians:"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for target in ("T1", "P"):
    for setup in ("single", "cluster"):
        got = [r for r in rows if r[0] == setup and r[1] == target]
        rate = statistics.median(float(r[2]) for r in got) / 1e6
        p99 = statistics.median(float(r[3]) for r in got)
        lost, dups = sum(int(r[4]) for r in got), sum(int(r[5]) for r in got)
        frames = statistics.median(float(r[6]) for r in got) / 1e3
        print(f"{target} {setup}: {rate:.2f} M deliveries/s, {frames:.0f} k messages/s, p99 {p99:.2f} ms "
              f"(runs: {', '.join(r[2] for r in got)}; lost {lost}, duplicates {dups})")
PY
