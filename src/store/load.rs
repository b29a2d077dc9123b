//! Reading the odds back from the database: the warm start (the current odds updated within
//! `--event-ttl`, with their events' details, put back into the cache before the node
//! serves), and one event the cache does not hold, for a read.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc;
use tokio_postgres::{Client, Row};

use crate::cache::{
    intern, Details, Encoded, EventOdds, Market, OddsCache, Outcome, Snapshot, StoredSnapshot,
};
use crate::engine::Engine;
use crate::protocol::{Timestamp, HOME_SOURCE};

/// Market rows read (and put into the cache) at once at the warm start, about; a page ends
/// with a whole event.
const PAGE_ROWS: usize = 20_000;

/// Most snapshots in one append of a refill: well within what the append script does in
/// its time (`crate::engine`).
const REFILL_APPEND: usize = 1_000;

/// The columns every read of `odds_current` takes, in this order.
const COLUMNS: &str = "
    event_id, source, market_id, line, name, outcomes::text, bookmaker_id,
    (extract(epoch FROM captured_at) * 1000)::bigint, snapshot_id, position";

/// One source's snapshot of one event, gathered from its markets' rows.
struct Gathered {
    snapshot_id: u64,
    snapshot: Snapshot,
    /// Each market's place in the snapshot.
    positions: Vec<i32>,
}

/// Each (source, event)'s snapshot from rows of [`COLUMNS`], in any order (the database
/// need not sort them); a row that does not read back is logged and left out.
fn gather(rows: &[Row]) -> BTreeMap<(&str, u64), Gathered> {
    let mut snapshots: BTreeMap<(&str, u64), Gathered> = BTreeMap::new();
    for row in rows {
        let (event_id, source): (i64, &str) = (row.get(0), row.get(1));
        let key = (source, event_id as u64);
        let gathered = match snapshots.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let Some(captured_at) = Timestamp::from_unix_millis(row.get(7)) else {
                    let why = "captured_at out of range";
                    tracing::error!(event = "store.bad_row", event_id, why);
                    continue;
                };
                let snapshot = Snapshot {
                    bookmaker_id: row.get(6),
                    captured_at,
                    markets: Vec::new(),
                    event: None,
                };
                entry.insert(Gathered {
                    snapshot_id: row.get::<_, i64>(8) as u64,
                    snapshot,
                    positions: Vec::new(),
                })
            }
        };
        let outcomes: Vec<Outcome> = match serde_json::from_str(row.get(5)) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::error!(event = "store.bad_row", event_id, %error);
                continue;
            }
        };
        let line: &str = row.get(3);
        let market = Market {
            market_id: intern(row.get(2)),
            name: intern(row.get(4)),
            line: line.parse().ok(),
            outcomes,
        };
        gathered.snapshot.markets.push(market);
        gathered.positions.push(row.get(9));
    }
    for gathered in snapshots.values_mut() {
        let positions = std::mem::take(&mut gathered.positions);
        let markets = std::mem::take(&mut gathered.snapshot.markets);
        let mut placed: Vec<(i32, Market)> = positions.into_iter().zip(markets).collect();
        placed.sort_by_key(|(position, _)| *position);
        gathered.snapshot.markets = placed.into_iter().map(|(_, market)| market).collect();
    }
    snapshots
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

/// A page of the warm start: the rows of its markets, and its events' details.
type Page = (Vec<Row>, Vec<Row>);

/// Loads the current odds into `cache` a page of events at a time, numbering its snapshots
/// after every id the database holds; returns how many snapshots. One task reads the pages
/// on a connection of its own while this one puts the last into the cache, at most two
/// pages ahead: the database and the cache work at once, and what is read is never much
/// more than a few pages.
pub async fn current(pool: &Pool, cache: &OddsCache, ttl: Duration) -> Result<usize, String> {
    let client = pool
        .get()
        .await
        .map_err(|e| format!("--database-url: the database cannot be reached ({e})"))?;
    let highest: i64 = client
        .query_one(
            "SELECT coalesce(max(snapshot_id), 0) FROM odds_current",
            &[],
        )
        .await
        .map_err(loading_failed)?
        .get(0);
    cache.number_after(highest as u64);
    let (pages, mut read) = mpsc::channel(2);
    let reader = tokio::spawn(read_pages(client, ttl, pages));
    let mut loaded = 0;
    while let Some(page) = read.recv().await {
        let (rows, details_rows) = page?;
        loaded += put_page(cache, &rows, &details_rows);
    }
    reader
        .await
        .map_err(|e| format!("--database-url: loading the odds failed ({e})"))?;
    Ok(loaded)
}

