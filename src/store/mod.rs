//! Odds that survive a restart: a PostgreSQL store behind the cache (`--database-url`).
//!
//! The cache stays what acknowledges an ingest. Its update callback only queues each changed
//! snapshot, by (event, source), so a later change of the same key replaces the pending one:
//! however long the database is away, what waits is bounded by the keys the cache holds, and
//! nothing of the current state is dropped. One writer task commits what is pending in
//! batches (`write.rs`), retrying with backoff while the database fails. At start, before the
//! node serves, the schema is migrated (`migrations/`, embedded) and the cache is loaded
//! back from the current odds (`load.rs`).

mod load;
mod write;

pub use self::write::write_behind;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_postgres::NoTls;

use crate::cache::OddsCache;
use crate::metrics::Metrics;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long a request waits for a connection, and a connection to be made, before the
/// database counts as unreachable: a saturated or dead database never blocks for longer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections kept: the writer's, the loader's, and room for reads to come.
const POOL_SIZE: usize = 4;

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
    /// Whether the last write (or the start) reached the database.
    healthy: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A changed snapshot waiting for the writer: (event, source) and its JSON.
type Change = ((u64, Arc<str>), Bytes);

#[derive(Default)]
struct Pending {
    snapshots: HashMap<(u64, Arc<str>), Bytes>,
    /// When the oldest change not yet committed was queued.
    since: Option<Instant>,
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
    /// A store on the database at `url` (checked by `--database-url`); connects when used.
    pub fn new(url: &str, metrics: Arc<Metrics>) -> Result<Store, String> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("--database-url: {e}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
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
                healthy: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// Migrates the schema, then loads the current odds updated within `ttl` into `cache`;
    /// returns how many snapshots it loaded. `Err` (the node must not serve) when the
    /// database cannot be reached or its schema is newer than this binary.
    pub async fn open(&self, cache: &OddsCache, ttl: Duration) -> Result<usize, String> {
        let mut client = self
            .shared
            .pool
            .get()
            .await
            .map_err(|e| format!("--database-url: the database cannot be reached ({e})"))?;
        let client: &mut tokio_postgres::Client = &mut client;
        embedded::migrations::runner()
            .set_abort_missing(true)
            .run_async(client)
            .await
            .map_err(|e| {
                format!(
                    "--database-url: the schema cannot be migrated ({e}); a schema newer \
                     than this binary needs a newer oddsbus"
                )
            })?;
        let loaded = load::current(client, cache, ttl).await?;
        self.shared.healthy.store(true, Ordering::Relaxed);
        Ok(loaded)
    }

    /// Queues every change `cache` makes from now on for the writer.
    pub fn keep(&self, cache: &OddsCache) {
        let shared = self.shared.clone();
        cache.on_update(move |changes| {
            let source: Arc<str> = Arc::from(changes.source);
            let mut pending = shared.pending.lock();
            for (event_id, json) in changes.event_ids.iter().zip(changes.snapshots) {
                pending
                    .snapshots
                    .insert((*event_id, source.clone()), json.clone());
            }
            pending.since.get_or_insert_with(Instant::now);
            let depth = pending.snapshots.len() as i64;
            drop(pending);
            shared.metrics.persist_queue_depth.set(depth);
            shared.queued.notify_one();
        });
    }

    /// Takes up to `most` pending snapshots, and when the oldest of them was queued.
    fn take(&self, most: usize) -> (Vec<Change>, Option<Instant>) {
        let mut pending = self.shared.pending.lock();
        let keys: Vec<(u64, Arc<str>)> = pending.snapshots.keys().take(most).cloned().collect();
        let batch = keys
            .into_iter()
            .filter_map(|key| pending.snapshots.remove_entry(&key))
            .collect();
        let since = pending.since;
        if pending.snapshots.is_empty() {
            pending.since = None;
        }
        (batch, since)
    }

    /// Puts back what a failed write took, unless a newer change of the same key came since.
    fn put_back(&self, batch: Vec<Change>, since: Option<Instant>) {
        let mut pending = self.shared.pending.lock();
        for (key, json) in batch {
            pending.snapshots.entry(key).or_insert(json);
        }
        pending.since = match (pending.since, since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Sets the queue's depth and lag gauges.
    fn measure(&self) {
        let pending = self.shared.pending.lock();
        let metrics = &self.shared.metrics;
        metrics
            .persist_queue_depth
            .set(pending.snapshots.len() as i64);
        let lag = pending
            .since
            .map_or(0.0, |since| since.elapsed().as_secs_f64());
        metrics.persist_lag_seconds.set(lag);
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
