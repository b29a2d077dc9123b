//! One connection's side of the ConnectionManager: the topics it holds, a receiver per
//! topic, the offset of the last message of each it was given, and what is queued for it
//! ahead of its receivers (a recovery's replay, a gap filled from the history, a `resync`).
//!
//! Messages arrive in offset order; one at or below the last given is a duplicate and is
//! skipped, one past the next expected shows a gap (the connection fell behind its channel),
//! which is filled from the topic's history, or, if the history has moved on, announced with
//! `resync`. A slow reader thus catches up instead of losing, as long as the history holds
//! and it is no more than `--max-lag-bytes` behind: further behind, it skips to the latest
//! message and gets `resync` ([`Delivery::Lagged`]), so what it holds stays bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use uuid::Uuid;

use super::history::{Published, Since};
use crate::metrics::label;
use crate::protocol::{Frame, Position, Topic, TopicSet};
use crate::topics::ConnectionManager;

/// What a subscriber hands its connection to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An encoded message to write as it is.
    Frame(Frame),
    /// `missed` messages of `topic` will never reach this connection.
    Resync {
        /// The topic.
        topic: Topic,
        /// How many (0 when it cannot be told).
        missed: u64,
    },
    /// The connection was more than `--max-lag-bytes` behind `topic`: it skipped `missed`
    /// messages to the latest, and owes the client a `resync`.
    Lagged {
        /// The topic.
        topic: Topic,
        /// How many messages it skipped.
        missed: u64,
    },
}

/// What joining a topic gave: the reply's position for it, and whether `since` recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The epoch `position` is in, read with it: a client told the new offset after a
    /// restart must be told the new epoch too.
    pub epoch: Arc<str>,
    /// Every message after this offset is delivered, none at or before it.
    pub position: u64,
    /// Whether the requested `since` was honoured.
    pub recovered: bool,
}

#[derive(Debug)]
enum Queued {
    Message(Topic, Published),
    Resync(Topic, u64),
    /// The topic's log started over after this offset: what follows it is new.
    Restart(Topic, u64),
}

impl Queued {
    fn topic(&self) -> Topic {
        match self {
            Queued::Message(topic, _) | Queued::Resync(topic, _) | Queued::Restart(topic, _) => {
                *topic
            }
        }
    }
}

/// One connection's subscriptions. Dropping it leaves the registry.
pub struct Subscriber {
    id: Uuid,
    topics: TopicSet,
    receivers: [Option<Receiver<Published>>; Topic::ALL.len()],
    /// Per topic, the offset of the last message given to the connection (or its position).
    last: [u64; Topic::ALL.len()],
    /// Delivered before anything the receivers hold.
    queued: VecDeque<Queued>,
    manager: ConnectionManager,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id)
            .field("topics", &self.topics)
            .field("last", &self.last)
            .finish()
    }
}

impl Subscriber {
    pub(crate) fn new(id: Uuid, manager: ConnectionManager) -> Subscriber {
        Subscriber {
            id,
            topics: TopicSet::default(),
            receivers: Default::default(),
            last: [0; Topic::ALL.len()],
            queued: VecDeque::new(),
            manager,
        }
    }

    /// The connection id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The current subscription set.
    pub fn topics(&self) -> TopicSet {
        self.topics
    }

