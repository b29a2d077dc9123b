#!/usr/bin/env bash
# The PostgreSQL store's figures (BENCHMARKS.md, "The PostgreSQL store"), on a PostgreSQL of
# its own in a temporary directory (fsync off, as the tests run it; as `postgres` when root)
# and the release binaries:
#   1. the writer: EVENTS x 3 sources x 3 markets put by oddsbus-load (--large-readers 0),
#      seconds until all is committed; then each event's 1X2 changed twice, as fast as it
#      is taken (the most lag seen); bytes per row on disk;
#   2. warm start: the broker stopped and started again ROUNDS times, seconds to a 200 /healthz;
#   3. a week of one event's history (a change every 5 s, written into the tables): the
#      first page (10,000 market rows), and the whole week page by page;
#   4. read-through: the broker started again with --max-events 1000, single reads of events
#      only the database holds (wrk, if installed).
# Usage: scripts/store-bench.sh [EVENTS] [ROUNDS]     (100000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-100000} ROUNDS=${2:-3}
BIN=${BIN:-target/release/oddsbus} LOAD=${LOAD:-target/release/oddsbus-load}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
ADDR=127.0.0.1:8111 PORT=$((25000 + RANDOM % 1000))
dir=$(mktemp -d /tmp/oddsbus-store-bench.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
stop_all() {
  [ -n "${broker:-}" ] && kill -TERM "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop_all EXIT
as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
  -o "-p $PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" >/dev/null
as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres oddsbus
URL=postgres://postgres@127.0.0.1:$PORT/oddsbus
sql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d oddsbus -At -c "$1"; }
now() { date +%s.%N; }
metric() { curl -s "http://$ADDR/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start() {  # extra flags; sets `took` to the seconds to a 200 /healthz
  local began; began=$(now)
  "$BIN" --listen "$ADDR" --scrape-interval 0 --database-url "$URL" --log warn "$@" >/dev/null 2>&1 &
  broker=$!
  until curl -sf "http://$ADDR/healthz" >/dev/null; do sleep 0.02; done
  took=$(echo "$(now) - $began" | bc)
}
stop() { kill -TERM "$broker"; wait "$broker" || true; broker=; }

echo "== the writer: $EVENTS events x 3 sources x 3 markets"
start --max-events $((EVENTS * 2))
began=$(now)
"$LOAD" --server "$ADDR" --large-readers 0 --events "$EVENTS" --duration 1 >/dev/null
ingested=$(now)
until [ "$(metric oddsbus_persist_queue_depth)" = 0 ] && [ "$(metric oddsbus_persist_lag_seconds)" = 0.0 ]; do
  sleep 0.05
done
rows=$(sql "SELECT count(*) FROM odds_current")
echo "ingests $(echo "$ingested - $began" | bc) s; all committed after $(echo "$(now) - $began" | bc) s: $rows market rows"
echo "history rows $(sql "SELECT count(*) FROM odds_history"), opening rows $(sql "SELECT count(*) FROM odds_opening")"
# Then every event's betpawa 1X2 twice at a new price (oddsbus-load's ingest mode, batches of
# 100): the first replaces its three markets with one, the second is price changes only.
for pass in first second; do
  began=$(now) most_lag=0
  "$LOAD" --server "$ADDR" --clients 1 --events "$EVENTS" --batch 100 >/dev/null &
  load=$!
  while kill -0 "$load" 2>/dev/null || [ "$(metric oddsbus_persist_queue_depth)" != 0 ]; do
    most_lag=$(echo "$(metric oddsbus_persist_lag_seconds) $most_lag" | awk '{print ($1 > $2) ? $1 : $2}')
    sleep 0.1
  done
  took=$(echo "$(now) - $began" | bc)
  echo "$pass pass of $EVENTS changed 1X2 markets: committed after $took s ($(echo "$EVENTS / $took" | bc) markets/s), most lag seen $most_lag s"
done
echo "bytes per row: odds_current $(sql "SELECT pg_total_relation_size('odds_current') / $rows"), \
odds_history $(sql "SELECT sum(pg_total_relation_size(inhrelid)) / (SELECT count(*) FROM odds_history) FROM pg_inherits WHERE inhparent = 'odds_history'::regclass")"
stop

echo "== warm start"
for round in $(seq "$ROUNDS"); do
  start
  echo "round $round: $took s to a 200 /healthz, $(metric oddsbus_cache_events) events"
  stop
done

echo "== a week of one event's history, a change every 5 s"
sql "DO \$\$
  DECLARE d date;
  BEGIN
    FOR d IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 8, (now() AT TIME ZONE 'UTC')::date, '1 day')::date LOOP
      EXECUTE format('CREATE TABLE IF NOT EXISTS odds_history_%s PARTITION OF odds_history FOR VALUES FROM (%L) TO (%L)',
                     to_char(d, 'YYYYMMDD'), d || ' 00:00:00+00', (d + 1) || ' 00:00:00+00');
    END LOOP;
  END \$\$;
  INSERT INTO odds_history
  SELECT 1, 'betpawa', '1x2', '', jsonb_build_array(
           jsonb_build_object('name', '1', 'odds', round((2 + sin(n / 100.0))::numeric, 2)),
           jsonb_build_object('name', 'X', 'odds', 3.2), jsonb_build_object('name', '2', 'odds', 3.5)),
         t, t
  FROM generate_series(1, 120960) AS n, LATERAL (SELECT now() - n * interval '5 seconds' AS t) AS at;
  INSERT INTO odds_opening VALUES (1, 'betpawa', '1x2', '', '1', 2.0, now() - interval '7 days')
  ON CONFLICT DO NOTHING;
  ANALYZE odds_history;" >/dev/null
start
from=$(date -u -d '7 days ago' +%Y-%m-%dT%H:%M:%SZ)
for _ in $(seq 20); do
  curl -s -o /dev/null -w '%{time_total}\n' "http://$ADDR/api/events/1/history?from=$from"
done | sort -n | awk '{t[NR] = $1} END {printf "first page (10,000 rows), 20 reads: p50 %.1f ms, max %.1f ms\n", t[int(NR / 2)] * 1000, t[NR] * 1000}'
began=$(now) pages=0 next=$from
while [ -n "$next" ]; do
  next=$(curl -s "http://$ADDR/api/events/1/history?from=$next" | jq -r '.next_from // empty')
  pages=$((pages + 1))
done
echo "the whole week: $pages pages in $(echo "$(now) - $began" | bc) s"
stop

if command -v wrk >/dev/null; then
  echo "== read-through: single reads of events only the database holds"
  start --max-events 1000
  cat >"$dir/miss.lua" <<EOF
request = function()
  return wrk.format("GET", "/api/events/" .. (1000000000 + math.random(0, $EVENTS - 1)) .. "/odds")
end
EOF
  wrk -t2 -c16 -d10s --latency -s "$dir/miss.lua" "http://$ADDR" | grep -E "Requests/sec|50%|99%"
  stop
fi
