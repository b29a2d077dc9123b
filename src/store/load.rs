//! Reading the odds back from the database: the warm start (the current odds updated within
//! `--event-ttl`, with their events' details, put back into the cache before the node
//! serves), and one event the cache does not hold, for a read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::{Client, Row};

use crate::cache::{Details, Encoded, EventOdds, OddsCache, Snapshot, StoredSnapshot};
use crate::protocol::{Timestamp, HOME_SOURCE};

/// Snapshots put into the cache at once.
const CHUNK: usize = 1_000;

/// The columns every read of `odds_current` takes, in this order.
const COLUMNS: &str = "
    event_id, source, market_id, line, name, outcomes::text, bookmaker_id,
    to_char(captured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), snapshot_id";

/// One source's snapshot of one event, gathered from its markets' rows.
struct Gathered {
    snapshot_id: u64,
    json: Value,
}

/// Each (source, event)'s snapshot from rows of [`COLUMNS`] in market order.
fn gather(rows: &[Row]) -> BTreeMap<(String, u64), Gathered> {
    let mut snapshots: BTreeMap<(String, u64), Gathered> = BTreeMap::new();
    for row in rows {
        let (event_id, source): (i64, String) = (row.get(0), row.get(1));
        let (market_id, line, name): (String, String, String) =
            (row.get(2), row.get(3), row.get(4));
        let outcomes: Value = serde_json::from_str(row.get(5)).unwrap_or(Value::Null);
        let (bookmaker_id, captured_at): (Option<i64>, String) = (row.get(6), row.get(7));
        let snapshot_id: i64 = row.get(8);
        let gathered = snapshots
            .entry((source, event_id as u64))
            .or_insert_with(|| Gathered {
                snapshot_id: snapshot_id as u64,
                json: json!({"bookmaker_id": bookmaker_id, "captured_at": captured_at, "markets": []}),
            });
        let line: Option<f64> = line.parse().ok();
        let market =
            json!({"market_id": market_id, "name": name, "line": line, "outcomes": outcomes});
        if let Some(markets) = gathered.json["markets"].as_array_mut() {
            markets.push(market);
        }
    }
    snapshots
}

/// A snapshot from the JSON its rows were gathered into.
fn snapshot(value: &Value) -> Result<Snapshot, String> {
    let captured_at = value["captured_at"].as_str().unwrap_or_default();
    Ok(Snapshot {
        bookmaker_id: value["bookmaker_id"].as_i64(),
        captured_at: Timestamp::parse(captured_at)?,
        markets: serde_json::from_value(value["markets"].clone()).map_err(|e| e.to_string())?,
        event: None,
    })
}

/// Each event's details, and which source gave them, from rows of (id, source, JSON).
fn details(rows: &[Row]) -> HashMap<u64, (String, Arc<Details>)> {
    let mut details = HashMap::new();
    for row in rows {
        let (event_id, source, json): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        match Details::decode(json.as_bytes()) {
            Ok(held) => {
                details.insert(event_id as u64, (source, Arc::new(held)));
            }
            Err(error) => tracing::error!(event = "store.bad_row", event_id, %error),
        }
    }
    details
}

/// Loads the current odds into `cache`, numbering its snapshots after every id the
/// database holds; returns how many snapshots.
pub async fn current(client: &Client, cache: &OddsCache, ttl: Duration) -> Result<usize, String> {
    let failed =
        |e: tokio_postgres::Error| format!("--database-url: loading the odds failed ({e})");
    let secs = ttl.as_secs_f64();
    let highest: i64 = client
        .query_one(
            "SELECT coalesce(max(snapshot_id), 0) FROM odds_current",
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    cache.number_after(highest as u64);
    let recent = "updated_at > now() - make_interval(secs => $1)";
    let rows = client
        .query(
            &format!("SELECT event_id, source, details::text FROM event_details WHERE {recent}"),
            &[&secs],
        )
        .await
        .map_err(failed)?;
    let details = details(&rows);
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM odds_current WHERE {recent} ORDER BY source, event_id, position"), &[&secs])
        .await
        .map_err(failed)?;
    let snapshots = gather(&rows);
    let loaded = snapshots.len();
    let mut by_source: BTreeMap<String, Vec<(u64, Snapshot)>> = BTreeMap::new();
    for ((source, event_id), gathered) in snapshots {
        let mut snapshot = match snapshot(&gathered.json) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(event = "store.bad_row", event_id, %error);
                continue;
            }
        };
        // The details go with the snapshot of the source that gave them.
        if let Some((given_by, held)) = details.get(&event_id) {
            if *given_by == source {
                snapshot.event = Some(held.clone());
            }
        }
        by_source
            .entry(source)
            .or_default()
            .push((event_id, snapshot));
    }
    for (source, snapshots) in by_source {
        let mut snapshots = snapshots.into_iter().peekable();
        while snapshots.peek().is_some() {
            cache.put_batch(&source, snapshots.by_ref().take(CHUNK).collect());
        }
    }
    Ok(loaded)
}

/// The events of `event_ids` the database holds, each in the shape of a cache read.
pub async fn events(client: &Client, event_ids: &[u64]) -> Result<Vec<EventOdds>, String> {
    let ids: Vec<i64> = event_ids
        .iter()
        .filter_map(|&id| i64::try_from(id).ok())
        .collect();
    let query = format!(
        "SELECT {COLUMNS} FROM odds_current WHERE event_id = ANY($1) ORDER BY source, position"
    );
    let rows = client
        .query(&query, &[&ids])
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let details_query =
        "SELECT event_id, source, details::text FROM event_details WHERE event_id = ANY($1)";
    let details_rows = client
        .query(details_query, &[&ids])
        .await
        .map_err(|e| e.to_string())?;
    let mut details = details(&details_rows);
    let mut events: BTreeMap<u64, Vec<(Arc<str>, StoredSnapshot)>> = BTreeMap::new();
    for ((source, event_id), gathered) in gather(&rows) {
        let snapshot = snapshot(&gathered.json)?;
        let stored = Encoded::new(event_id, &snapshot).stored(gathered.snapshot_id);
        events
            .entry(event_id)
            .or_default()
            .push((Arc::from(source), stored));
    }
    Ok(events
        .into_iter()
        .map(|(event_id, mut sources)| {
            // As the cache orders them: the home bookmaker first, then competitors by name.
            sources
                .sort_by(|(a, _), (b, _)| (&**a != HOME_SOURCE, a).cmp(&(&**b != HOME_SOURCE, b)));
            let details = details.remove(&event_id).map(|(_, held)| held);
            EventOdds {
                event_id,
                details,
                sources,
            }
        })
        .collect())
}
