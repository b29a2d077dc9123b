#!/usr/bin/env bash
# Runs the load-tool matrix of BENCHMARKS.md against a fresh release build of oddsbus on
# 127.0.0.1:8100, one fresh server per configuration, and prints each run's JSON line.
# Usage: scripts/bench-matrix.sh [quick]   (quick: the five target runs only)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins >/dev/null

ADDR=127.0.0.1:8100
SERVER_PID=

start_server() {  # extra flags for oddsbus
  ./target/release/oddsbus --listen "$ADDR" --scrape-interval 0 --log warn "$@" >/dev/null 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 50); do curl -sf "http://$ADDR/healthz" >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; }
trap 'kill -TERM "$SERVER_PID" 2>/dev/null || true' EXIT

load() {  # label, load-tool flags
  local label=$1; shift
  local json
  json=$(./target/release/oddsbus-load --server "$ADDR" --server-pid "$SERVER_PID" "$@" | tail -1)
  echo "$label $json"
}

targets() {  # server flags
  start_server "$@"
  load "T1 1000c b50 unpaced"      --clients 1000 --events 20000 --batch 50 --inflight 8
  load "T2 1000c b1 8inflight"     --clients 1000 --events 5000 --batch 1 --inflight 8
  load "T3 1000c b1 paced1000"     --clients 1000 --events 10000 --batch 1 --rate 1000 --inflight 32
  load "T4 100c b1 paced200"       --clients 100 --events 2000 --batch 1 --rate 200 --inflight 8
  load "T5 10000c b50 unpaced"     --clients 10000 --events 20000 --batch 50 --inflight 8 --latency-clients 1000
  stop_server
}

matrix() {  # server flags
  start_server "$@"
  for clients in 100 1000 10000; do
    load "M ${clients}c b1"  --clients "$clients" --events 5000 --batch 1 --inflight 8 --latency-clients 1000
    load "M ${clients}c b50" --clients "$clients" --events 20000 --batch 50 --inflight 8 --latency-clients 1000
  done
  stop_server
}

echo "== coalescing on (defaults)"
targets
[ "${1:-}" = quick ] && exit 0
matrix
echo "== coalescing off (--no-coalesce: one odds_update per put)"
targets --no-coalesce
matrix --no-coalesce
echo "== idle connections"
for clients in 10000 19000; do
  start_server
  echo "idle ${clients}c $(./target/release/oddsbus-load --server "$ADDR" --server-pid "$SERVER_PID" --connect --clients "$clients" --hold 1 | tail -1)"
  stop_server
done
