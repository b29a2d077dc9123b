//! Odds that survive a restart: a PostgreSQL store behind the cache (`--database-url`).
//!
//! The cache stays what acknowledges an ingest. On a single node its update callback only
//! queues each changed snapshot, by (event, source), so a later change of the same key
//! replaces the pending one: however long the database is away, what waits is bounded by the
//! keys the cache holds, and nothing of the current state is dropped. One writer task commits
//! what is pending in batches (`write.rs`), with a history row for each market whose prices
//! changed, retrying with backoff while the database fails. On a cluster member the writer
//! follows the cluster's log instead, one node at a time (`cluster.rs`). At start, before the
//! node serves, the schema is migrated (`migrations/`, embedded) and a single node's cache
//! loaded back from the current odds (`load.rs`); the retention (`retention.rs`) is applied
//! once it serves, then hourly. Reads of what the cache does not hold come from here too:
//! events (`load.rs`) and the price history over days (`history.rs`). The alerts the analysis
//! raises are kept over the retention too (`alerts.rs`).

mod alerts;
mod cluster;
mod history;
mod load;
mod retention;
mod write;

use self::write::write_behind;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{EventOdds, OddsCache};
use crate::engine::{Engine, Position};
use crate::metrics::Metrics;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long a request waits for a connection, and a connection to be made, before the
/// database counts as unreachable: a saturated or dead database never blocks for longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The advisory locks that keep the nodes of a cluster from changing the schema, or
/// applying the retention, at the same time.
const SCHEMA_LOCK: i64 = 0x6f64_6473_0001;
const RETENTION_LOCK: i64 = 0x6f64_6473_0002;

/// Connections kept: the writer's, and room for reads of events the cache does not hold.
const POOL_SIZE: usize = 4;

/// Longest a read from the database may take: one that answers nothing in time (frozen, or
/// packets lost) costs a request this long, never more.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an event the database does not hold either is answered 404 without asking it
/// again, so that a flood of unknown ids does not reach the database; and how many such ids
/// are remembered.
const UNKNOWN_FOR: Duration = Duration::from_secs(10);
const UNKNOWN_IDS: usize = 100_000;

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// Changed snapshots not yet committed, the latest per (event, source).
    pending: Mutex<Pending>,
    /// Wakes the writer when something is queued.
    queued: Notify,
    /// Counts the writer's attempts: whoever waits for a commit looks again at each.
    attempts: watch::Sender<u64>,
    /// Whether the last write (or the start) reached the database.
    healthy: AtomicBool,
    /// Events the database did not hold when last asked, and when.
    unknown: Mutex<lru::LruCache<u64, Instant>>,
    /// Days of price history kept (`--retention`).
    retention: u32,
    /// Where the database is, for the connection that listens for the log position.
    config: tokio_postgres::Config,
    /// On a cluster member, how far the cluster's log is committed, as last heard.
    position: watch::Sender<Option<Position>>,
    /// Alerts raised and not yet written.
    alerts: Mutex<alerts::Waiting>,
    /// Wakes the alerts' writer.
    alerts_queued: Notify,
    /// Whether this node keeps the alerts it raises: a single node does, and in a cluster
    /// the node that holds the writer's lease.
    writes_alerts: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A changed snapshot waiting for the writer: (event, source) and its JSON.
type Change = ((u64, Arc<str>), Bytes);

/// An (event, source) whose change waits, and when its first change not yet written was
/// queued.
type Waiting = ((u64, Arc<str>), Instant);

#[derive(Default)]
struct Pending {
    snapshots: HashMap<(u64, Arc<str>), Bytes>,
    /// The keys of `snapshots` in the order they were first queued: the writer takes the
    /// oldest first, so none waits behind a stream of newer ones.
    order: VecDeque<Waiting>,
    /// The keys of the batch being written, and when the oldest of them was queued.
    writing: HashSet<(u64, Arc<str>)>,
    writing_since: Option<Instant>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pending", &self.shared.pending.lock().snapshots.len())
            .field("healthy", &self.shared.healthy.load(Ordering::Relaxed))
            .finish()
    }
}

