//! The ConnectionManager: each topic's channel and log, and the registry of live
//! connections.
//!
//! Each topic is one `tokio::sync::broadcast` channel of encoded messages and one
//! [`History`]: every message takes an offset of the topic's log (within the offsets of the
//! changes it covers, `crate::dispatcher`) and is kept in its history, encoded once and shared
//! by every connection. Publishing (append, then send) and
//! joining a topic (read the latest offset, then open a receiver) happen under the topic's
//! lock, so a subscriber's position and the first message it receives join exactly: it gets
//! every message after its position and none before. The [`Subscriber`] (`subscriber.rs`)
//! is one connection's side of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

mod history;
mod subscriber;

use self::history::History;
pub use self::history::{HistoryLimits, Published};
pub use self::subscriber::{Delivery, Joined, Subscriber};
use crate::metrics::{label, Metrics};
use crate::protocol::{encode, Frame, ScrapeProgress, ServerMessage, Topic, TopicSet};

/// Messages each topic channel keeps for its slowest subscriber. One that falls further
/// behind catches up from the topic's history, or gets `resync` if even that has moved on.
/// 1,024 frames absorbs a burst of several seconds at the scrape rate while costing one
/// pointer-sized slot each, shared by all subscribers.
pub const TOPIC_CAPACITY: usize = 1024;

/// Counts served by `GET /api/ws/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections in the registry.
    pub active_connections: usize,
    /// Subscribers per topic; every topic is listed, including those with none.
    pub topics: BTreeMap<&'static str, usize>,
}

/// Shared handle to the topic channels and logs and the registry. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionManager {
    shared: Arc<Shared>,
}

struct Shared {
    /// Counters for `/metrics`; publications are counted here.
    metrics: Arc<Metrics>,
    /// The epoch of every topic's log but `alerts`: new at every start of a single node,
    /// since its logs are in memory; the cluster's, read from Redis, on a cluster member.
    epoch: RwLock<Arc<str>>,
    /// The epoch of `alerts`, new at every start. Each node computes its alerts from what
    /// its own cache took, so even a cluster member numbers them in its own log, which a
    /// restart of the cluster's leaves alone: a `since` from another node gets `resync`.
    local_epoch: Arc<str>,
    /// One channel and log per topic, indexed by [`Topic::index`]. A blocking mutex: held
    /// to append and send, or to read the log and subscribe, never across `.await`.
    topics: [Mutex<TopicLog>; Topic::ALL.len()],
    /// Bytes published per topic, as its history counts them, readable without its lock.
    published_bytes: [AtomicU64; Topic::ALL.len()],
    /// How far behind its topic a subscriber may fall, in bytes.
    lag_bytes: u64,
    /// On a cluster member, how long the log's groups should span for subscribers to keep
    /// up, in microseconds (`crate::dispatcher`).
    pace_us: AtomicU64,
    /// Guarded by a blocking mutex: it is held for a map update only, never across `.await`.
    registry: Mutex<Registry>,
}

/// One topic's channel and its log.
#[derive(Debug)]
struct TopicLog {
    /// Where live messages go.
    sender: broadcast::Sender<Published>,
    /// What was published, for those who missed it.
    history: History,
}

#[derive(Default)]
struct Registry {
    connections: HashMap<Uuid, TopicSet>,
    topic_counts: [usize; Topic::ALL.len()],
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("epoch", &self.epoch())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for ConnectionManager {
    fn default() -> Self {
        ConnectionManager::new()
    }
}

/// The history each topic keeps when none is configured: `--history-size`,
/// `--history-ttl`, `--history-bytes` and `--max-lag-bytes` at their defaults.
pub const DEFAULT_HISTORY: HistoryLimits = HistoryLimits {
    size: 25_000,
    ttl: Duration::from_secs(300),
    bytes: 64 << 20,
    lag_bytes: 16 << 20,
};

impl ConnectionManager {
    /// Creates the topic channels and logs and an empty registry, with metrics of its own.
    pub fn new() -> ConnectionManager {
        ConnectionManager::with_metrics(Arc::new(Metrics::new()), DEFAULT_HISTORY)
    }

