//! The dispatcher, and the cache-update bridge that feeds it.
//!
//! The bridge is an OddsCache callback that only pushes onto an unbounded channel: it runs on
//! the writer's thread, so it must never do I/O or wait. The dispatcher is the one task that
//! drains that channel. Each time it wakes it takes everything queued at that moment, merges
//! the changes per source, encodes each `odds_update` (the ids) and each `odds_change` (the
//! snapshots, joined from the bytes the cache stored) once and publishes them on the
//! `odds_updates` and `odds_changes` topics.
//!
//! Every change comes with its offset in a log, which numbers what is published: a single
//! node's own (the cache numbers its puts' changes), or a cluster's shared log. Either way
//! the changes merged into one [`Group`] make its messages, numbered per topic from the
//! group's first offset. Only where a group ends differs, and the [`Coalescing`] the engine
//! picks says it: a single node ends one with each wake-up, a cluster member where the log
//! says (`BusEvent::Cut`), so that every member publishes alike.
//!
//! A publication costs one socket write per subscriber, so under sustained load the number of
//! publications, not of changes, is what the machine pays for. The dispatcher therefore paces
//! itself with a token bucket: a quiet broker publishes each change at once, a short burst of
//! up to [`BURST`] publications goes out back to back, and beyond that it publishes at most
//! once per window, merging everything that arrived meanwhile. Past the window it also bounds
//! the fan-out's duty cycle: it waits until subscribers have taken the previous publication,
//! then three times as long again (up to [`MAX_STRETCH`] in all). Frames thus grow with the
//! cost of a fan-out (the more subscribers, the more ids per frame) and the machine keeps room
//! for ingest and for the clients themselves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bucket::TokenBucket;
use crate::cache::{Changes, OddsCache};
use crate::config::Config;
use crate::protocol::{
    encode, encode_odds_change, Frame, OddsUpdate, ScrapeProgress, ServerMessage, Topic,
};
use crate::topics::ConnectionManager;

/// Most event ids in one `odds_update`. An id takes at most 17 bytes of JSON (2^53 - 1 and a
/// comma), so a frame stays under 64 KiB: clients whose libraries refuse larger frames
/// (Python's `websockets` refuses 1 MiB by default) are never disconnected by a flood.
pub const MAX_IDS_PER_UPDATE: usize = 3_500;

/// Most bytes of snapshots in one `odds_change`, for the same clients: a larger set of
/// changes comes as several messages (one snapshot larger than this comes on its own).
pub const MAX_CHANGE_BYTES: usize = 60 * 1024;

/// What an `odds_change` frame adds to its snapshots: its type, source, count, offset and
/// timestamp (a source name is short: configured, lowercase).
const CHANGE_OVERHEAD: usize = 256;

/// Most events the dispatcher takes per wake-up, so that the first of a flood is not held
/// back behind an unbounded merge.
const MAX_BATCH: usize = 4096;

/// Something for the dispatcher to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// A cache put changed these events of this source.
    OddsChanged {
        /// Distinct ids, in order of change.
        event_ids: Vec<u64>,
        /// The JSON of each one's new snapshot, in the same order.
        snapshots: Vec<Bytes>,
        /// Where they came from.
        source: Arc<str>,
        /// Each change's offset in the log, in the same order.
        offsets: Vec<u64>,
    },
    /// A cluster member read the end of a group of the log's entries: what they changed is
    /// published now ([`Coalescing::LogGroups`]).
    Cut,
    /// A cluster member (re)joined the cluster's log, or fell behind it: every topic's log
    /// starts over after `top` in `epoch`, and subscribers get `resync`.
    Restart {
        /// The cluster's epoch.
        epoch: Arc<str>,
        /// The offset the logs continue after.
        top: u64,
    },
    /// A scrape run made progress.
    ScrapeProgress {
        /// The step.
        progress: ScrapeProgress,
        /// Its offset in the log.
        offset: u64,
    },
}

/// The sending half of the dispatcher's queue. Sending never blocks and never fails while the
/// dispatcher runs.
pub type BusSender = mpsc::UnboundedSender<BusEvent>;

