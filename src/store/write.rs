//! The writer: one task that commits what the cache changed, in batches, each in one
//! transaction of three prepared statements (from arrays, `INSERT … SELECT FROM unnest`):
//! every market of each snapshot upserted into `odds_current`, with a history row for each
//! market whose outcomes changed and the opening price of each outcome never seen before;
//! the markets a snapshot no longer has deleted; the events' details upserted. While the
//! database fails it retries with backoff and warns once per outage.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{retention, within, Change, Store};
use crate::cache::OddsCache;
use crate::engine::Position;
use crate::metrics::label;

/// Most snapshots committed in one transaction.
const BATCH: usize = 1_000;

/// Least time from the start of one write to the next, unless a full batch waits.
const GATHER: Duration = Duration::from_millis(20);

/// Longest wait between two tries while the database fails.
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// Longest one batch may take to commit (a thousand snapshots take tens of milliseconds):
/// a database that stops answering counts as failing after this, and the batch is retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes a batch's markets in one statement, every part of which sees the tables as the last
/// commit left them: each market upserted into `odds_current` (recorded at `$11`); the
/// markets whose outcomes changed get a history row, and their outcomes that were not there
/// an opening price unless one was recorded (an outcome that left its market and came back
/// keeps its first). Returns the rows of each table.
const WRITE_MARKETS: &str = "
    WITH t AS (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[],
                             $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[])
             AS t(e, s, m, l, p, n, o, b, c, i)
    ), up AS (
        INSERT INTO odds_current
            (event_id, source, market_id, line, position, name, outcomes, bookmaker_id,
             captured_at, snapshot_id, updated_at)
        SELECT e, s, m, l, p, n, o::json, b, c::timestamptz, i, $11 FROM t
        ON CONFLICT (event_id, source, market_id, line) DO UPDATE SET
            position = excluded.position, name = excluded.name, outcomes = excluded.outcomes,
            bookmaker_id = excluded.bookmaker_id, captured_at = excluded.captured_at,
            snapshot_id = excluded.snapshot_id, updated_at = excluded.updated_at
        RETURNING event_id, source, market_id, line, outcomes, captured_at
    ), changed AS (
        -- `odds_current` here is still the table before `up`: each market's outcomes as the
        -- last commit left them, looked up by key.
        SELECT up.*, cur.outcomes AS was
        FROM up
        LEFT JOIN odds_current cur
               ON cur.event_id = up.event_id AND cur.source = up.source
              AND cur.market_id = up.market_id AND cur.line = up.line
        WHERE cur.outcomes::text IS DISTINCT FROM up.outcomes::text
    ), history AS (
        INSERT INTO odds_history
            (event_id, source, market_id, line, outcomes, captured_at, recorded_at)
        SELECT event_id, source, market_id, line, outcomes, captured_at, $11 FROM changed
        RETURNING 1
    ), opening AS (
        INSERT INTO odds_opening (event_id, source, market_id, line, outcome, odds, captured_at)
        SELECT event_id, source, market_id, line, x->>'name', (x->>'odds')::float8, captured_at
        FROM changed, json_array_elements(outcomes) AS x
        WHERE was IS NULL
           OR NOT was::jsonb @> jsonb_build_array(jsonb_build_object('name', x->>'name'))
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM history),
           (SELECT count(*) FROM opening)";

/// A snapshot replaces its event's markets of that source whole: those the statement before
/// did not write (at `$3`) go.
const DELETE_GONE_MARKETS: &str = "
    DELETE FROM odds_current o
    USING unnest($1::bigint[], $2::text[]) AS t(e, s)
    WHERE o.event_id = t.e AND o.source = t.s AND o.updated_at < $3";

const LOCK_POSITION: &str = "SELECT epoch, top, seq FROM log_position WHERE id = 1 FOR UPDATE";

/// Moves the log position and tells every node listening (`cluster.rs`) that it moved.
const MOVE_POSITION: &str = "
    WITH moved AS (UPDATE log_position SET epoch = $1, top = $2, seq = $3 WHERE id = 1)
    SELECT pg_notify('oddsbus_persisted', $1 || ' ' || $2 || ' ' || $3)";

const UPSERT_DETAILS: &str = "
    INSERT INTO event_details (event_id, source, details, updated_at)
    SELECT e, s, d::jsonb, $4
    FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(e, s, d)
    ON CONFLICT (event_id) DO UPDATE SET
        source = excluded.source, details = excluded.details, updated_at = excluded.updated_at";

