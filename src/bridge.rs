//! The cache-update bridge and the dispatcher.
//!
//! The bridge is an OddsCache callback that only pushes onto an unbounded channel: it runs on
//! the writer's thread, so it must never do I/O or wait. The dispatcher is the one task that
//! drains that channel. Each time it wakes it takes everything queued at that moment (and
//! never waits for more, so an idle broker adds no latency), merges the changed event ids per
//! source, encodes each `odds_update` once and publishes it on the `odds_updates` topic. Under
//! a burst, many puts therefore leave as few frames; when idle, each put leaves at once.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::OddsCache;
use crate::manager::ConnectionManager;
use crate::protocol::{encode, OddsUpdate, ScrapeProgress, ServerMessage, Topic};

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

/// How the dispatcher groups what it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalescing {
    /// Merge the ids of all queued changes per source into one message (the default).
    PerSource,
    /// One message per put, as the original design did; kept to measure the difference.
    Off,
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
    loop {
        tokio::select! {
            biased;
            received = queue.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break; // every sender is gone
                }
            }
            () = stop.cancelled() => {
                while let Ok(event) = queue.try_recv() {
                    batch.push(event);
                }
                dispatch(&mut batch, &manager, coalescing);
                break;
            }
        }
        dispatch(&mut batch, &manager, coalescing);
    }
    tracing::debug!(event = "dispatcher.stopped");
}

/// Publishes one drained batch and empties it. Odds changes queued before a scrape-progress
/// step are published before it, so `completed` never overtakes the run's own updates.
fn dispatch(batch: &mut Vec<BusEvent>, manager: &ConnectionManager, coalescing: Coalescing) {
    let mut merged = Merged::default();
    for event in batch.drain(..) {
        match event {
            BusEvent::OddsChanged { event_ids, source } => match coalescing {
                Coalescing::PerSource => merged.add(source, &event_ids),
                Coalescing::Off => publish_odds(manager, &source, &event_ids),
            },
            BusEvent::ScrapeProgress(progress) => {
                merged.publish(manager);
                let frame = encode(&ServerMessage::ScrapeProgress { data: &progress });
                manager.publish(Topic::ScrapeProgress, frame);
            }
        }
    }
    merged.publish(manager);
}

fn publish_odds(manager: &ConnectionManager, source: &str, event_ids: &[u64]) {
    let frame = encode(&ServerMessage::OddsUpdate {
        data: OddsUpdate {
            event_ids,
            source,
            count: event_ids.len(),
        },
    });
    let receivers = manager.publish(Topic::OddsUpdates, frame);
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