/// The receiving half, owned by the dispatcher.
pub type BusReceiver = mpsc::UnboundedReceiver<BusEvent>;

/// Creates the dispatcher's queue.
pub fn bus_channel() -> (BusSender, BusReceiver) {
    mpsc::unbounded_channel()
}

/// Registers the callback that forwards every cache change to the dispatcher.
pub fn create_cache_update_bridge(cache: &OddsCache, bus: BusSender) {
    cache.on_update(move |changes: Changes<'_>| {
        let event = BusEvent::OddsChanged {
            event_ids: changes.event_ids.to_vec(),
            snapshots: changes.snapshots.to_vec(),
            source: Arc::from(changes.source),
            offsets: changes.offsets.to_vec(),
        };
        if bus.send(event).is_err() {
            tracing::debug!(
                event = "cache.update_dropped",
                source = changes.source,
                "dispatcher stopped; change not published"
            );
        }
    });
}

/// Publications that may go out back to back before the window applies.
pub const BURST: f64 = 4.0;

/// Under sustained load, how much longer than the window the dispatcher may wait because of
/// the fan-out (see [`gather`]). Bounds the latency that a large or stuck fan-out adds.
pub const MAX_STRETCH: Duration = Duration::from_millis(20);

/// Under sustained load, the time between publications is at least this many times what
/// subscribers needed to take the previous one: fan-out then runs at most a quarter of the
/// time, which leaves room for ingest and, on a shared machine, for the clients.
const DUTY_CYCLE_FACTOR: u32 = 4;

/// Where the dispatcher ends a group of changes, which it merges into one message per topic
/// and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalescing {
    /// A single node's default: a group is what one wake-up drains, and under sustained load
    /// it publishes at most once per `window` (zero: never wait).
    PerSource {
        /// Shortest time between two publications once a burst is spent.
        window: Duration,
    },
    /// One message per put, as the original design did; kept to measure the difference.
    Off,
    /// A cluster member's: the log's groups of entries, each published at its end
    /// ([`BusEvent::Cut`]), which the log's appends place at least `window` apart under load.
    LogGroups {
        /// `--coalesce-window-ms` (zero: every entry ends its group).
        window: Duration,
    },
}

impl Coalescing {
    /// The window (zero: no merging asked for).
    pub fn window(self) -> Duration {
        match self {
            Coalescing::PerSource { window } | Coalescing::LogGroups { window } => window,
            Coalescing::Off => Duration::ZERO,
        }
    }

    /// What `--no-coalesce` and `--coalesce-window-ms` ask for.
    pub fn from_config(config: &Config) -> Coalescing {
        if config.no_coalesce {
            Coalescing::Off
        } else {
            Coalescing::PerSource {
                window: Duration::from_millis(config.coalesce_window_ms),
            }
        }
    }
}

/// The dispatcher task: runs until `stop` is cancelled, then publishes whatever is still
/// queued and returns, so that every change accepted before shutdown reaches subscribers.
/// No `odds_change` frame it publishes is larger than `max_frame` bytes
/// (`--max-frame-bytes`): a snapshot that would not fit is announced by its id instead.
pub async fn run_dispatcher(
    mut queue: BusReceiver,
    manager: ConnectionManager,
    coalescing: Coalescing,
    max_frame: usize,
    stop: CancellationToken,
) {
    let change_bytes = MAX_CHANGE_BYTES.min(max_frame.saturating_sub(CHANGE_OVERHEAD));
    let mut batch = Vec::with_capacity(64);
    let mut group = Group::new(change_bytes, coalescing.window());
    let mut last_publication = Instant::now();
    // Paces publications once a burst is spent; none with a zero window or coalescing off.
    let mut pacer = match coalescing.window() {
        window if !window.is_zero() => Some(TokenBucket::new(window, BURST, Instant::now())),
        _ => None,
    };
    loop {
        tokio::select! {
            biased;
            received = queue.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break; // every sender is gone
                }
            }
            () = stop.cancelled() => {
                drain(&mut queue, &mut batch);
                dispatch(&mut batch, &mut group, &manager, coalescing);
                group.publish(&manager);
                break;
            }
        }
        let metrics = manager.metrics();
        metrics.dispatcher_queue_depth.set(queue.len() as i64);
        let wait = pacer
            .as_mut()
            .map_or(Duration::ZERO, |p| p.reserve(Instant::now()));
        if !wait.is_zero() {
            // Under load: let more changes gather, then publish them together.
            tokio::select! {
                () = gather(last_publication, wait, &manager) => {}
                () = stop.cancelled() => {}
            }
            drain(&mut queue, &mut batch);
        }
        metrics.dispatcher_batch_size.observe(batch.len() as f64);
        dispatch(&mut batch, &mut group, &manager, coalescing);
        last_publication = Instant::now();
    }
    tracing::debug!(event = "dispatcher.stopped");
}