fn loading_failed(e: tokio_postgres::Error) -> String {
    format!("--database-url: loading the odds failed ({e})")
}

/// Reads the pages of the warm start in key order into `pages`, until the last (or an error,
/// sent as the last).
async fn read_pages(client: Object, ttl: Duration, pages: mpsc::Sender<Result<Page, String>>) {
    let secs = ttl.as_secs_f64();
    let recent = "updated_at > now() - make_interval(secs => $1)";
    // The last event of the next page: the rows come in key order from the primary key.
    let bound = format!(
        "SELECT max(event_id) FROM (SELECT event_id FROM odds_current WHERE event_id > $1 \
         ORDER BY event_id LIMIT {PAGE_ROWS}) AS page"
    );
    let query = format!(
        "SELECT {COLUMNS} FROM odds_current WHERE event_id > $2 AND event_id <= $3 AND {recent}"
    );
    let details_query = "SELECT event_id, source, details::text FROM event_details \
                         WHERE event_id > $1 AND event_id <= $2";
    let mut after = -1i64;
    loop {
        let page = async {
            let last: Option<i64> = client.query_one(&bound, &[&after]).await?.get(0);
            let Some(last) = last else {
                return Ok(None);
            };
            let rows = client.query(&query, &[&secs, &after, &last]).await?;
            let details = client.query(details_query, &[&after, &last]).await?;
            Ok(Some((last, rows, details)))
        };
        let sent = match page.await {
            Ok(None) => return,
            Ok(Some((last, rows, details))) => {
                after = last;
                pages.send(Ok((rows, details))).await
            }
            Err(error) => pages.send(Err(loading_failed(error))).await,
        };
        if sent.is_err() {
            return; // the loader stopped
        }
    }
}

/// Puts one page into `cache`; returns how many snapshots.
fn put_page(cache: &OddsCache, rows: &[Row], details_rows: &[Row]) -> usize {
    let mut loaded = 0;
    for (source, snapshots) in by_source(rows, details_rows) {
        loaded += snapshots.len();
        cache.put_batch(source, snapshots);
    }
    loaded
}

/// A page's snapshots by source, each with its event's details when that source gave them.
fn by_source<'a>(rows: &'a [Row], details_rows: &[Row]) -> BTreeMap<&'a str, Vec<(u64, Snapshot)>> {
    let details = details(details_rows);
    let mut by_source: BTreeMap<&str, Vec<(u64, Snapshot)>> = BTreeMap::new();
    for ((source, event_id), gathered) in gather(rows) {
        let mut snapshot = gathered.snapshot;
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
    by_source
}

/// Puts the current odds updated within `ttl` back into the cluster through `engine` (after
/// Redis lost them), a page at a time, in appends of at most [`REFILL_APPEND`] snapshots;
/// the cluster keeps its own where they are newer. Returns how many snapshots were sent.
pub async fn refill(pool: &Pool, engine: &Engine, ttl: Duration) -> Result<usize, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let (pages, mut read) = mpsc::channel(2);
    let reader = tokio::spawn(read_pages(client, ttl, pages));
    let mut sent = 0;
    while let Some(page) = read.recv().await {
        let (rows, details_rows) = page?;
        for (source, mut snapshots) in by_source(&rows, &details_rows) {
            while !snapshots.is_empty() {
                let rest = snapshots.split_off(snapshots.len().min(REFILL_APPEND));
                sent += snapshots.len();
                engine
                    .put(source, snapshots, None)
                    .await
                    .map_err(|e| e.message)?;
                snapshots = rest;
            }
        }
    }
    reader.await.map_err(|e| e.to_string())?;
    Ok(sent)
}

/// The events of `event_ids` the database holds, each in the shape of a cache read.
pub async fn events(client: &Client, event_ids: &[u64]) -> Result<Vec<EventOdds>, String> {
    let ids: Vec<i64> = event_ids
        .iter()
        .filter_map(|&id| i64::try_from(id).ok())
        .collect();
    let query = format!("SELECT {COLUMNS} FROM odds_current WHERE event_id = ANY($1)");
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
        let stored = Encoded::new(event_id, &gathered.snapshot).stored(gathered.snapshot_id);
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