    /// Subscribes to `topic`, or confirms a subscription it has, recovering from `since`
    /// when the epoch matches and the history holds everything after it. A failed recovery
    /// queues a `resync`; a successful one queues the replay. Either comes before any later
    /// message of the topic.
    pub fn join(&mut self, topic: Topic, since: Option<&Position>) -> Joined {
        let manager = self.manager.clone();
        let mut log = manager.log(topic);
        // A restart changes it while holding every topic's log, this one's too.
        let epoch = manager.epoch_of(topic);
        let top = log.history.top();
        let held = self.topics.contains(topic);
        let given = self.last[topic.index()];
        let current = if held { given } else { top };
        let (position, recovery) = match since {
            // A new follower of scrape runs starts with the open run's steps so far, as a
            // scrape stream does: a page opened mid-run shows every platform.
            None if topic == Topic::ScrapeProgress && !held => {
                match log.history.open_run_start(Instant::now()) {
                    Some(start) => {
                        let steps = log.history.after(start, Instant::now());
                        let steps = steps.into_iter().map(|p| Queued::Message(topic, p));
                        self.queued.extend(steps);
                        (start, None)
                    }
                    None => (current, None),
                }
            }
            None => (current, None),
            Some(s) if s.epoch != epoch || s.offset > top => (current, Some(Err(("epoch", 0)))),
            // Held: everything after what it was given is in its receiver already.
            Some(s) if held => (given.max(s.offset), Some(Ok(0))),
            Some(s) => match log.history.since(s.offset, Instant::now()) {
                // A replay further behind than a subscriber may fall is not taken: it would
                // be skipped at once.
                Since::Recovered(replay)
                    if replay.first().is_some_and(|p| {
                        log.history.total_bytes() - p.end + p.frame.len() as u64
                            > manager.lag_bytes()
                    }) =>
                {
                    (top, Some(Err(("too_old", replay.len() as u64))))
                }
                Since::Recovered(replay) => {
                    let replayed = replay.len();
                    let replay = replay.into_iter().map(|p| Queued::Message(topic, p));
                    self.queued.extend(replay);
                    (s.offset, Some(Ok(replayed)))
                }
                // Not ahead: `s.offset <= top` was checked above.
                Since::TooOld { .. } | Since::Ahead => {
                    (top, Some(Err(("too_old", top - s.offset))))
                }
            },
        };
        if !held {
            self.receivers[topic.index()] = Some(log.sender.subscribe());
            let old = self.topics;
            self.topics.insert(topic);
            manager.record(self.id, old, self.topics);
        }
        drop(log);
        self.last[topic.index()] = position;
        let recovered = match recovery {
            Some(recovery) => self.counted(topic, recovery),
            None => false,
        };
        Joined {
            epoch,
            position,
            recovered,
        }
    }

    /// Counts a recovery by outcome; a failed one queues its `resync`. Returns whether it
    /// recovered.
    fn counted(&mut self, topic: Topic, recovery: Result<usize, (&'static str, u64)>) -> bool {
        let metrics = self.manager.metrics();
        let outcome = match recovery {
            Ok(_) => "recovered",
            Err((outcome, _)) => outcome,
        };
        metrics
            .recoveries
            .get_or_create(&label("outcome", outcome))
            .inc();
        match recovery {
            Ok(replayed) => {
                metrics.messages_replayed.inc_by(replayed as u64);
                true
            }
            Err((_, missed)) => {
                self.queued.push_back(Queued::Resync(topic, missed));
                false
            }
        }
    }

    /// Unsubscribes from `topic`: nothing more of it is delivered, not even what was queued.
    pub fn leave(&mut self, topic: Topic) {
        if !self.topics.contains(topic) {
            return;
        }
        self.receivers[topic.index()] = None;
        self.queued.retain(|queued| queued.topic() != topic);
        let old = self.topics;
        self.topics.remove(topic);
        self.manager.record(self.id, old, self.topics);
    }

    /// Waits for the next delivery of any subscribed topic; with none, waits for ever.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Delivery {
        // One branch per topic: the compiler checks that the list below stays complete.
        const _: () = assert!(Topic::ALL.len() == 4, "add a branch for the new topic");
        loop {
            if let Some(delivery) = self.next_queued() {
                return delivery;
            }
            let [alerts, changes, odds, progress] = &mut self.receivers;
            let (topic, result) = tokio::select! {
                r = recv_from(alerts) => (Topic::Alerts, r),
                r = recv_from(changes) => (Topic::OddsChanges, r),
                r = recv_from(odds) => (Topic::OddsUpdates, r),
                r = recv_from(progress) => (Topic::ScrapeProgress, r),
            };
            match result {
                Ok(published) => self.arrived(topic, published),
                // The next message shows the gap, and `arrived` fills it.
                Err(RecvError::Lagged(_)) => {}
                // The senders live as long as the manager, which this subscriber holds.
                Err(RecvError::Closed) => {}
            }
        }
    }

