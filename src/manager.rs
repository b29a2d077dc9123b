//! The ConnectionManager: the topic channels and the registry of live connections.
//!
//! Each topic is one `tokio::sync::broadcast` channel of encoded [`Frame`]s. A connection
//! holds one receiver per subscribed topic, so a message is encoded once by the dispatcher
//! and every subscriber clones the same reference-counted bytes. A connection that falls
//! more than [`TOPIC_CAPACITY`] messages behind loses the oldest ones and is told how many
//! (`resync`), so a slow reader costs the others nothing and memory stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use uuid::Uuid;

use crate::metrics::{label, Metrics};
use crate::protocol::{Frame, Topic, TopicSet};

/// Messages each topic channel keeps for its slowest subscriber before that subscriber
/// starts losing the oldest ones. 1,024 frames absorbs a burst of several seconds at the
/// scrape rate while costing one pointer-sized slot each, shared by all subscribers.
pub const TOPIC_CAPACITY: usize = 1024;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An encoded message to write to the socket as it is.
    Frame(Frame),
    /// `missed` messages of `topic` were dropped because the connection read too slowly.
    Lagged {
        /// The topic that lagged.
        topic: Topic,
        /// How many messages were lost.
        missed: u64,
    },
}

/// Counts served by `GET /api/ws/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections in the registry.
    pub active_connections: usize,
    /// Subscribers per topic; every topic is listed, including those with none.
    pub topics: BTreeMap<&'static str, usize>,
}

/// Shared handle to the topic channels and the registry. Cheap to clone.
#[derive(Clone)]
pub struct ConnectionManager {
    shared: Arc<Shared>,
}

struct Shared {
    /// Counters for `/metrics`; publications are counted here.
    metrics: Arc<Metrics>,
    /// One channel per topic, indexed by [`Topic::index`].
    topics: [broadcast::Sender<Frame>; Topic::ALL.len()],
    /// Guarded by a blocking mutex: it is held for a map update only, never across `.await`.
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    connections: HashMap<Uuid, TopicSet>,
    topic_counts: [usize; Topic::ALL.len()],
}

impl Registry {
    fn count(&mut self, topics: TopicSet, delta: isize) {
        for topic in topics.iter() {
            let count = &mut self.topic_counts[topic.index()];
            *count = count.saturating_add_signed(delta);
        }
    }
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for ConnectionManager {
    fn default() -> Self {
        ConnectionManager::new()
    }
}

impl ConnectionManager {
    /// Creates the topic channels and an empty registry, with metrics of its own.
    pub fn new() -> ConnectionManager {
        ConnectionManager::with_metrics(Arc::new(Metrics::new()))
    }

    /// Creates the topic channels and an empty registry, counting into `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> ConnectionManager {
        ConnectionManager {
            shared: Arc::new(Shared {
                metrics,
                topics: Topic::ALL.map(|_| broadcast::channel(TOPIC_CAPACITY).0),
                registry: Mutex::new(Registry::default()),
            }),
        }
    }

    /// Sends an encoded message to every subscriber of `topic`; returns how many there were.
    pub fn publish(&self, topic: Topic, frame: Frame) -> usize {
        let metrics = &self.shared.metrics;
        metrics
            .messages_published
            .get_or_create(&label("topic", topic.name()))
            .inc();
        self.shared.topics[topic.index()].send(frame).unwrap_or(0)
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Messages of `topic` that some subscriber has not taken yet (0 when every subscriber has
    /// caught up; [`TOPIC_CAPACITY`] while one is stuck).
    pub fn backlog(&self, topic: Topic) -> usize {
        self.shared.topics[topic.index()].len()
    }

    /// Adds a connection subscribed to `topics`. It stays in the registry until the returned
    /// [`Subscriber`] is dropped, whichever way its connection ends.
    pub fn register(&self, topics: TopicSet) -> Subscriber {
        let id = Uuid::new_v4();
        {
            let mut registry = self.shared.registry.lock();
            registry.connections.insert(id, topics);
            registry.count(topics, 1);
        }
        let mut subscriber = Subscriber {
            id,
            topics: TopicSet::default(),
            receivers: Default::default(),
            manager: self.clone(),
        };
        subscriber.open_receivers(topics);
        subscriber
    }

    /// Connections in the registry.
    pub fn active_count(&self) -> usize {
        self.shared.registry.lock().connections.len()
    }

    /// Subscribers per topic.
    pub fn topic_counts(&self) -> BTreeMap<&'static str, usize> {
        let registry = self.shared.registry.lock();
        Topic::ALL
            .into_iter()
            .map(|t| (t.name(), registry.topic_counts[t.index()]))
            .collect()
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

/// One connection's place in the registry and its receivers. Dropping it unregisters.
pub struct Subscriber {
    id: Uuid,
    topics: TopicSet,
    receivers: [Option<broadcast::Receiver<Frame>>; Topic::ALL.len()],
    manager: ConnectionManager,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id)
            .field("topics", &self.topics)
            .finish()
    }
}

impl Subscriber {
    /// The connection id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The current subscription set.
    pub fn topics(&self) -> TopicSet {
        self.topics
    }

