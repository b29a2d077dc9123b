#!/usr/bin/env bash
# The store under the simulated market as `make run` runs it (its defaults), with a database
# of its own (scripts/lib/store.sh) and the release broker:
#   1. for SECS seconds: history rows and bytes a day at that rate, and the writer's lag;
#   2. the database stopped for OUTAGE seconds, then started again: changes left out of the
#      history (oddsbus_persist_dropped_total), the time until the writer has caught up, and
#      whether the database then holds every snapshot the cache held, at its id or a newer
#      one (read from the cache, then the broker stopped, which writes what is pending).
# Usage: scripts/store-market.sh [SECS] [OUTAGE]     (60, 60)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60} OUTAGE=${2:-60}
ADDR=127.0.0.1:8113
source scripts/lib/store.sh
history_rows() { metric 'oddsbus_persist_rows_total{table="odds_history"}'; }

start
until [ -n "$(history_rows)" ]; do sleep 0.2; done # the first run's changes are written
rows0=$(history_rows) began=$(now) lags=$(mktemp)
for _ in $(seq $((SECS * 2))); do
  metric oddsbus_persist_lag_seconds >>"$lags"
  sleep 0.5
done
rows=$(echo "$(history_rows) - $rows0" | bc) secs=$(echo "$(now) - $began" | bc)
per_row=$(sql "SELECT sum(pg_total_relation_size(inhrelid)) / greatest(1, (SELECT count(*) FROM odds_history))
               FROM pg_inherits WHERE inhparent = 'odds_history'::regclass")
echo "history: $rows rows in $secs s: $(echo "$rows * 86400 / $secs" | bc) rows a day, \
$(echo "$rows * 86400 / $secs * $per_row / 1000000" | bc) MB a day at $per_row bytes a row"
sort -g "$lags" | awk '{v[NR] = $1} END {printf "lag p50 %.3f s, p99 %.3f s, most %.3f s\n", v[int(NR / 2)], v[int(NR * 0.99)], v[NR]}'

dropped0=$(metric oddsbus_persist_dropped_total)
pg_down
sleep "$OUTAGE"
echo "after ${OUTAGE} s without a database: queue $(metric oddsbus_persist_queue_depth) snapshots, \
lag $(metric oddsbus_persist_lag_seconds) s, health $(curl -s "http://$ADDR/healthz")"
pg_up
back=$(now)
until [ "$(metric oddsbus_persist_queue_depth)" = 0 ] && [ "$(curl -s "http://$ADDR/healthz" | jq -r .database)" = ok ]; do
  sleep 0.1
done
echo "caught up $(echo "$(now) - $back" | bc) s after the database was back; \
left out of the history: $(echo "$(metric oddsbus_persist_dropped_total) - $dropped0" | bc) changes"

# What the cache holds now, then the broker stopped (it writes what is pending), then the
# database: every (event, source) there, at the cache's snapshot id or a newer one.
cached=$(mktemp)
python3 - "$ADDR" >"$cached" <<'PY'
import json, sys, urllib.request
base = f"http://{sys.argv[1]}"
get = lambda path: json.load(urllib.request.urlopen(base + path))
ids = [e["event_id"] for e in get("/api/events")["events"]]
for at in range(0, len(ids), 500):
    for event in get("/api/events/odds?ids=" + ",".join(map(str, ids[at:at + 500])))["events"]:
        sources = dict(event.get("competitors") or {})
        if event.get("betpawa"):
            sources["betpawa"] = event["betpawa"]
        for source, snapshot in sources.items():
            print(event["event_id"], source, snapshot["snapshot_id"])
PY
stop
sql "SELECT event_id, source, max(snapshot_id) FROM odds_current GROUP BY 1, 2" | tr '|' ' ' >"$cached.db"
python3 - "$cached" "$cached.db" <<'PY'
import sys
read = lambda path: {(e, s): int(i) for e, s, i in (line.split() for line in open(path))}
cache, db = read(sys.argv[1]), read(sys.argv[2])
missing = [k for k in cache if k not in db]
older = [k for k in cache if k in db and db[k] < cache[k]]
print(f"the cache held {len(cache)} snapshots: {len(missing)} missing from the database, "
      f"{len(older)} there at an older id")
PY
rm -f "$lags" "$cached" "$cached.db"