impl Store {
    /// A store on the database at `url` (checked by `--database-url`) that keeps `retention`
    /// days of price history; connects when used.
    pub fn new(url: &str, retention: u32, metrics: Arc<Metrics>) -> Result<Store, String> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("--database-url: {e}"))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection whose request timed out comes back: it is checked (one round
                // trip) before it is used again, and dropped if it does not answer.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let timeouts = Timeouts {
            wait: Some(CONNECT_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(CONNECT_TIMEOUT),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .timeouts(timeouts)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| format!("--database-url: {e}"))?;
        Ok(Store {
            shared: Arc::new(Shared {
                pool,
                pending: Mutex::default(),
                queued: Notify::new(),
                attempts: watch::channel(0).0,
                healthy: AtomicBool::new(false),
                unknown: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(UNKNOWN_IDS).unwrap_or(std::num::NonZeroUsize::MIN),
                )),
                retention,
                config,
                position: watch::channel(None).0,
                alerts: Mutex::default(),
                alerts_queued: Notify::new(),
                writes_alerts: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// Opens the store and starts its tasks on `tasks`; `Err` (the node must not serve) when
    /// the database cannot be reached or its schema is newer than this binary.
    ///
    /// On a single node the cache is loaded from the database (the current odds updated
    /// within `ttl`) and the writer is fed by the cache's callback. On a cluster member the
    /// cache is the cluster's, from Redis; the writer follows the cluster's log
    /// (`cluster.rs`), and the database refills Redis when Redis lost it. Either way the
    /// alerts queued by [`Store::keep_alerts`] are written (`alerts.rs`).
    pub async fn start(
        &self,
        engine: &Engine,
        cache: &OddsCache,
        ttl: Duration,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let log = engine.shared_log();
        self.open(cache, ttl, log.is_none()).await?;
        tasks.spawn(alerts::write_alerts(self.clone(), stop.clone()));
        match log {
            Some(log) => {
                let (store, cache) = (self.clone(), cache.clone());
                let writer =
                    cluster::write_log(store, engine.clone(), log, cache, ttl, stop.clone());
                tasks.spawn(writer);
                tasks.spawn(cluster::listen(self.clone(), shutdown.clone()));
            }
            None => {
                self.shared.writes_alerts.store(true, Ordering::Relaxed);
                self.keep(cache);
                // Writes until in-flight requests are done, then what is still pending.
                tasks.spawn(write_behind(self.clone(), cache.clone(), stop.clone()));
            }
        }
        tasks.spawn(retention::keep_applying(self.clone(), shutdown.clone()));
        Ok(())
    }

    /// Migrates the schema and creates today's history table, then, when `warm`, loads the
    /// current odds updated within `ttl` into `cache`.
    async fn open(&self, cache: &OddsCache, ttl: Duration, warm: bool) -> Result<(), String> {
        let mut client = self
            .shared
            .pool
            .get()
            .await
            .map_err(|e| format!("--database-url: the database cannot be reached ({e})"))?;
        let client: &mut tokio_postgres::Client = &mut client;
        // Nodes of a cluster starting together migrate one after another.
        let lock = format!("SELECT pg_advisory_lock({SCHEMA_LOCK})");
        client
            .batch_execute(&lock)
            .await
            .map_err(|e| format!("--database-url: {e}"))?;
        let migrated = embedded::migrations::runner()
            .set_abort_missing(true)
            .run_async(client)
            .await;
        let unlock = format!("SELECT pg_advisory_unlock({SCHEMA_LOCK})");
        client
            .batch_execute(&unlock)
            .await
            .map_err(|e| format!("--database-url: {e}"))?;
        migrated.map_err(|e| {
            format!(
                "--database-url: the schema cannot be migrated ({e}); a schema newer than \
                 this binary needs a newer oddsbus"
            )
        })?;
        let today = retention::day_of(std::time::SystemTime::now());
        retention::create_day(client, today).await?;
        if warm {
            let loaded = load::current(&self.shared.pool, cache, ttl).await?;
            tracing::info!(
                event = "store.loaded",
                snapshots = loaded,
                events = cache.len()
            );
            // A cluster that finds this position gone puts these odds back into Redis: what
            // this node writes from now on is not in any cluster's log.
            let forget = "UPDATE log_position SET epoch = '' WHERE epoch <> ''";
            if let Err(error) = client.batch_execute(forget).await {
                return Err(format!("--database-url: {error}"));
            }
        }
        // A table filled faster than autovacuum looks has no statistics yet, and then the
        // planner reads a bulk read by ids as a scan of the whole table (100 ms at 900,000
        // rows) until it does.
        let unplanned = client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'odds_current')",
                &[],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0));
        if unplanned.unwrap_or(false) {
            let analyzed = client
                .batch_execute("ANALYZE odds_current, event_details")
                .await;
            if let Err(error) = analyzed {
                tracing::warn!(event = "store.analyze_failed", %error);
            }
        }
        self.shared.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Queues every change `cache` makes from now on for the writer.
    pub fn keep(&self, cache: &OddsCache) {
        let shared = self.shared.clone();
        cache.on_update(move |changes| {
            let (source, now): (Arc<str>, _) = (Arc::from(changes.source), Instant::now());
            let mut pending = shared.pending.lock();
            let mut replaced = 0;
            for (event_id, json) in changes.event_ids.iter().zip(changes.snapshots) {
                let key = (*event_id, source.clone());
                match pending.snapshots.insert(key.clone(), json.clone()) {
                    Some(_) => replaced += 1,
                    None => pending.order.push_back((key, now)),
                }
            }
            let depth = pending.snapshots.len() as i64;
            drop(pending);
            shared.metrics.persist_dropped.inc_by(replaced);
            shared.metrics.persist_queue_depth.set(depth);
            shared.queued.notify_one();
        });
    }

    /// How many changed snapshots wait for the writer.
    fn waiting(&self) -> usize {
        self.shared.pending.lock().snapshots.len()
    }

    /// Takes up to `most` pending snapshots, the oldest first.
    fn take(&self, most: usize) -> Vec<Change> {
        let mut pending = self.shared.pending.lock();
        let mut batch = Vec::with_capacity(most.min(pending.order.len()));
        let mut taken = Vec::with_capacity(batch.capacity());
        while batch.len() < most {
            let Some((key, at)) = pending.order.pop_front() else {
                break;
            };
            if let Some(json) = pending.snapshots.remove(&key) {
                batch.push((key.clone(), json));
                taken.push((key, at));
            }
        }
        pending.writing_since = taken.first().map(|(_, at)| *at);
        pending.writing = taken.iter().map(|(key, _)| key.clone()).collect();
        batch
    }

    /// Ends a write: what it took is committed or, when it `failed`, put back in front (a
    /// key changed again meanwhile keeps the newer change); whoever waits looks again.
    fn written(&self, batch: Vec<Change>, failed: bool) {
        let mut pending = self.shared.pending.lock();
        let since = pending.writing_since.take().unwrap_or_else(Instant::now);
        pending.writing.clear();
        let mut replaced = 0;
        if failed {
            for (key, json) in batch.into_iter().rev() {
                if pending.snapshots.contains_key(&key) {
                    replaced += 1;
                } else {
                    pending.snapshots.insert(key.clone(), json);
                    pending.order.push_front((key, since));
                }
            }
        }
        drop(pending);
        self.shared.metrics.persist_dropped.inc_by(replaced);
        self.shared.attempts.send_modify(|n| *n += 1);
    }

    /// Waits until an ingest is committed, at most `timeout`; whether it was. On a cluster
    /// member, until the log is committed past its `position`; on a single node, until each
    /// of its `keys` (event, source) is (its change, or a newer one).
    pub async fn persisted(
        &self,
        keys: &[(u64, Arc<str>)],
        position: Option<&Position>,
        timeout: Duration,
    ) -> bool {
        if let Some(position) = position {
            let mut committed = self.shared.position.subscribe();
            let reached =
                committed.wait_for(|at| at.as_ref().is_some_and(|at| at.reached(position)));
            return matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)));
        }
        let mut attempts = self.shared.attempts.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let waiting = {
                let pending = self.shared.pending.lock();
                keys.iter()
                    .any(|key| pending.snapshots.contains_key(key) || pending.writing.contains(key))
            };
            if !waiting {
                return true;
            }
            // The sender lives as long as the store, which `self` holds.
            if tokio::time::timeout_at(deadline, attempts.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Records that the cluster's log is committed up to `position`.
    fn persisted_to(&self, position: Position) {
        self.shared.position.send_if_modified(|held| {
            let newer = held.as_ref() != Some(&position);
            *held = Some(position);
            newer
        });
    }

    /// Sets the queue's depth and lag gauges.
    fn measure(&self) {
        let pending = self.shared.pending.lock();
        let metrics = &self.shared.metrics;
        metrics
            .persist_queue_depth
            .set(pending.snapshots.len() as i64);
        let oldest = pending
            .writing_since
            .or(pending.order.front().map(|(_, at)| *at));
        let lag = oldest.map_or(0.0, |at| at.elapsed().as_secs_f64());
        metrics.persist_lag_seconds.set(lag);
    }

    /// The odds of events the cache does not hold, as the database has them, each in the
    /// shape of a cache read; those it has none of are left out, and remembered for a while.
    pub async fn events(&self, event_ids: &[u64]) -> Result<Vec<EventOdds>, String> {
        let unknown = &self.shared.unknown;
        let asked: Vec<u64> = {
            let mut unknown = unknown.lock();
            let recent = |at: &Instant| at.elapsed() < UNKNOWN_FOR;
            let ids = event_ids.iter().copied();
            ids.filter(|id| !unknown.get(id).is_some_and(recent))
                .collect()
        };
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        let read = async {
            let client = self.shared.pool.get().await.map_err(|e| e.to_string())?;
            load::events(&client, &asked).await
        };
        let found = within(READ_TIMEOUT, read).await?;
        let mut unknown = unknown.lock();
        for id in asked {
            if !found.iter().any(|event| event.event_id == id) {
                unknown.put(id, Instant::now());
            }
        }
        Ok(found)
    }

    /// `"ok"`, or `"degraded"` while the database fails or is slow to answer.
    pub fn health(&self) -> &'static str {
        if self.shared.healthy.load(Ordering::Relaxed) {
            "ok"
        } else {
            "degraded"
        }
    }
}

