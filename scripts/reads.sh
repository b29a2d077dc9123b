#!/usr/bin/env bash
# Compares the cache-first reads of two oddsbus binaries with wrk (2 threads, 64 connections,
# 10 s), the way BENCHMARKS.md reports them: the simulated market (1,300 events x 3 sources)
# scraping every second, alternating old and new on fresh servers, ROUNDS times (default 3).
# Usage: scripts/reads.sh OLD_BIN NEW_BIN [ROUNDS]     (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")"
old=$1 new=$2 rounds=${3:-3}
ADDR=127.0.0.1:8101
trap '[ -n "${pid:-}" ] && kill -TERM "$pid" 2>/dev/null || true' EXIT

run() {  # label, binary
  "$2" --listen "$ADDR" --scrape-interval 1 --log warn >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sf "http://$ADDR/api/events/101300/odds" >/dev/null && break; sleep 0.2; done
  for script in single bulk; do
    out=$(wrk -t2 -c64 -d10s --latency -s "wrk/$script.lua" "http://$ADDR")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    echo "$1 $script $rps req/s p99 $p99"
  done
  kill -TERM "$pid"; wait "$pid" || true; pid=
}

for _ in $(seq "$rounds"); do
  run old "$old"
  run new "$new"
done
