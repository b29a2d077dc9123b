//! The store on a cluster member. The cluster's log in Redis is what every node's cache
//! follows, and it is what the database follows too: one node at a time, holding a lease in
//! Redis, commits the log's changes entry by entry, in order, moving the log position
//! (`log_position`) in the same transaction as the rows. A new holder (the last one died, or
//! gave the lease back) resumes exactly there: every change is written once, none twice,
//! and no history step is lost while the log still holds it.
//!
//! When the position is not in the log any more, because entries after it left the log (a
//! long outage) or its epoch ended (Redis restarted empty), the holder first puts the
//! database's odds back into the cluster (they are older than anything the cluster holds, so
//! only what Redis lost comes back), then writes the whole of its cache, which holds the
//! cluster's state, and resumes from the entry that state stands at.
//!
//! Every node listens for the position moving (`NOTIFY`), which is how an ingest with
//! `?wait=persisted` on any node learns its entry was committed.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::write::{write, Attempts, DetailsRow, Fence};
use super::{load, within, Change, Store, CONNECT_TIMEOUT};
use crate::cache::OddsCache;
use crate::engine::{Engine, LogEntry, Position, Read, SharedLog};

/// Most snapshots committed in one transaction (an entry is never split, so a larger one
/// is written whole).
const BATCH: usize = 1_000;

/// Entries read from the log at once.
const PAGE: usize = 256;

/// Events of the cache written per transaction when the whole of it is.
const COPY_EVENTS: usize = 500;

/// How long a new entry waits for others to join its write.
const GATHER: Duration = Duration::from_millis(20);

/// How often the holder renews the lease, and a node that does not hold it asks for it.
const RENEW: Duration = Duration::from_millis(1500);

/// Longest one transaction may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits the cluster's log while this node holds the writer's lease, until `stop`; then
/// gives the lease back so that another node takes over at once.
pub async fn write_log(
    store: Store,
    engine: Engine,
    log: SharedLog,
    cache: OddsCache,
    ttl: Duration,
    stop: CancellationToken,
) {
    let mut writer = LogWriter {
        store,
        engine,
        log,
        cache,
        ttl,
        day: None,
        attempts: Attempts::new(),
        oldest_unwritten: None,
    };
    while !stop.is_cancelled() {
        let wait = match writer.hold_and_write(&stop).await {
            Ok(()) => RENEW,
            Err(error) => writer.attempts.failed(&writer.store, &error),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {}
        }
    }
    writer.log.release().await;
}

struct LogWriter {
    store: Store,
    engine: Engine,
    log: SharedLog,
    cache: OddsCache,
    /// How long the cluster keeps an event nobody updates (`--event-ttl`): what a refill
    /// puts back.
    ttl: Duration,
    /// The day whose history table exists.
    day: Option<u64>,
    attempts: Attempts,
    /// When the oldest entry not yet written was appended (ms since 1970, Redis's clock);
    /// none when all are.
    oldest_unwritten: Option<u64>,
}

impl LogWriter {
    /// Writes while this node holds the lease, renewing it meanwhile: `Ok` once it does not
    /// (or never did), or `stop`; `Err` when Redis or the database failed.
    async fn hold_and_write(&mut self, stop: &CancellationToken) -> Result<(), String> {
        // A node that has not joined the log yet has no state to write.
        if self.log.applied().is_none() || !self.log.hold().await? {
            return Ok(());
        }
        let log = self.log.clone();
        let renew = async move {
            loop {
                tokio::time::sleep(RENEW).await;
                if !log.hold().await? {
                    tracing::info!(event = "store.lease_lost");
                    return Ok(());
                }
            }
        };
        // Whatever the writer was doing when the lease is lost is dropped: a transaction
        // not committed is rolled back, and one that was is the new holder's starting point.
        let store = self.store.clone();
        let writes_alerts = &store.shared.writes_alerts;
        writes_alerts.store(true, Ordering::Relaxed);
        let held = tokio::select! {
            written = self.write(stop) => written,
            renewed = renew => renewed,
        };
        writes_alerts.store(false, Ordering::Relaxed);
        held
    }

