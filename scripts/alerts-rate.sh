#!/usr/bin/env bash
# What the odds analysis does with the simulated market: alerts per minute by kind, those the
# cooldown held back, and the CPU the thread behind the cache (the price history and the
# analysis; two threads before 7074243, both counted) spent per change the cache took.
# Usage: [BIN=path] scripts/alerts-rate.sh [SECONDS] [BROKER FLAGS...]
#   e.g. scripts/alerts-rate.sh 60                       (the default market)
#        scripts/alerts-rate.sh 60 --scrape-interval 0.05 --sim-change-fraction 1 --sim-latency-ms 0
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
bin=${BIN:-./target/release/oddsbus}
[ -n "${BIN:-}" ] || cargo build --release -q --bin oddsbus
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --listen "127.0.0.1:$port" "$@" >/dev/null 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
sleep "$seconds"
metrics=$(curl -s "http://127.0.0.1:$port/metrics")
# utime + stime of the threads behind the cache, in clock ticks.
ticks=0
for task in /proc/"$pid"/task/*; do
  case "$(cat "$task/comm")" in
    odds-watch|odds-analysis|price-history) ticks=$((ticks + $(awk '{print $14 + $15}' "$task/stat"))) ;;
  esac
done
hz=$(getconf CLK_TCK)
changes=$(echo "$metrics" | awk '/^oddsbus_dispatcher_batch_size_sum/ {print $2}')
echo "$metrics" | awk -v s="$seconds" '/^oddsbus_alerts(_suppressed)?_total/ {printf "%s %.1f/min\n", $1, $2 * 60 / s}'
awk -v t="$ticks" -v hz="$hz" -v c="$changes" -v s="$seconds" 'BEGIN {
  printf "changes taken by the cache: %d (%.0f/min); CPU behind the cache: %.2f s, %.1f us per change\n",
    c, c * 60 / s, t / hz, (c > 0 ? t / hz / c * 1e6 : 0) }'