/// `work`, unless it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("the database did not answer within {limit:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{intern, Market, Outcome, Snapshot};
    use crate::protocol::Timestamp;

    fn snapshot(price: f64) -> Snapshot {
        let outcome = Outcome {
            name: intern("1"),
            odds: price,
        };
        Snapshot {
            bookmaker_id: None,
            captured_at: Timestamp::now(),
            markets: vec![Market {
                market_id: intern("1x2"),
                name: intern("1X2"),
                line: None,
                outcomes: vec![outcome],
            }],
            event: None,
        }
    }

    /// However many changes keep coming, the writer takes the oldest first, a key changed
    /// again keeps its place, and a failed write goes back in front.
    #[test]
    fn the_oldest_changes_are_written_first() {
        let url = "postgres://postgres@127.0.0.1:1/none"; // never connected to
        let store = Store::new(url, 14, Arc::new(Metrics::new())).unwrap();
        let cache = OddsCache::new();
        store.keep(&cache);
        let ids = |batch: &[Change]| batch.iter().map(|((id, _), _)| *id).collect::<Vec<_>>();
        cache.put_batch("betpawa", vec![(1, snapshot(2.0)), (2, snapshot(2.0))]);
        cache.put_batch("betpawa", vec![(3, snapshot(2.0)), (1, snapshot(2.5))]);
        let first = store.take(2);
        assert_eq!(ids(&first), [1, 2]);
        store.written(first, true);
        cache.put_batch("betpawa", vec![(4, snapshot(2.0))]);
        assert_eq!(ids(&store.take(10)), [1, 2, 3, 4]);
    }
}