/// Commits what the cache changes until `stop`, then what is still pending (once).
pub async fn write_behind(store: Store, cache: OddsCache, stop: CancellationToken) {
    let mut attempts = Attempts::new();
    // The day whose history table the writer made sure of.
    let mut day = None;
    let mut last_write = tokio::time::Instant::now();
    loop {
        // Changes gather for a while after each write unless a full batch waits: a busy
        // broker commits a few large transactions a second, not one per ingest, which would
        // cost the database, and the fan-out on a shared machine, far more per change.
        if !stop.is_cancelled() && store.waiting() < BATCH {
            tokio::select! {
                () = tokio::time::sleep_until(last_write + GATHER) => {}
                () = stop.cancelled() => {}
            }
        }
        let batch = store.take(BATCH);
        if batch.is_empty() {
            store.measure();
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                () = store.shared.queued.notified() => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        last_write = tokio::time::Instant::now();
        let details = details_of(&cache, &batch);
        let written = within(
            WRITE_TIMEOUT,
            write(&store, &batch, &details, &mut day, None),
        )
        .await;
        match written {
            Ok(rows) => {
                attempts.succeeded(&store, rows);
                store.written(batch, false);
                store.measure();
            }
            Err(error) => {
                let backoff = attempts.failed(&store, &error);
                store.written(batch, true);
                store.measure();
                if stop.is_cancelled() {
                    tracing::warn!(
                        event = "store.not_flushed",
                        pending = store.shared.pending.lock().snapshots.len()
                    );
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
    }
}

/// How a writer's writes go: what each committed is counted, health follows the last, and
/// an outage is warned of once, with a backoff that grows while it lasts.
pub(super) struct Attempts {
    outage: Option<Instant>,
    backoff: Duration,
}

impl Attempts {
    pub(super) fn new() -> Attempts {
        Attempts {
            outage: None,
            backoff: Duration::from_millis(100),
        }
    }

    pub(super) fn succeeded(&mut self, store: &Store, rows: Vec<(&'static str, u64)>) {
        let metrics = &store.shared.metrics;
        for (table, count) in rows {
            let counter = metrics.persist_rows.get_or_create(&label("table", table));
            counter.inc_by(count);
        }
        store.shared.healthy.store(true, Ordering::Relaxed);
        if let Some(began) = self.outage.take() {
            let secs = began.elapsed().as_secs_f64();
            tracing::info!(event = "store.recovered", outage_secs = secs);
        }
        self.backoff = Duration::from_millis(100);
    }

    /// Counts a failed write; how long to wait before the next try.
    pub(super) fn failed(&mut self, store: &Store, error: &str) -> Duration {
        store.shared.metrics.persist_failures.inc();
        store.shared.healthy.store(false, Ordering::Relaxed);
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            tracing::warn!(event = "store.unavailable", %error, "odds are kept and written once the database is back");
        }
        let backoff = self.backoff;
        self.backoff = (self.backoff * 2).min(MOST_BACKOFF);
        backoff
    }
}

/// A stored snapshot's JSON, as the cache keeps it.
#[derive(Deserialize)]
struct Stored {
    snapshot_id: i64,
    bookmaker_id: Option<i64>,
    captured_at: String,
    markets: Vec<Market>,
}

#[derive(Deserialize)]
struct Market {
    market_id: String,
    name: String,
    line: Option<f64>,
    outcomes: serde_json::Value,
}

/// The columns of the markets' rows.
#[derive(Default)]
struct Rows {
    event_ids: Vec<i64>,
    sources: Vec<String>,
    market_ids: Vec<String>,
    lines: Vec<String>,
    positions: Vec<i32>,
    names: Vec<String>,
    outcomes: Vec<String>,
    bookmaker_ids: Vec<Option<i64>>,
    captured_at: Vec<String>,
    snapshot_ids: Vec<i64>,
}

impl Rows {
    /// Adds a snapshot's markets; a market named twice keeps its last (a key is written once
    /// per statement).
    fn add(&mut self, event_id: i64, source: &str, stored: Stored) {
        let mut at: HashMap<(String, String), usize> = HashMap::new();
        for (position, market) in stored.markets.into_iter().enumerate() {
            let line = market.line.map(|l| l.to_string()).unwrap_or_default();
            let row = match at.get(&(market.market_id.clone(), line.clone())) {
                Some(&row) => row,
                None => {
                    at.insert(
                        (market.market_id.clone(), line.clone()),
                        self.event_ids.len(),
                    );
                    self.event_ids.push(event_id);
                    self.sources.push(source.to_owned());
                    self.market_ids.push(market.market_id);
                    self.lines.push(line);
                    self.positions.push(0);
                    self.names.push(String::new());
                    self.outcomes.push(String::new());
                    self.bookmaker_ids.push(stored.bookmaker_id);
                    self.captured_at.push(stored.captured_at.clone());
                    self.snapshot_ids.push(stored.snapshot_id);
                    self.event_ids.len() - 1
                }
            };
            self.positions[row] = i32::try_from(position).unwrap_or(i32::MAX);
            self.names[row] = market.name;
            self.outcomes[row] = market.outcomes.to_string();
        }
    }
}

/// An event's details to write: the event, the source that gave them, their JSON.
pub(super) type DetailsRow = (u64, Arc<str>, Bytes);

/// The details `cache` holds now for the events of `batch` (the latest given), read under
/// one lock; an event named by several sources is written once, as the last one's.
fn details_of(cache: &OddsCache, batch: &[Change]) -> Vec<DetailsRow> {
    let sources: HashMap<u64, &Arc<str>> = batch
        .iter()
        .map(|((id, source), _)| (*id, source))
        .collect();
    let ids: Vec<u64> = sources.keys().copied().collect();
    let events = cache.many_event_odds(&ids);
    events
        .into_iter()
        .filter_map(|odds| {
            let source = sources.get(&odds.event_id)?;
            Some((odds.event_id, (*source).clone(), odds.details?.json.clone()))
        })
        .collect()
}

/// Where a cluster's writer finds the log position (`expected`) and moves it (`next`), in
/// the same transaction as the rows.
pub(super) struct Fence<'a> {
    pub expected: &'a Position,
    pub next: &'a Position,
}

/// Writes one batch in one transaction, first creating the history table of today unless
/// `day` says it exists, and moving the log position past it when `fence` says where;
/// returns the rows written per table.
pub(super) async fn write(
    store: &Store,
    batch: &[Change],
    details: &[DetailsRow],
    day: &mut Option<u64>,
    fence: Option<Fence<'_>>,
) -> Result<Vec<(&'static str, u64)>, String> {
    let mut rows = Rows::default();
    let (mut snapshot_events, mut snapshot_sources) = (Vec::new(), Vec::new());
    for ((event_id, source), json) in batch {
        let event_id = i64::try_from(*event_id).map_err(|e| e.to_string())?;
        let stored: Stored = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        rows.add(event_id, source, stored);
        snapshot_events.push(event_id);
        snapshot_sources.push(source.to_string());
    }
    let mut detail_ids = Vec::with_capacity(details.len());
    let mut detail_sources = Vec::with_capacity(details.len());
    let mut detail_json = Vec::with_capacity(details.len());
    for (event_id, source, json) in details {
        detail_ids.push(i64::try_from(*event_id).map_err(|e| e.to_string())?);
        detail_sources.push(source.to_string());
        detail_json.push(String::from_utf8_lossy(json).into_owned());
    }

    let mut client = store.shared.pool.get().await.map_err(|e| e.to_string())?;
    let recorded_at = SystemTime::now();
    let today = retention::day_of(recorded_at);
    if *day != Some(today) {
        retention::create_day(&client, today).await?;
        *day = Some(today);
    }
    let transaction = client.transaction().await.map_err(|e| e.to_string())?;
    if let Some(fence) = &fence {
        // Locked first: a second writer waits here, then finds the position moved.
        let row = transaction
            .query_one(LOCK_POSITION, &[])
            .await
            .map_err(|e| e.to_string())?;
        let (epoch, top, seq): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let expected = fence.expected;
        if (epoch.as_str(), top, seq)
            != (&*expected.epoch, expected.top as i64, expected.seq as i64)
        {
            return Err(format!(
                "the log position moved to {epoch} {top}-{seq} under this writer (another node \
                 writes)"
            ));
        }
    }
    let mut counts = [0; 3];
    if !rows.event_ids.is_empty() {
        let write_markets = transaction
            .prepare_cached(WRITE_MARKETS)
            .await
            .map_err(|e| e.to_string())?;
        let written = transaction
            .query_one(
                &write_markets,
                &[
                    &rows.event_ids,
                    &rows.sources,
                    &rows.market_ids,
                    &rows.lines,
                    &rows.positions,
                    &rows.names,
                    &rows.outcomes,
                    &rows.bookmaker_ids,
                    &rows.captured_at,
                    &rows.snapshot_ids,
                    &recorded_at,
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
        for (column, count) in counts.iter_mut().enumerate() {
            let counted = written.try_get::<_, i64>(column).unwrap_or(0);
            *count = u64::try_from(counted).unwrap_or(0);
        }
        let gone = [&snapshot_events as &Param, &snapshot_sources, &recorded_at];
        execute(&transaction, DELETE_GONE_MARKETS, &gone).await?;
    }
    let mut details = 0;
    if !detail_ids.is_empty() {
        let params = [
            &detail_ids as &Param,
            &detail_sources,
            &detail_json,
            &recorded_at,
        ];
        details = execute(&transaction, UPSERT_DETAILS, &params).await?;
    }
    if let Some(Fence { next, .. }) = fence {
        let (epoch, top, seq) = (next.epoch.to_string(), next.top as i64, next.seq as i64);
        let moved = [&epoch as &Param, &top, &seq];
        execute(&transaction, MOVE_POSITION, &moved).await?;
    }
    transaction.commit().await.map_err(|e| e.to_string())?;
    Ok(vec![
        ("odds_current", counts[0]),
        ("odds_history", counts[1]),
        ("odds_opening", counts[2]),
        ("event_details", details),
    ])
}

type Param = dyn tokio_postgres::types::ToSql + Sync;

/// Runs `statement` (prepared once per connection) in `transaction`; the rows it touched.
async fn execute(
    transaction: &deadpool_postgres::Transaction<'_>,
    statement: &str,
    params: &[&Param],
) -> Result<u64, String> {
    let prepared = transaction
        .prepare_cached(statement)
        .await
        .map_err(|e| e.to_string())?;
    transaction
        .execute(&prepared, params)
        .await
        .map_err(|e| e.to_string())
}