    /// Writes the log from the position the database holds, until `stop`.
    async fn write(&mut self, stop: &CancellationToken) -> Result<(), String> {
        let mut position = self.position().await?;
        tracing::info!(event = "store.writing_log", epoch = %position.epoch, top = position.top);
        while !stop.is_cancelled() {
            let entries = match self.log.read(&position, PAGE).await? {
                Read::Gone(epoch) if self.log.applied().map(|a| a.epoch) != epoch => {
                    // This node's cache does not follow that epoch yet.
                    tokio::time::sleep(GATHER).await;
                    continue;
                }
                Read::Gone(_) => {
                    position = self.rebuild(&position).await?;
                    continue;
                }
                Read::Entries(entries) => entries,
            };
            self.oldest_unwritten = entries.first().map(|entry| entry.appended_ms);
            self.measure(&position);
            if entries.is_empty() {
                tokio::select! {
                    () = self.log.applied_after(&position) => {}
                    () = stop.cancelled() => return Ok(()),
                }
                tokio::time::sleep(GATHER).await;
                continue;
            }
            let (next, batch, details, superseded) = take(&entries);
            let fence = Fence {
                expected: &position,
                next: &next,
            };
            let store = &self.store;
            let written = within(
                WRITE_TIMEOUT,
                write(store, &batch, &details, &mut self.day, Some(fence)),
            )
            .await?;
            store.shared.metrics.persist_dropped.inc_by(superseded);
            self.attempts.succeeded(store, written);
            store.persisted_to(next.clone());
            position = next;
        }
        Ok(())
    }

    /// The log position the database holds.
    async fn position(&self) -> Result<Position, String> {
        let read = async {
            let client = self
                .store
                .shared
                .pool
                .get()
                .await
                .map_err(|e| e.to_string())?;
            read_position(&client).await.map_err(|e| e.to_string())
        };
        within(WRITE_TIMEOUT, read).await
    }

    /// `position` is not in the log any more: puts the database's odds back into the
    /// cluster when its epoch ended, then writes the whole cache; returns the position the
    /// cache stood at, now the database's.
    async fn rebuild(&mut self, position: &Position) -> Result<Position, String> {
        let Some(applied) = self.log.applied() else {
            return Err("this node has not joined the cluster's log yet".into());
        };
        if applied.epoch != position.epoch {
            let pool = &self.store.shared.pool;
            let sent = load::refill(pool, &self.engine, self.ttl).await?;
            tracing::info!(event = "store.refilled", epoch = %applied.epoch, snapshots = sent);
        } else {
            let lost = applied.top.saturating_sub(position.top);
            self.store.shared.metrics.persist_dropped.inc_by(lost);
            tracing::warn!(event = "store.fell_behind", top = position.top, lost, "entries left the log before they were written; writing the whole state (their history steps are lost)");
        }
        // What the cache holds now is the state at least as of this entry.
        let Some(standing) = self.log.applied() else {
            return Err("this node left the cluster's log".into());
        };
        self.oldest_unwritten.get_or_insert_with(now_ms);
        let mut after = None;
        loop {
            self.measure(position);
            let (page, more) = self.cache.events_page(after, COPY_EVENTS);
            let ids: Vec<u64> = page.iter().map(|event| event.event_id).collect();
            after = ids.last().copied();
            let (mut batch, mut details) = (Vec::new(), Vec::new());
            for odds in self.cache.many_event_odds(&ids) {
                for (source, stored) in &odds.sources {
                    batch.push(((odds.event_id, source.clone()), stored.json.clone()));
                }
                if let (Some(held), Some((source, _))) = (&odds.details, odds.sources.first()) {
                    details.push((odds.event_id, source.clone(), held.json.clone()));
                }
            }
            let last = !more;
            let next = if last { &standing } else { position };
            let fence = Fence {
                expected: position,
                next,
            };
            let store = &self.store;
            let written = within(
                WRITE_TIMEOUT,
                write(store, &batch, &details, &mut self.day, Some(fence)),
            )
            .await?;
            self.attempts.succeeded(store, written);
            if last {
                break;
            }
        }
        self.store.persisted_to(standing.clone());
        Ok(standing)
    }

