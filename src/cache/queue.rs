//! What the cache's callbacks hand the worker that reacts to changes off the hot path (the
//! price history and the odds analysis): the latest snapshot of each event and source not yet
//! taken, and the events the cache dropped, in order; and [`spawn_worker`], the thread that
//! takes them, parsing each snapshot once for all who read it.
//!
//! A snapshot that arrives while an older one of the same event and source waits takes its
//! place, so the queue holds at most one snapshot per event and source (shared bytes, as
//! the cache stores them) however far the worker falls behind: it then sees fewer steps,
//! never more memory.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Changes, OddsCache};
use crate::protocol::Timestamp;

/// How long the worker lets changes gather after it is woken: a busy broker then wakes its
/// thread a few times a second, not once per ingest, which cost the batch-1 fan-out
/// (BENCHMARKS.md, "Bounded by bytes").
const GATHER: Duration = Duration::from_millis(20);

/// Registers callbacks that queue every change and eviction of `cache`, and starts the
/// thread `name` that hands each job to `work`, in order, each snapshot parsed once. Woken by
/// the callbacks, it first lets a burst gather for [`GATHER`]. It runs as long as the cache.
/// One worker serves every reader: each more would cost every ingest a callback and every
/// snapshot a parse (BENCHMARKS.md, "One parse for the price history and the analysis").
pub fn spawn_worker(
    cache: &OddsCache,
    name: &str,
    mut work: impl FnMut(Job<'_>) + Send + 'static,
) -> std::io::Result<()> {
    // A wake-up, not the data: the data waits in the queue. The channel closes when the
    // cache, and with it the callbacks, is gone.
    let queue = Arc::new(Mutex::new(Queue::default()));
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let (queued, waker) = (queue.clone(), wake.clone());
    cache.on_update(move |changes: Changes<'_>| {
        let source = Arc::from(changes.source);
        let mut queue = queued.lock();
        for (event_id, json) in changes.event_ids.iter().zip(changes.snapshots) {
            queue.record(*event_id, &source, json.clone());
        }
        drop(queue);
        let _ = waker.try_send(());
    });
    let queued = queue.clone();
    cache.on_evict(move |event_ids| {
        queued.lock().forget(event_ids);
        let _ = wake.try_send(());
    });
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            yield_to_the_push();
            while woken.blocking_recv().is_some() {
                std::thread::sleep(GATHER);
                // One job at a time, so that the worker's readers wait for one at most.
                loop {
                    let queued = queue.lock().pop();
                    match queued {
                        None => break,
                        Some(Queued::Forget(event_ids)) => work(Job::Forget(&event_ids)),
                        Some(Queued::Record {
                            event_id,
                            source,
                            json,
                        }) => {
                            let Ok(prices) = serde_json::from_slice::<Prices>(&json) else {
                                continue; // the cache's own encoding: cannot happen
                            };
                            work(Job::Record {
                                event_id,
                                source: &source,
                                prices: &prices,
                            });
                        }
                    }
                }
            }
        })
        .map(drop)
}

/// A stored snapshot's prices, as a worker reads them from its JSON.
#[derive(Debug, Deserialize)]
pub struct Prices<'a> {
    /// When they were seen.
    pub captured_at: Timestamp,
    /// The markets.
    #[serde(borrow)]
    pub markets: Vec<MarketPrices<'a>>,
}

/// One market's prices.
#[derive(Debug, Deserialize)]
pub struct MarketPrices<'a> {
    /// The market's id.
    #[serde(borrow)]
    pub market_id: Cow<'a, str>,
    /// Its line, if it has one.
    pub line: Option<f64>,
    /// Its outcomes.
    #[serde(borrow)]
    pub outcomes: Vec<OutcomePrice<'a>>,
}

/// One outcome's price.
#[derive(Debug, Deserialize)]
pub struct OutcomePrice<'a> {
    /// The outcome's name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Its decimal odds.
    pub odds: f64,
}