/// Under sustained load, waits before the next publication: `wait` (from the pacer), then
/// until subscribers have taken the previous `odds_update` and `odds_change`, then until [`DUTY_CYCLE_FACTOR`]
/// times as long as they needed has passed since it. Never past `wait + MAX_STRETCH`.
async fn gather(last_publication: Instant, wait: Duration, manager: &ConnectionManager) {
    let start = tokio::time::Instant::now();
    let deadline = start + wait + MAX_STRETCH;
    tokio::time::sleep(wait).await;
    while backlog(manager) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fan_out = last_publication.elapsed();
    let resume = tokio::time::Instant::from_std(last_publication + DUTY_CYCLE_FACTOR * fan_out);
    tokio::time::sleep_until(resume.min(deadline)).await;
}

/// Publications of odds not yet taken by every subscriber.
fn backlog(manager: &ConnectionManager) -> usize {
    manager.backlog(Topic::OddsUpdates) + manager.backlog(Topic::OddsChanges)
}

/// Moves everything queued right now into `batch`.
fn drain(queue: &mut BusReceiver, batch: &mut Vec<BusEvent>) {
    while let Ok(event) = queue.try_recv() {
        batch.push(event);
    }
}

/// Publishes one drained batch and empties it; changes wait in `group` for the end of
/// theirs. Odds changes queued before a scrape-progress step are published before it, so
/// `completed` never overtakes the run's own updates.
fn dispatch(
    batch: &mut Vec<BusEvent>,
    group: &mut Group,
    manager: &ConnectionManager,
    coalescing: Coalescing,
) {
    for event in batch.drain(..) {
        match event {
            BusEvent::OddsChanged {
                event_ids,
                snapshots,
                source,
                offsets,
            } => {
                group.add(source, event_ids, snapshots, &offsets);
                if coalescing == Coalescing::Off {
                    group.publish(manager);
                }
            }
            BusEvent::Cut => {
                // Subscribers still taking the previous group: groups should span longer.
                let behind = backlog(manager) > 0;
                if group.publish(manager) {
                    group.paced(manager, behind);
                }
            }
            BusEvent::Restart { epoch, top } => {
                // What the group held is before `top`: subscribers get `resync` for it.
                group.clear();
                manager.restart(epoch, top);
            }
            BusEvent::ScrapeProgress { progress, offset } => {
                group.publish(manager);
                manager.publish_step(progress, offset);
            }
        }
    }
    if !matches!(coalescing, Coalescing::LogGroups { .. }) {
        group.publish(manager);
    }
}

/// The offsets the messages of one group take, per topic: counted up from the group's first
/// change's. A group of n changes makes at most n messages per topic, so they stay within
/// the group's offsets, and every cluster member numbers them alike.
#[derive(Debug, Clone, Copy)]
struct Numbering([u64; Topic::ALL.len()]);

impl Numbering {
    /// Publishes on `topic` the message `encode` makes; returns how many received it.
    fn publish(
        &mut self,
        manager: &ConnectionManager,
        topic: Topic,
        encode: impl FnOnce(u64) -> Frame,
    ) -> usize {
        let offset = self.0[topic.index()];
        self.0[topic.index()] += 1;
        manager.publish_at(topic, offset, encode)
    }
}