    /// The queue's gauges: offsets this node applied that are not written yet (all of its
    /// epoch's, when the database's position is of another), and the age of the oldest
    /// entry not written.
    fn measure(&self, position: &Position) {
        let metrics = &self.store.shared.metrics;
        let behind = self.log.applied().map_or(0, |applied| {
            let written = if applied.epoch == position.epoch {
                position.top
            } else {
                0
            };
            applied.top.saturating_sub(written)
        });
        metrics.persist_queue_depth.set(behind as i64);
        let lag = self
            .oldest_unwritten
            .map_or(0, |at| now_ms().saturating_sub(at));
        metrics.persist_lag_seconds.set(lag as f64 / 1000.0);
    }
}

/// The entries to write next, from the first: as many as hold at most [`BATCH`] snapshots
/// and change no (event, source) twice, so that each change is a history step of its own.
/// Returns the position after them, their changes and details, and how many changes a later
/// change in the same entry replaced.
fn take(entries: &[LogEntry]) -> (Position, Vec<Change>, Vec<DetailsRow>, u64) {
    let mut at: HashMap<(u64, Arc<str>), usize> = HashMap::new();
    let mut batch: Vec<Change> = Vec::new();
    let mut details: HashMap<u64, (Arc<str>, Bytes)> = HashMap::new();
    let mut next = entries[0].position.clone();
    let mut superseded = 0;
    for entry in entries {
        if let Some(odds) = &entry.odds {
            let repeats = odds
                .changes
                .iter()
                .any(|(id, _)| at.contains_key(&(*id, odds.source.clone())));
            if !batch.is_empty() && (repeats || batch.len() + odds.changes.len() > BATCH) {
                break;
            }
            for (event_id, json) in &odds.changes {
                let key = (*event_id, odds.source.clone());
                match at.get(&key) {
                    Some(&row) => {
                        batch[row].1 = json.clone();
                        superseded += 1;
                    }
                    None => {
                        at.insert(key.clone(), batch.len());
                        batch.push((key, json.clone()));
                    }
                }
            }
            for (event_id, held) in &odds.details {
                details.insert(*event_id, (odds.source.clone(), held.json.clone()));
            }
        }
        next = entry.position.clone();
    }
    let details = details
        .into_iter()
        .map(|(id, (source, json))| (id, source, json))
        .collect();
    (next, batch, details, superseded)
}

/// Milliseconds since 1970.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Keeps `store`'s view of the log position current on this node, from the database's
/// notifications, until `stop`; reconnects with backoff when the connection fails.
pub async fn listen(store: Store, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        if let Err(error) = listen_once(&store, &stop, &mut backoff).await {
            tracing::warn!(event = "store.listen_failed", %error, retry_in_ms = backoff.as_millis() as u64);
            store.shared.healthy.store(false, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

async fn listen_once(
    store: &Store,
    stop: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), String> {
    let connect = store.shared.config.connect(NoTls);
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    // The client's queries go through `connection`, which the loop below drives.
    let setup = async {
        client.batch_execute("LISTEN oddsbus_persisted").await?;
        read_position(&client).await
    };
    tokio::pin!(setup);
    let mut set_up = false;
    loop {
        tokio::select! {
            result = &mut setup, if !set_up => {
                store.persisted_to(result.map_err(|e| e.to_string())?);
                store.shared.healthy.store(true, Ordering::Relaxed);
                *backoff = Duration::from_millis(100);
                set_up = true;
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    let mut parts = note.payload().split(' ');
                    let (epoch, top, seq) = (parts.next(), parts.next(), parts.next());
                    let number = |part: Option<&str>| part.and_then(|p| p.parse::<i64>().ok());
                    if let (Some(epoch), Some(top), Some(seq)) = (epoch, number(top), number(seq)) {
                        store.persisted_to(position(epoch, top, seq));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the connection closed".into()),
            },
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// The log position the database holds.
async fn read_position(client: &tokio_postgres::Client) -> Result<Position, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT epoch, top, seq FROM log_position WHERE id = 1", &[])
        .await?;
    Ok(position(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

fn position(epoch: &str, top: i64, seq: i64) -> Position {
    Position {
        epoch: Arc::from(epoch),
        top: top as u64,
        seq: seq as u64,
    }
}
