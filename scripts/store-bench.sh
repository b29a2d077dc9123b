#!/usr/bin/env bash
# The PostgreSQL store's figures (BENCHMARKS.md, "The PostgreSQL store"), on a PostgreSQL of
# its own in a temporary directory (fsync off, as the tests run it; as `postgres` when root)
# and the release binaries:
#   1. the writer: EVENTS x 3 sources x 3 markets put by oddsbus-load (--large-readers 0),
#      seconds until all is committed; then each event's 1X2 changed, twice as fast as it is
#      taken and once paced at RATE markets/s (20000), with the lag; bytes per row on disk;
#   2. warm start: the broker stopped and started again ROUNDS times, seconds to a 200 /healthz;
#   3. a week of one event's history (a change every 5 s, written into the tables): the
#      first page (10,000 market rows), and the whole week page by page;
#   4. read-through: the broker started again with --max-events 1000, reads of events only
#      the database holds, one and 200 at a time (wrk, if installed).
# Usage: scripts/store-bench.sh [EVENTS] [ROUNDS]     (100000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-100000} ROUNDS=${2:-3} RATE=${RATE:-20000}
ADDR=127.0.0.1:8111
source scripts/lib/store.sh

echo "== the writer: $EVENTS events x 3 sources x 3 markets"
start --scrape-interval 0 --max-events $((EVENTS * 2))
began=$(now)
"$LOAD" --server "$ADDR" --large-readers 0 --events "$EVENTS" --duration 1 >/dev/null
ingested=$(now)
until [ "$(metric oddsbus_persist_queue_depth)" = 0 ] && [ "$(metric oddsbus_persist_lag_seconds)" = 0.0 ]; do
  sleep 0.05
done
rows=$(sql "SELECT count(*) FROM odds_current")
echo "ingests $(echo "$ingested - $began" | bc) s; all committed after $(echo "$(now) - $began" | bc) s: $rows market rows"
echo "history rows $(sql "SELECT count(*) FROM odds_history"), opening rows $(sql "SELECT count(*) FROM odds_opening")"
# Then every event's betpawa 1X2 at a new price (oddsbus-load's ingest mode, batches of 100):
# as fast as taken, twice (the first replaces its three markets with one, the second is price
# changes only), then paced at RATE changed markets a second.
for pass in first second paced; do
  pace=() began=$(now) lags=$(mktemp)
  [ "$pass" = paced ] && pace=(--rate $((RATE / 100)))
  "$LOAD" --server "$ADDR" --clients 1 --events "$EVENTS" --batch 100 "${pace[@]}" >/dev/null &
  load=$!
  while kill -0 "$load" 2>/dev/null || [ "$(metric oddsbus_persist_queue_depth)" != 0 ]; do
    metric oddsbus_persist_lag_seconds >>"$lags"
    sleep 0.1
  done
  took=$(echo "$(now) - $began" | bc)
  lag=$(sort -g "$lags" | awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "lag p99 %.2f s, most %.2f s", v[i], v[NR]}')
  echo "$pass pass, $EVENTS changed 1X2 markets: committed after $took s ($(echo "$EVENTS / $took" | bc) markets/s); $lag"
  rm -f "$lags"
done
echo "bytes per row: odds_current $(sql "SELECT pg_total_relation_size('odds_current') / $rows"), \
odds_history $(sql "SELECT sum(pg_total_relation_size(inhrelid)) / (SELECT count(*) FROM odds_history) FROM pg_inherits WHERE inhparent = 'odds_history'::regclass")"
stop

echo "== warm start"
for round in $(seq "$ROUNDS"); do
  start --scrape-interval 0
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
start --scrape-interval 0
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
  echo "== read-through: reads of events only the database holds, one and 200 at a time"
  start --scrape-interval 0 --max-events 1000
  cat >"$pg_dir/miss.lua" <<LUA
request = function()
  return wrk.format("GET", "/api/events/" .. (1000000000 + math.random(0, $EVENTS - 1)) .. "/odds")
end
LUA
  cat >"$pg_dir/bulk.lua" <<LUA
request = function()
  local ids = {}
  for i = 1, 200 do ids[i] = 1000000000 + math.random(0, $EVENTS - 1) end
  return wrk.format("GET", "/api/events/odds?ids=" .. table.concat(ids, ","))
end
LUA
  for script in miss bulk; do
    echo "$script:"
    wrk -t2 -c16 -d10s --latency -s "$pg_dir/$script.lua" "http://$ADDR" | grep -E "Requests/sec|50%|99%"
  done
  stop
fi
