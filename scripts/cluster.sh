#!/usr/bin/env bash
# A local cluster: a redis-server of its own (REDIS_PORT, default 6399; nothing saved) and
# three nodes on 127.0.0.1:8001-8003, each serving the board at /, each log line prefixed
# with its node's port. Ctrl-C stops them all, and the script exits 0.
# Extra node flags go in ARGS, e.g. make cluster ARGS="--scrape-interval 0".
set -euo pipefail
cd "$(dirname "$0")/.."
redis_port=${REDIS_PORT:-6399}
command -v redis-server >/dev/null || { echo "needs redis-server: apt-get install redis-server" >&2; exit 1; }
cargo build --release --bin oddsbus
pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop EXIT
trap 'stop; trap - EXIT; exit 0' INT TERM
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
for port in 8001 8002 8003; do
  # shellcheck disable=SC2086 # ARGS is a list of flags
  ./target/release/oddsbus --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port" ${ARGS:-} \
    > >(sed -u "s/^/[$port] /") 2>&1 &
  pids+=($!)
done
echo "cluster: http://127.0.0.1:8001/ http://127.0.0.1:8002/ http://127.0.0.1:8003/ (redis on $redis_port)"
wait