    /// Creates the topic channels and logs (each keeping `history`) and an empty registry,
    /// counting into `metrics`. The epoch is new.
    pub fn with_metrics(metrics: Arc<Metrics>, history: HistoryLimits) -> ConnectionManager {
        // 12 characters of a random UUID: letters and digits, as the contract wants.
        let epoch: String = Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .take(12)
            .collect();
        ConnectionManager {
            shared: Arc::new(Shared {
                metrics,
                local_epoch: Arc::from(epoch.as_str()),
                epoch: RwLock::new(Arc::from(epoch)),
                topics: Topic::ALL.map(|_| {
                    Mutex::new(TopicLog {
                        sender: broadcast::channel(TOPIC_CAPACITY).0,
                        history: History::new(history),
                    })
                }),
                registry: Mutex::new(Registry::default()),
                published_bytes: Default::default(),
                pace_us: AtomicU64::new(0),
                lag_bytes: history.lag_bytes,
            }),
        }
    }

    /// The epoch of every topic's log but `alerts`'.
    pub fn epoch(&self) -> Arc<str> {
        self.shared.epoch.read().clone()
    }

    /// The epoch of `topic`'s log.
    pub fn epoch_of(&self, topic: Topic) -> Arc<str> {
        match topic {
            Topic::Alerts => self.shared.local_epoch.clone(),
            _ => self.epoch(),
        }
    }

    /// Starts every topic's log over, in `epoch`, after offset `top`: the histories are
    /// forgotten and every subscriber gets `resync`. A cluster member does this when it joins
    /// (no subscriber yet), when Redis lost the log (a new epoch, `top` 0), and when it fell
    /// behind what the log still held (same epoch, the log's top). `alerts`, the node's own
    /// log, goes on.
    pub fn restart(&self, epoch: Arc<str>, top: u64) {
        let shared = Topic::ALL.into_iter().filter(|&t| t != Topic::Alerts);
        let mut logs: Vec<_> = shared.map(|t| self.log(t)).collect();
        *self.shared.epoch.write() = epoch;
        for log in &mut logs {
            log.history.restart(top);
            let _ = log.sender.send(Published::restart(top));
        }
    }

    /// Publishes on `topic` the message `encode` makes for the next offset: appended to the
    /// topic's history, then sent to every subscriber. Returns the offset and how many
    /// subscribers there were. This is how `alerts`, a log of the node's own, is numbered;
    /// the other topics' messages take offsets of the engine's log ([`Self::publish_at`]).
    pub fn publish(&self, topic: Topic, encode: impl FnOnce(u64) -> Frame) -> (u64, usize) {
        let metrics = &self.shared.metrics;
        metrics
            .messages_published
            .get_or_create(&label("topic", topic.name()))
            .inc();
        let mut log = self.log(topic);
        let published = log.history.append(Instant::now(), encode);
        self.count_bytes(topic, &log);
        let offset = published.offset;
        (offset, log.sender.send(published).unwrap_or(0))
    }

    fn count_bytes(&self, topic: Topic, log: &TopicLog) {
        let total = log.history.total_bytes();
        self.shared.published_bytes[topic.index()].store(total, Ordering::Relaxed);
    }

    /// Bytes published on `topic` so far (see [`Published::end`]).
    pub fn published_bytes(&self, topic: Topic) -> u64 {
        self.shared.published_bytes[topic.index()].load(Ordering::Relaxed)
    }

    /// On a cluster member, how long the log's groups should span for its subscribers to
    /// keep up (zero: no longer than the coalescing window).
    pub fn pace(&self) -> Duration {
        Duration::from_micros(self.shared.pace_us.load(Ordering::Relaxed))
    }

    pub(crate) fn set_pace(&self, pace: Duration) {
        let us = u64::try_from(pace.as_micros()).unwrap_or(u64::MAX);
        self.shared.pace_us.store(us, Ordering::Relaxed);
    }

    /// How far behind its topic a subscriber may fall, in bytes (`--max-lag-bytes`).
    pub fn lag_bytes(&self) -> u64 {
        self.shared.lag_bytes
    }

    /// Publishes on `topic`, at `offset` of the engine's log, the message `encode` makes
    /// for it. Returns how many subscribers there were; nothing is published (0) if the
    /// topic is already past `offset`.
    pub fn publish_at(
        &self,
        topic: Topic,
        offset: u64,
        encode: impl FnOnce(u64) -> Frame,
    ) -> usize {
        self.publish_carrying(topic, offset, encode, None)
    }