    /// The next delivery that is ready now, if any: used to drain a backlog without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.next_queued() {
                return Some(delivery);
            }
            let mut received = false;
            for topic in Topic::ALL {
                let Some(receiver) = &mut self.receivers[topic.index()] else {
                    continue;
                };
                match receiver.try_recv() {
                    Ok(published) => {
                        self.arrived(topic, published);
                        received = true;
                        break;
                    }
                    Err(TryRecvError::Lagged(_)) => {
                        received = true; // messages are there: take the next
                        break;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => {}
                }
            }
            if !received {
                return None;
            }
        }
    }

    /// Queues a message that came through `topic`'s channel, with what it shows is missing
    /// before it.
    fn arrived(&mut self, topic: Topic, published: Published) {
        let last = self.last[topic.index()];
        if published.is_restart() {
            // The log started over: nothing before it will come, nor be recovered.
            self.queued.push_back(Queued::Resync(topic, 0));
            self.queued
                .push_back(Queued::Restart(topic, published.offset));
            return;
        }
        if published.prev <= last {
            self.queued.push_back(Queued::Message(topic, published));
            return;
        }
        let since = self.manager.log(topic).history.since(last, Instant::now());
        match since {
            Since::Recovered(replay) => {
                let metrics = self.manager.metrics();
                metrics.messages_replayed.inc_by(replay.len() as u64);
                let missing = replay
                    .into_iter()
                    .take_while(|p| p.offset < published.offset);
                self.queued
                    .extend(missing.map(|p| Queued::Message(topic, p)));
            }
            Since::Ahead | Since::TooOld { .. } => {
                let missed = published.prev - last;
                self.queued.push_back(Queued::Resync(topic, missed));
                self.last[topic.index()] = published.prev;
            }
        }
        self.queued.push_back(Queued::Message(topic, published));
    }

    /// The next queued delivery, skipping what the connection was already given.
    fn next_queued(&mut self) -> Option<Delivery> {
        while let Some(queued) = self.queued.pop_front() {
            match queued {
                Queued::Message(topic, published) => {
                    if published.offset <= self.last[topic.index()] {
                        continue;
                    }
                    let behind = self
                        .manager
                        .published_bytes(topic)
                        .saturating_sub(published.end);
                    if behind > self.manager.lag_bytes() {
                        return Some(self.skip_to_latest(topic));
                    }
                    self.last[topic.index()] = published.offset;
                    return Some(Delivery::Frame(published.frame));
                }
                Queued::Resync(topic, missed) => return Some(Delivery::Resync { topic, missed }),
                Queued::Restart(topic, offset) => self.last[topic.index()] = offset,
            }
        }
        None
    }
}

impl Subscriber {
    /// Drops what is queued and held for `topic` and continues from its latest message.
    fn skip_to_latest(&mut self, topic: Topic) -> Delivery {
        let manager = self.manager.clone();
        let log = manager.log(topic);
        let top = log.history.top();
        // A new receiver starts after `top`: read under the same lock, so they join exactly.
        self.receivers[topic.index()] = Some(log.sender.subscribe());
        drop(log);
        self.queued.retain(|queued| queued.topic() != topic);
        let missed = top.saturating_sub(self.last[topic.index()]);
        self.last[topic.index()] = top;
        Delivery::Lagged { topic, missed }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.manager.forget(self.id, self.topics);
    }
}