/// Changes gathered until their group ends, merged into one message per topic and source.
///
/// A cluster member cannot merge past the log's groups (`append.lua` says where each ends),
/// so it asks for longer ones instead, as a single node's pacing would merge more: the node's
/// pace, which its appends carry, doubles (from the window, up to the window and
/// [`MAX_STRETCH`]) each time a group is published while subscribers are still taking the one
/// before, and takes a quarter off otherwise.
#[derive(Debug)]
struct Group {
    merged: Merged,
    /// The offset of its first change.
    first: Option<u64>,
    /// `--coalesce-window-ms` (zero: no merging asked for).
    window: Duration,
}

impl Group {
    fn new(change_bytes: usize, window: Duration) -> Group {
        Group {
            merged: Merged::new(change_bytes),
            first: None,
            window,
        }
    }

    /// Adjusts the node's pace after publishing a group, `behind` if subscribers had not
    /// taken the one before.
    fn paced(&self, manager: &ConnectionManager, behind: bool) {
        let pace = manager.pace();
        let pace = if behind {
            (2 * pace.max(self.window)).min(self.window + MAX_STRETCH)
        } else {
            pace * 3 / 4
        };
        manager.set_pace(pace);
    }

    fn add(
        &mut self,
        source: Arc<str>,
        event_ids: Vec<u64>,
        snapshots: Vec<Bytes>,
        offsets: &[u64],
    ) {
        if let Some(&first) = offsets.iter().min() {
            self.first = Some(self.first.map_or(first, |f| f.min(first)));
        }
        self.merged.add(source, event_ids, snapshots);
    }

    /// Publishes what it holds, if anything, and starts over.
    fn publish(&mut self, manager: &ConnectionManager) -> bool {
        let Some(first) = self.first.take() else {
            return false;
        };
        let mut numbering = Numbering([first; Topic::ALL.len()]);
        self.merged.publish(manager, &mut numbering);
        true
    }

    fn clear(&mut self) {
        self.first = None;
        self.merged.groups.clear();
    }
}

/// The changes of one source, ready to publish.
struct Odds<'a> {
    source: &'a str,
    event_ids: &'a [u64],
    snapshots: &'a [Bytes],
    /// Most bytes of snapshots in one `odds_change`.
    change_bytes: usize,
}

impl<'a> Odds<'a> {
    fn new(
        source: &'a str,
        event_ids: &'a [u64],
        snapshots: &'a [Bytes],
        change_bytes: usize,
    ) -> Odds<'a> {
        Odds {
            source,
            event_ids,
            snapshots,
            change_bytes,
        }
    }

    /// Publishes the ids in as many `odds_update`s as [`MAX_IDS_PER_UPDATE`] needs, then the
    /// snapshots in as many `odds_change`s as `change_bytes` needs; a snapshot larger than
    /// that goes out on `odds_changes` as an `odds_update` of its id (the client refetches
    /// it), so that no subscriber copies a frame larger than `--max-frame-bytes`.
    fn publish(&self, manager: &ConnectionManager, numbering: &mut Numbering) {
        let (source, event_ids) = (self.source, self.event_ids);
        for chunk in event_ids.chunks(MAX_IDS_PER_UPDATE) {
            publish_update(manager, Topic::OddsUpdates, source, chunk, numbering);
        }
        let mut rest = self.snapshots;
        while !rest.is_empty() {
            if rest[0].len() > self.change_bytes {
                let at = self.snapshots.len() - rest.len();
                let id = &event_ids[at..=at];
                publish_update(manager, Topic::OddsChanges, source, id, numbering);
                rest = &rest[1..];
                continue;
            }
            let mut size = rest[0].len();
            let count = 1 + rest[1..]
                .iter()
                .take_while(|snapshot| {
                    size += snapshot.len() + 1;
                    size <= self.change_bytes
                })
                .count();
            let (chunk, after) = rest.split_at(count);
            numbering.publish(manager, Topic::OddsChanges, |offset| {
                encode_odds_change(source, chunk, offset)
            });
            rest = after;
        }
    }
}