/// Lowers the calling thread's scheduling priority to the least (nice 19): a worker uses the
/// cores the fan-out leaves idle, and under a flood it falls behind (its queue keeps only the
/// latest snapshot of each event and source) instead of taking a core from the push.
fn yield_to_the_push() {
    // SAFETY: gettid and setpriority take no pointers; on failure the thread keeps its
    // priority, which is only slower for the push.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// Something for the worker's readers to do.
#[derive(Debug)]
pub enum Job<'a> {
    /// Take in this snapshot's prices, the latest of its event and source.
    Record {
        event_id: u64,
        source: &'a Arc<str>,
        prices: &'a Prices<'a>,
    },
    /// Forget these events: the cache dropped them.
    Forget(&'a [u64]),
}

/// A job as it waits: the snapshot still in the cache's bytes.
#[derive(Debug)]
enum Queued {
    Record {
        event_id: u64,
        source: Arc<str>,
        json: Bytes,
    },
    Forget(Vec<u64>),
}

/// The queue; see the module's documentation.
#[derive(Debug, Default)]
struct Queue {
    /// What to do, in order. A `Record` slot whose `seq` no longer matches its waiting
    /// snapshot is stale (that snapshot was forgotten) and is skipped.
    order: VecDeque<Slot>,
    /// The waiting snapshots per event: source, the `seq` of their slot, the JSON.
    waiting: HashMap<u64, Vec<(Arc<str>, u64, Bytes)>>,
    /// Snapshots waiting, so that stale slots can be dropped before they pile up.
    live: usize,
    next: u64,
}

#[derive(Debug)]
enum Slot {
    Record(u64, u64),
    Forget(Vec<u64>),
}

impl Queue {
    /// Queues the snapshot of `event_id` from `source`, replacing one still waiting.
    fn record(&mut self, event_id: u64, source: &Arc<str>, json: Bytes) {
        let waiting = self.waiting.entry(event_id).or_default();
        if let Some((_, _, pending)) = waiting.iter_mut().find(|(s, _, _)| s == source) {
            *pending = json;
            return;
        }
        self.next += 1;
        waiting.push((source.clone(), self.next, json));
        self.order.push_back(Slot::Record(event_id, self.next));
        self.live += 1;
    }

    /// Queues forgetting `event_ids`; their waiting snapshots are dropped now.
    fn forget(&mut self, event_ids: &[u64]) {
        for event_id in event_ids {
            if let Some(dropped) = self.waiting.remove(event_id) {
                self.live -= dropped.len();
            }
        }
        match self.order.back_mut() {
            Some(Slot::Forget(ids)) => ids.extend_from_slice(event_ids),
            _ => self.order.push_back(Slot::Forget(event_ids.to_vec())),
        }
        if self.order.len() > 2 * self.live + 1024 {
            self.compact();
        }
    }

    /// The next job, if any.
    fn pop(&mut self) -> Option<Queued> {
        while let Some(slot) = self.order.pop_front() {
            let (event_id, seq) = match slot {
                Slot::Forget(ids) => return Some(Queued::Forget(ids)),
                Slot::Record(event_id, seq) => (event_id, seq),
            };
            let Some(waiting) = self.waiting.get_mut(&event_id) else {
                continue; // forgotten since
            };
            let Some(at) = waiting.iter().position(|&(_, s, _)| s == seq) else {
                continue; // forgotten, then queued again under a later slot
            };
            let (source, _, json) = waiting.swap_remove(at);
            if waiting.is_empty() {
                self.waiting.remove(&event_id);
            }
            self.live -= 1;
            return Some(Queued::Record {
                event_id,
                source,
                json,
            });
        }
        None
    }

    /// Drops the slots of snapshots forgotten while they waited, and merges the forgets that
    /// then follow each other.
    fn compact(&mut self) {
        let mut order = VecDeque::with_capacity(2 * self.live + 1);
        for slot in self.order.drain(..) {
            match (slot, order.back_mut()) {
                (Slot::Forget(ids), Some(Slot::Forget(before))) => before.extend(ids),
                (Slot::Record(event_id, seq), _) => {
                    let live = self.waiting.get(&event_id);
                    if live.is_some_and(|w| w.iter().any(|&(_, s, _)| s == seq)) {
                        order.push_back(Slot::Record(event_id, seq));
                    }
                }
                (forget, _) => order.push_back(forget),
            }
        }
        self.order = order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(job: Option<Queued>) -> (u64, String, Bytes) {
        match job {
            Some(Queued::Record {
                event_id,
                source,
                json,
            }) => (event_id, source.to_string(), json),
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn the_latest_snapshot_per_event_and_source_waits_in_the_first_ones_place() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("betpawa"), Arc::from("bet9ja"));
        let mut queue = Queue::default();
        queue.record(1, &a, Bytes::from_static(b"1a"));
        queue.record(2, &a, Bytes::from_static(b"2a"));
        queue.record(1, &b, Bytes::from_static(b"1b"));
        queue.record(1, &a, Bytes::from_static(b"1a'"));
        assert_eq!(
            recorded(queue.pop()),
            (1, "betpawa".into(), Bytes::from_static(b"1a'"))
        );
        assert_eq!(recorded(queue.pop()).0, 2);
        assert_eq!(recorded(queue.pop()).1, "bet9ja");
        assert!(queue.pop().is_none());
    }

    #[test]
    fn forgetting_drops_what_waits_and_keeps_the_order_of_what_follows() {
        let a: Arc<str> = Arc::from("betpawa");
        let mut queue = Queue::default();
        queue.record(1, &a, Bytes::from_static(b"old"));
        queue.forget(&[1]);
        queue.record(1, &a, Bytes::from_static(b"new"));
        assert!(matches!(queue.pop(), Some(Queued::Forget(ids)) if ids == [1]));
        assert_eq!(recorded(queue.pop()).2, Bytes::from_static(b"new"));
        assert!(queue.pop().is_none());
    }

    #[test]
    fn stale_slots_do_not_pile_up() {
        let a: Arc<str> = Arc::from("betpawa");
        let mut queue = Queue::default();
        for round in 0..10_000u64 {
            queue.record(round, &a, Bytes::new());
            queue.forget(&[round]);
        }
        assert!(queue.order.len() < 1_100, "{}", queue.order.len());
    }
}
