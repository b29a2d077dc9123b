//! The dispatcher, and the cache-update bridge that feeds it.
//!
//! The bridge is an OddsCache callback that only pushes onto an unbounded channel: it runs on
//! the writer's thread, so it must never do I/O or wait. The dispatcher is the one task that
//! drains that channel. Each time it wakes it takes everything queued at that moment, merges
//! the changed event ids per source, encodes each `odds_update` once and publishes it on the
//! `odds_updates` topic.
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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bucket::TokenBucket;
use crate::cache::OddsCache;
use crate::config::Config;
use crate::manager::ConnectionManager;
use crate::protocol::{encode, OddsUpdate, ScrapeProgress, ServerMessage, Topic};

/// Most event ids in one `odds_update`. An id takes at most 17 bytes of JSON (2^53 - 1 and a
/// comma), so a frame stays under 64 KiB: clients whose libraries refuse larger frames
/// (Python's `websockets` refuses 1 MiB by default) are never disconnected by a flood.
pub const MAX_IDS_PER_UPDATE: usize = 3_500;

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
        /// Where they came from.
        source: Arc<str>,
    },
    /// A scrape run made progress.
    ScrapeProgress(ScrapeProgress),
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
    cache.on_update(move |event_ids, source| {
        let event = BusEvent::OddsChanged {
            event_ids: event_ids.to_vec(),
            source: Arc::from(source),
        };
        if bus.send(event).is_err() {
            tracing::debug!(
                event = "cache.update_dropped",
                source,
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

/// How the dispatcher groups what it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalescing {
    /// Merge the ids of all queued changes per source into one message (the default), and
    /// under sustained load publish at most once per `window` (zero: never wait).
    PerSource {
        /// Shortest time between two publications once a burst is spent.
        window: Duration,
    },
    /// One message per put, as the original design did; kept to measure the difference.
    Off,
}

impl Coalescing {
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
pub async fn run_dispatcher(
    mut queue: BusReceiver,
    manager: ConnectionManager,
    coalescing: Coalescing,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(64);
    let mut last_publication = Instant::now();
    // Paces publications once a burst is spent; none with a zero window or coalescing off.
    let mut pacer = match coalescing {
        Coalescing::PerSource { window } if !window.is_zero() => {
            Some(TokenBucket::new(window, BURST, Instant::now()))
        }
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
                dispatch(&mut batch, &manager, coalescing);
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
        dispatch(&mut batch, &manager, coalescing);
        last_publication = Instant::now();
    }
    tracing::debug!(event = "dispatcher.stopped");
}

/// Under sustained load, waits before the next publication: `wait` (from the pacer), then
/// until subscribers have taken the previous `odds_update`, then until [`DUTY_CYCLE_FACTOR`]
/// times as long as they needed has passed since it. Never past `wait + MAX_STRETCH`.
async fn gather(last_publication: Instant, wait: Duration, manager: &ConnectionManager) {
    let start = tokio::time::Instant::now();
    let deadline = start + wait + MAX_STRETCH;
    tokio::time::sleep(wait).await;
    while manager.backlog(Topic::OddsUpdates) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fan_out = last_publication.elapsed();
    let resume = tokio::time::Instant::from_std(last_publication + DUTY_CYCLE_FACTOR * fan_out);
    tokio::time::sleep_until(resume.min(deadline)).await;
}

/// Moves everything queued right now into `batch`.
fn drain(queue: &mut BusReceiver, batch: &mut Vec<BusEvent>) {
    while let Ok(event) = queue.try_recv() {
        batch.push(event);
    }
}

/// Publishes one drained batch and empties it. Odds changes queued before a scrape-progress
/// step are published before it, so `completed` never overtakes the run's own updates.
fn dispatch(batch: &mut Vec<BusEvent>, manager: &ConnectionManager, coalescing: Coalescing) {
    let mut merged = Merged::default();
    for event in batch.drain(..) {
        match event {
            BusEvent::OddsChanged { event_ids, source } => match coalescing {
                Coalescing::PerSource { .. } => merged.add(source, &event_ids),
                Coalescing::Off => publish_odds(manager, &source, &event_ids),
            },
            BusEvent::ScrapeProgress(progress) => {
                merged.publish(manager);
                manager.publish(Topic::ScrapeProgress, |offset| {
                    encode(&ServerMessage::ScrapeProgress {
                        data: &progress,
                        offset,
                    })
                });
            }
        }
    }
    merged.publish(manager);
}

/// Publishes `event_ids` in as many `odds_update`s as [`MAX_IDS_PER_UPDATE`] needs.
fn publish_odds(manager: &ConnectionManager, source: &str, event_ids: &[u64]) {
    for chunk in event_ids.chunks(MAX_IDS_PER_UPDATE) {
        publish_update(manager, source, chunk);
    }
}

fn publish_update(manager: &ConnectionManager, source: &str, event_ids: &[u64]) {
    let (_, receivers) = manager.publish(Topic::OddsUpdates, |offset| {
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
        source,
        count = event_ids.len(),
        receivers,
        "published odds_update"
    );
}

/// Changed ids grouped per source, both in order of first appearance, ids distinct.
#[derive(Debug, Default)]
struct Merged {
    groups: Vec<(Arc<str>, Vec<u64>)>,
    /// Ids already in each group (same index), so a merge stays linear in the ids added.
    seen: Vec<HashSet<u64>>,
}

impl Merged {
    fn add(&mut self, source: Arc<str>, event_ids: &[u64]) {
        // A batch holds a handful of sources: a linear scan beats hashing the name.
        let index = match self.groups.iter().position(|(s, _)| *s == source) {
            Some(index) => index,
            None => {
                self.groups
                    .push((source, Vec::with_capacity(event_ids.len())));
                self.seen.push(HashSet::with_capacity(event_ids.len()));
                self.groups.len() - 1
            }
        };
        let (ids, seen) = (&mut self.groups[index].1, &mut self.seen[index]);
        ids.extend(event_ids.iter().copied().filter(|id| seen.insert(*id)));
    }

    /// Publishes one message per source and starts over.
    fn publish(&mut self, manager: &ConnectionManager) {
        for (source, event_ids) in self.groups.drain(..) {
            publish_odds(manager, &source, &event_ids);
        }
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_first_appearance_order_and_distinct_ids() {
        let mut merged = Merged::default();
        let a: Arc<str> = Arc::from("betpawa");
        let b: Arc<str> = Arc::from("sportybet");
        merged.add(a.clone(), &[3, 1]);
        merged.add(b.clone(), &[9]);
        merged.add(a.clone(), &[1, 2, 3, 4]);
        assert_eq!(merged.groups, vec![(a, vec![3, 1, 2, 4]), (b, vec![9])]);
    }
}