    /// Replaces the subscription set. A newly added topic delivers messages published from
    /// now on; a removed one stops at once, dropping whatever it had queued.
    pub fn set_topics(&mut self, topics: TopicSet) {
        let old = self.topics;
        if old == topics {
            return;
        }
        {
            let mut registry = self.manager.shared.registry.lock();
            registry.count(old, -1);
            registry.count(topics, 1);
            registry.connections.insert(self.id, topics);
        }
        for topic in old.iter().filter(|t| !topics.contains(*t)) {
            self.receivers[topic.index()] = None;
        }
        self.open_receivers(topics);
    }

    fn open_receivers(&mut self, topics: TopicSet) {
        for topic in topics.iter() {
            let slot = &mut self.receivers[topic.index()];
            if slot.is_none() {
                *slot = Some(self.manager.shared.topics[topic.index()].subscribe());
            }
        }
        self.topics = topics;
    }

    /// Waits for the next message of any subscribed topic; with no topic, waits for ever.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Delivery {
        // One branch per topic: the compiler checks that the list below stays complete.
        const _: () = assert!(Topic::ALL.len() == 2, "add a branch for the new topic");
        let [odds, progress] = &mut self.receivers;
        loop {
            let (topic, result) = tokio::select! {
                r = recv_from(odds) => (Topic::OddsUpdates, r),
                r = recv_from(progress) => (Topic::ScrapeProgress, r),
            };
            match result {
                Ok(frame) => return Delivery::Frame(frame),
                Err(RecvError::Lagged(missed)) => return Delivery::Lagged { topic, missed },
                // The senders live as long as the manager, which this subscriber holds.
                Err(RecvError::Closed) => continue,
            }
        }
    }

    /// The next message that is ready now, if any: used to drain a backlog without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        for (index, slot) in self.receivers.iter_mut().enumerate() {
            let Some(receiver) = slot else { continue };
            match receiver.try_recv() {
                Ok(frame) => return Some(Delivery::Frame(frame)),
                Err(TryRecvError::Lagged(missed)) => {
                    return Some(Delivery::Lagged {
                        topic: Topic::ALL[index],
                        missed,
                    })
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => {}
            }
        }
        None
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut registry = self.manager.shared.registry.lock();
        registry.connections.remove(&self.id);
        registry.count(self.topics, -1);
    }
}

async fn recv_from(slot: &mut Option<broadcast::Receiver<Frame>>) -> Result<Frame, RecvError> {
    match slot {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registry_counts_follow_subscriptions_and_drops() {
        let manager = ConnectionManager::new();
        let a = manager.register(TopicSet::all());
        let mut b = manager.register([Topic::ScrapeProgress].into_iter().collect());
        assert_eq!(manager.active_count(), 2);
        assert_eq!(manager.topic_counts()["scrape_progress"], 2);
        assert_eq!(manager.topic_counts()["odds_updates"], 1);

        b.set_topics([Topic::OddsUpdates].into_iter().collect());
        assert_eq!(manager.topic_counts()["scrape_progress"], 1);
        assert_eq!(manager.topic_counts()["odds_updates"], 2);

        drop(a);
        drop(b);
        assert_eq!(manager.stats().active_connections, 0);
        assert!(manager.topic_counts().values().all(|&n| n == 0));
    }

    #[tokio::test]
    async fn lagging_subscriber_is_told_how_many_it_missed() {
        let manager = ConnectionManager::new();
        let mut sub = manager.register([Topic::OddsUpdates].into_iter().collect());
        for i in 0..TOPIC_CAPACITY + 5 {
            manager.publish(Topic::OddsUpdates, Frame::from(i.to_string()));
        }
        assert_eq!(
            sub.recv().await,
            Delivery::Lagged {
                topic: Topic::OddsUpdates,
                missed: 5
            }
        );
        assert_eq!(
            sub.recv().await,
            Delivery::Frame(Frame::from("5".to_string()))
        );
    }
}
