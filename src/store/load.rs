//! The warm start: the current odds updated within `--event-ttl`, with their events'
//! details, put back into the cache before the node serves, as each source's snapshots.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::cache::{Details, OddsCache, Snapshot};
use crate::protocol::Timestamp;

/// Snapshots put into the cache at once.
const CHUNK: usize = 1_000;

const CURRENT: &str = "
    SELECT event_id, source, market_id, line, name, outcomes::text, bookmaker_id,
           to_char(captured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
    FROM odds_current
    WHERE updated_at > now() - make_interval(secs => $1)
    ORDER BY source, event_id, position";

const DETAILS: &str = "
    SELECT event_id, source, details::text FROM event_details
    WHERE updated_at > now() - make_interval(secs => $1)";

/// Loads the current odds into `cache`; returns how many snapshots.
pub async fn current(client: &Client, cache: &OddsCache, ttl: Duration) -> Result<usize, String> {
    let failed =
        |e: tokio_postgres::Error| format!("--database-url: loading the odds failed ({e})");
    let secs = ttl.as_secs_f64();
    let mut details: HashMap<u64, (String, Arc<Details>)> = HashMap::new();
    for row in client.query(DETAILS, &[&secs]).await.map_err(failed)? {
        let (event_id, source, json): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        match Details::decode(json.as_bytes()) {
            Ok(held) => {
                details.insert(event_id as u64, (source, Arc::new(held)));
            }
            Err(error) => tracing::error!(event = "store.bad_row", event_id, %error),
        }
    }
    // Each source's snapshots, as the JSON an ingest carries, one market per row.
    let mut snapshots: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for row in client.query(CURRENT, &[&secs]).await.map_err(failed)? {
        let (event_id, source): (i64, String) = (row.get(0), row.get(1));
        let (market_id, line, name): (String, String, String) =
            (row.get(2), row.get(3), row.get(4));
        let outcomes: Value = serde_json::from_str(row.get(5)).unwrap_or(Value::Null);
        let (bookmaker_id, captured_at): (Option<i64>, String) = (row.get(6), row.get(7));
        let snapshot = snapshots.entry((source, event_id as u64)).or_insert_with(
            || json!({"bookmaker_id": bookmaker_id, "captured_at": captured_at, "markets": []}),
        );
        let line: Option<f64> = line.parse().ok();
        let market =
            json!({"market_id": market_id, "name": name, "line": line, "outcomes": outcomes});
        if let Some(markets) = snapshot["markets"].as_array_mut() {
            markets.push(market);
        }
    }
    let loaded = snapshots.len();
    let mut by_source: BTreeMap<String, Vec<(u64, Snapshot)>> = BTreeMap::new();
    for ((source, event_id), value) in snapshots {
        let mut snapshot = match snapshot(value) {
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

/// A snapshot from the JSON its rows were gathered into.
fn snapshot(value: Value) -> Result<Snapshot, String> {
    let captured_at = value["captured_at"].as_str().unwrap_or_default();
    Ok(Snapshot {
        bookmaker_id: value["bookmaker_id"].as_i64(),
        captured_at: Timestamp::parse(captured_at)?,
        markets: serde_json::from_value(value["markets"].clone()).map_err(|e| e.to_string())?,
        event: None,
    })
}