/// Publishes on `topic` an `odds_update` of `event_ids`.
fn publish_update(
    manager: &ConnectionManager,
    topic: Topic,
    source: &str,
    event_ids: &[u64],
    numbering: &mut Numbering,
) {
    let receivers = numbering.publish(manager, topic, |offset| {
        encode(&ServerMessage::OddsUpdate {
            data: OddsUpdate {
                event_ids,
                source,
                count: event_ids.len(),
            },
            offset,
        })
    });
    tracing::debug!(
        event = "cache.update",
        topic = topic.name(),
        source,
        count = event_ids.len(),
        receivers,
        "published odds_update"
    );
}

/// Changes grouped per source, both in order of first appearance, ids distinct, each with
/// its latest snapshot.
#[derive(Debug)]
struct Merged {
    groups: Vec<SourceChanges>,
    /// Most bytes of snapshots in one `odds_change`.
    change_bytes: usize,
}

#[derive(Debug)]
struct SourceChanges {
    source: Arc<str>,
    event_ids: Vec<u64>,
    snapshots: Vec<Bytes>,
    /// Where each id sits in `event_ids`, so a merge stays linear in the ids added and a
    /// later snapshot of an event replaces the earlier one.
    index: HashMap<u64, usize>,
}

impl Merged {
    fn new(change_bytes: usize) -> Merged {
        Merged {
            groups: Vec::new(),
            change_bytes,
        }
    }

    fn add(&mut self, source: Arc<str>, event_ids: Vec<u64>, snapshots: Vec<Bytes>) {
        // A batch holds a handful of sources: a linear scan beats hashing the name.
        let group = match self.groups.iter().position(|g| g.source == source) {
            Some(at) => &mut self.groups[at],
            None => {
                self.groups.push(SourceChanges {
                    source,
                    event_ids: Vec::with_capacity(event_ids.len()),
                    snapshots: Vec::with_capacity(snapshots.len()),
                    index: HashMap::with_capacity(event_ids.len()),
                });
                let last = self.groups.len() - 1;
                &mut self.groups[last]
            }
        };
        for (id, snapshot) in event_ids.into_iter().zip(snapshots) {
            match group.index.get(&id) {
                Some(&at) => group.snapshots[at] = snapshot,
                None => {
                    group.index.insert(id, group.event_ids.len());
                    group.event_ids.push(id);
                    group.snapshots.push(snapshot);
                }
            }
        }
    }

    /// Publishes each source's changes and starts over.
    fn publish(&mut self, manager: &ConnectionManager, numbering: &mut Numbering) {
        for group in self.groups.drain(..) {
            let (ids, snapshots) = (&group.event_ids, &group.snapshots);
            let odds = Odds::new(&group.source, ids, snapshots, self.change_bytes);
            odds.publish(manager, numbering);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_first_appearance_order_distinct_ids_and_latest_snapshots() {
        let mut merged = Merged::new(MAX_CHANGE_BYTES);
        let a: Arc<str> = Arc::from("betpawa");
        let b: Arc<str> = Arc::from("sportybet");
        let json = |text: &'static str| Bytes::from_static(text.as_bytes());
        merged.add(a.clone(), vec![3, 1], vec![json("3a"), json("1a")]);
        merged.add(b.clone(), vec![9], vec![json("9a")]);
        merged.add(
            a.clone(),
            vec![1, 2, 3, 4],
            vec![json("1b"), json("2a"), json("3b"), json("4a")],
        );
        let groups: Vec<_> = merged
            .groups
            .iter()
            .map(|g| (g.source.clone(), g.event_ids.clone(), g.snapshots.clone()))
            .collect();
        assert_eq!(
            groups,
            vec![
                (
                    a,
                    vec![3, 1, 2, 4],
                    vec![json("3b"), json("1b"), json("2a"), json("4a")]
                ),
                (b, vec![9], vec![json("9a")]),
            ]
        );
    }
}
