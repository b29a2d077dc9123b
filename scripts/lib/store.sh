# What the store's scripts share (sourced): a PostgreSQL of their own in a temporary
# directory (fsync off, as the tests run it; as `postgres` when root) on PORT, the release
# broker on ADDR, and small readers. Stopped and removed on exit.
BIN=${BIN:-target/release/oddsbus} LOAD=${LOAD:-target/release/oddsbus-load}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PORT=$((25000 + RANDOM % 1000))
URL=postgres://postgres@127.0.0.1:$PORT/oddsbus
pg_dir=$(mktemp -d /tmp/oddsbus-store.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_up() {
  as_pg "$PGBIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start \
    -o "-p $PORT -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" >/dev/null
}
pg_down() { as_pg "$PGBIN/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null; }
stop_all() {
  [ -n "${broker:-}" ] && kill -TERM "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap stop_all EXIT
[ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
as_pg "$PGBIN/initdb" -D "$pg_dir/data" -U postgres -A trust -E UTF8 >/dev/null
pg_up
as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres oddsbus

sql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d oddsbus -At -c "$1"; }
now() { date +%s.%N; }
metric() { curl -s "http://$ADDR/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start() {  # flags; sets `broker`, and `took` to the seconds to a 200 /healthz
  local began; began=$(now)
  "$BIN" --listen "$ADDR" --database-url "$URL" --log warn "$@" >/dev/null 2>&1 &
  broker=$!
  until curl -sf "http://$ADDR/healthz" >/dev/null; do sleep 0.02; done
  took=$(echo "$(now) - $began" | bc)
}
stop() { kill -TERM "$broker"; wait "$broker" || true; broker=; }