    /// Publishes a scrape run's step on `scrape_progress`, at its offset in the engine's log.
    pub fn publish_step(&self, progress: ScrapeProgress, offset: u64) {
        let encode = |offset| {
            encode(&ServerMessage::ScrapeProgress {
                data: &progress,
                offset,
            })
        };
        let step = Some(Arc::new(progress.clone()));
        self.publish_carrying(Topic::ScrapeProgress, offset, encode, step);
    }

    /// Publishes at `offset` a message that may carry a scrape step.
    fn publish_carrying(
        &self,
        topic: Topic,
        offset: u64,
        encode: impl FnOnce(u64) -> Frame,
        step: Option<Arc<ScrapeProgress>>,
    ) -> usize {
        let mut log = self.log(topic);
        let now = Instant::now();
        let Some(published) = log.history.append_step_at(now, offset, encode, step) else {
            return 0;
        };
        self.count_bytes(topic, &log);
        let metrics = &self.shared.metrics;
        metrics
            .messages_published
            .get_or_create(&label("topic", topic.name()))
            .inc();
        log.sender.send(published).unwrap_or(0)
    }

    /// The step of `scrape_progress` at `offset` (`None`: the latest) while its history
    /// holds it, with its offset: where a scrape stream resumes, and whether a run is open.
    pub fn scrape_step(&self, offset: Option<u64>) -> Option<(u64, Arc<ScrapeProgress>)> {
        let log = self.log(Topic::ScrapeProgress);
        let published = log.history.get(offset.unwrap_or(log.history.top()))?;
        Some((published.offset, published.step.clone()?))
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Messages of `topic` that some subscriber has not taken yet (0 when every subscriber has
    /// caught up; [`TOPIC_CAPACITY`] while one is stuck).
    pub fn backlog(&self, topic: Topic) -> usize {
        self.log(topic).sender.len()
    }

    /// What `topic`'s history holds after `after`, and a receiver for what comes next:
    /// together, every message after `after` still held, with no gap between the two.
    pub fn messages_after(
        &self,
        topic: Topic,
        after: u64,
    ) -> (Vec<Published>, broadcast::Receiver<Published>) {
        let mut log = self.log(topic);
        (
            log.history.after(after, Instant::now()),
            log.sender.subscribe(),
        )
    }

    /// Entries in `topic`'s history and the age of the oldest, for `/metrics`.
    pub fn history_extent(&self, topic: Topic) -> (usize, Duration) {
        self.log(topic).history.extent(Instant::now())
    }

    /// `topic`'s channel and log, locked: publishing and joining under one lock is what
    /// makes a position and the first message after it meet exactly.
    fn log(&self, topic: Topic) -> MutexGuard<'_, TopicLog> {
        self.shared.topics[topic.index()].lock()
    }

    /// Adds a connection, subscribed to nothing yet. It stays in the registry until the
    /// returned [`Subscriber`] is dropped, whichever way its connection ends.
    pub fn register(&self) -> Subscriber {
        let id = Uuid::new_v4();
        self.shared
            .registry
            .lock()
            .connections
            .insert(id, TopicSet::default());
        Subscriber::new(id, self.clone())
    }

    /// Records that connection `id` now holds `topics` (it held `old`).
    pub(crate) fn record(&self, id: Uuid, old: TopicSet, topics: TopicSet) {
        let mut registry = self.shared.registry.lock();
        for (set, delta) in [(old, -1), (topics, 1)] {
            for topic in set.iter() {
                let count = &mut registry.topic_counts[topic.index()];
                *count = count.saturating_add_signed(delta);
            }
        }
        if let Some(held) = registry.connections.get_mut(&id) {
            *held = topics;
        }
    }

    /// Removes connection `id`, which held `topics`.
    pub(crate) fn forget(&self, id: Uuid, topics: TopicSet) {
        self.record(id, topics, TopicSet::default());
        self.shared.registry.lock().connections.remove(&id);
    }

    /// Connections in the registry.
    pub fn active_count(&self) -> usize {
        self.shared.registry.lock().connections.len()
    }

    /// Subscribers per topic.
    pub fn topic_counts(&self) -> BTreeMap<&'static str, usize> {
        self.stats().topics
    }

    /// Both counts, taken at one instant.
    pub fn stats(&self) -> Stats {
        let registry = self.shared.registry.lock();
        Stats {
            active_connections: registry.connections.len(),
            topics: Topic::ALL
                .into_iter()
                .map(|t| (t.name(), registry.topic_counts[t.index()]))
                .collect(),
        }
    }
}