async fn recv_from(slot: &mut Option<Receiver<Published>>) -> Result<Published, RecvError> {
    match slot {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::topics::HistoryLimits;
    use crate::topics::TOPIC_CAPACITY;
    use std::sync::Arc;
    use std::time::Duration;

    const ODDS: Topic = Topic::OddsUpdates;

    fn publish(manager: &ConnectionManager, n: usize) {
        for _ in 0..n {
            manager.publish(ODDS, |offset| Frame::from(offset.to_string()));
        }
    }

    fn frame(delivery: Option<Delivery>) -> String {
        match delivery {
            Some(Delivery::Frame(frame)) => frame.to_string(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn registry_counts_follow_subscriptions_and_drops() {
        let manager = ConnectionManager::new();
        let mut a = manager.register();
        a.join(ODDS, None);
        a.join(Topic::ScrapeProgress, None);
        let mut b = manager.register();
        b.join(Topic::ScrapeProgress, None);
        assert_eq!(manager.active_count(), 2);
        assert_eq!(manager.topic_counts()["scrape_progress"], 2);
        b.leave(Topic::ScrapeProgress);
        b.join(ODDS, None);
        assert_eq!(manager.topic_counts()["scrape_progress"], 1);
        assert_eq!(manager.topic_counts()["odds_updates"], 2);
        drop(a);
        drop(b);
        assert_eq!(manager.stats().active_connections, 0);
        assert!(manager.topic_counts().values().all(|&n| n == 0));
    }

    #[tokio::test]
    async fn a_position_joins_the_first_message_exactly_and_since_replays_the_rest() {
        let manager = ConnectionManager::new();
        publish(&manager, 3);
        let mut live = manager.register();
        assert_eq!(live.join(ODDS, None).position, 3);
        publish(&manager, 1);
        assert_eq!(frame(live.try_recv()), "4");

        let since = Position {
            epoch: manager.epoch(),
            offset: 1,
        };
        let mut back = manager.register();
        let joined = back.join(ODDS, Some(&since));
        assert_eq!(
            joined,
            Joined {
                epoch: manager.epoch(),
                position: 1,
                recovered: true
            }
        );
        publish(&manager, 1);
        let got: Vec<String> = (0..4).map(|_| frame(back.try_recv())).collect();
        assert_eq!(
            got,
            ["2", "3", "4", "5"],
            "replay, then live, no gap, no duplicate"
        );
        assert_eq!(back.try_recv(), None);
    }

    #[tokio::test]
    async fn another_epoch_or_a_lost_history_means_resync() {
        let limits = HistoryLimits {
            size: 2,
            ttl: Duration::from_secs(60),
            bytes: 1 << 20,
            lag_bytes: 1 << 20,
        };
        let manager = ConnectionManager::with_metrics(Arc::new(Metrics::new()), limits);
        publish(&manager, 5);
        let stale = Position {
            epoch: "other".into(),
            offset: 1,
        };
        let mut a = manager.register();
        assert_eq!(
            a.join(ODDS, Some(&stale)),
            Joined {
                epoch: manager.epoch(),
                position: 5,
                recovered: false
            }
        );
        assert_eq!(
            a.try_recv(),
            Some(Delivery::Resync {
                topic: ODDS,
                missed: 0
            })
        );
        let old = Position {
            epoch: manager.epoch(),
            offset: 1,
        };
        let mut b = manager.register();
        assert!(!b.join(ODDS, Some(&old)).recovered);
        assert_eq!(
            b.try_recv(),
            Some(Delivery::Resync {
                topic: ODDS,
                missed: 4
            })
        );
    }

    #[tokio::test]
    async fn a_reader_behind_its_channel_catches_up_from_the_history() {
        let manager = ConnectionManager::new();
        let mut slow = manager.register();
        slow.join(ODDS, None);
        publish(&manager, TOPIC_CAPACITY + 5);
        for expected in 1..=TOPIC_CAPACITY + 5 {
            assert_eq!(frame(slow.recv().await.into()), expected.to_string());
        }
    }

    #[tokio::test]
    async fn a_reader_behind_the_history_too_gets_resync_with_the_count() {
        let limits = HistoryLimits {
            size: 10,
            ttl: Duration::from_secs(60),
            bytes: 1 << 20,
            lag_bytes: 1 << 20,
        };
        let manager = ConnectionManager::with_metrics(Arc::new(Metrics::new()), limits);
        let mut slow = manager.register();
        slow.join(ODDS, None);
        publish(&manager, TOPIC_CAPACITY + 5);
        assert_eq!(
            slow.recv().await,
            Delivery::Resync {
                topic: ODDS,
                missed: 5
            }
        );
        assert_eq!(frame(slow.recv().await.into()), "6");
    }

    #[tokio::test]
    async fn a_reader_further_behind_than_its_lag_bytes_skips_to_the_latest() {
        let limits = HistoryLimits {
            lag_bytes: 100,
            ..crate::topics::DEFAULT_HISTORY
        };
        let manager = ConnectionManager::with_metrics(Arc::new(Metrics::new()), limits);
        let mut slow = manager.register();
        slow.join(ODDS, None);
        // 30 frames of 10 bytes: the first is 290 bytes behind the latest.
        for _ in 0..30 {
            manager.publish(ODDS, |_| Frame::from("0123456789"));
        }
        assert_eq!(
            slow.recv().await,
            Delivery::Lagged {
                topic: ODDS,
                missed: 30
            }
        );
        assert_eq!(slow.try_recv(), None, "what it held is dropped");
        manager.publish(ODDS, |offset| Frame::from(offset.to_string()));
        assert_eq!(frame(slow.try_recv()), "31");

        // A recovery whose replay is further behind than that is not taken.
        let since = Position {
            epoch: manager.epoch(),
            offset: 1,
        };
        let mut back = manager.register();
        assert!(!back.join(ODDS, Some(&since)).recovered);
        assert_eq!(
            back.try_recv(),
            Some(Delivery::Resync {
                topic: ODDS,
                missed: 30
            })
        );
    }
}
