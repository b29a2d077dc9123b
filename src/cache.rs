//! The OddsCache: the latest odds snapshot of every event from every source, in memory.
//!
//! Writers are the ingest endpoint and scrape runs; readers are the cache-first HTTP reads.
//! Whenever a put stores something new, the registered update callbacks are told which event
//! ids changed and from which source. That is how the broker learns about changes: the
//! cache-update bridge (`bridge.rs`) is one such callback.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::protocol::{Timestamp, HOME_SOURCE};

/// One selectable result of a market and its decimal price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// e.g. `"1"`, `"X"`, `"Over"`.
    pub name: String,
    /// Decimal odds.
    pub odds: f64,
}

/// One market of an event, e.g. 1X2 or over/under 2.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Market {
    /// Stable id of the market kind, e.g. `"1x2"`.
    pub market_id: String,
    /// Display name.
    pub name: String,
    /// The handicap or total line, for markets that have one.
    #[serde(default)]
    pub line: Option<f64>,
    /// The prices.
    pub outcomes: Vec<Outcome>,
}

/// What a source says about one event at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The bookmaker's own id for the event, where it has one.
    pub bookmaker_id: Option<i64>,
    /// When the odds were read at the source.
    pub captured_at: Timestamp,
    /// Every market offered.
    pub markets: Vec<Market>,
}

/// A snapshot as the cache holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSnapshot {
    /// Assigned by the cache, increasing; a new id means the markets changed.
    pub snapshot_id: u64,
    /// The event the snapshot is about.
    pub event_id: u64,
    /// The stored data.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// One row of `GET /api/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSummary {
    /// The event.
    pub event_id: u64,
    /// Sources that have a snapshot of it: the home bookmaker first, then competitors by name.
    pub sources: Vec<Arc<str>>,
    /// When the cache last stored a snapshot of it.
    pub updated_at: Timestamp,
}

/// Every snapshot of one event: the body of `GET /api/events/{id}/odds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventOdds {
    /// The event.
    pub event_id: u64,
    /// The home bookmaker's snapshot, if it has one.
    pub betpawa: Option<StoredSnapshot>,
    /// Each competitor's snapshot, by source name.
    pub competitors: BTreeMap<Arc<str>, StoredSnapshot>,
}

/// What one put call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Snapshots stored (changed or refreshed).
    pub accepted: usize,
    /// Distinct ids whose snapshot was new or whose markets differed, in order of first change.
    pub changed: Vec<u64>,
}

/// A synchronous update callback: `(changed event ids, source)`.
pub type UpdateCallback = Arc<dyn Fn(&[u64], &str) + Send + Sync>;

#[derive(Debug)]
struct EventEntry {
    /// One snapshot per source. A vector, not a map: an event has a handful of sources, and
    /// a `BTreeMap`'s first node alone takes about 1 KiB.
    by_source: Vec<(Arc<str>, StoredSnapshot)>,
    updated_at: Timestamp,
}

/// The in-memory odds store. Cheap to clone: clones share the same data.
#[derive(Clone, Default)]
pub struct OddsCache {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// The data. A `parking_lot` lock is never poisoned, and it is never held across an
    /// `.await` or while callbacks run, so plain blocking locks are the right tool.
    events: RwLock<HashMap<u64, EventEntry>>,
    /// Registered update callbacks, called in registration order.
    callbacks: RwLock<Vec<UpdateCallback>>,
    /// Source of `snapshot_id`s.
    next_snapshot_id: AtomicU64,
}

impl std::fmt::Debug for OddsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OddsCache")
            .field("events", &self.shared.events.read().len())
            .field("callbacks", &self.shared.callbacks.read().len())
            .finish()
    }
}

impl OddsCache {
    /// An empty cache.
    pub fn new() -> OddsCache {
        OddsCache::default()
    }

    /// Registers a callback told of every changed put, after the data is stored and with no
    /// lock held. It runs on the writer's thread, so it must be quick and must not block:
    /// hand the work to a task instead. A callback that panics is logged and skipped.
    pub fn on_update(&self, callback: impl Fn(&[u64], &str) + Send + Sync + 'static) {
        self.shared.callbacks.write().push(Arc::new(callback));
    }

    /// Stores the home bookmaker's snapshot of one event.
    pub fn put_betpawa_snapshot(
        &self,
        event_id: u64,
        bookmaker_id: i64,
        mut snapshot: Snapshot,
    ) -> PutOutcome {
        snapshot.bookmaker_id = Some(bookmaker_id);
        self.put_batch(HOME_SOURCE, vec![(event_id, snapshot)])
    }

    /// Stores a competitor's snapshot of one event.
    pub fn put_competitor_snapshot(
        &self,
        event_id: u64,
        source: &str,
        snapshot: Snapshot,
    ) -> PutOutcome {
        self.put_batch(source, vec![(event_id, snapshot)])
    }

    /// Stores many snapshots from one source atomically: readers see all of them or none,
    /// and the callbacks run once with every changed id. If an event appears twice, the later
    /// snapshot wins.
    pub fn put_batch(&self, source: &str, snapshots: Vec<(u64, Snapshot)>) -> PutOutcome {
        let outcome = self.store(source, snapshots);
        if !outcome.changed.is_empty() {
            self.notify(&outcome.changed, source);
        }
        outcome
    }

    fn store(&self, source: &str, snapshots: Vec<(u64, Snapshot)>) -> PutOutcome {
        let source: Arc<str> = Arc::from(source);
        let now = Timestamp::now();
        let mut changed = Vec::new();
        // Distinct ids in a batch; `changed` keeps their order.
        let mut seen = HashSet::new();
        let mut accepted = 0;
        let mut events = self.shared.events.write();
        for (event_id, snapshot) in snapshots {
            accepted += 1;
            let entry = events.entry(event_id).or_insert_with(|| EventEntry {
                by_source: Vec::new(),
                updated_at: now,
            });
            entry.updated_at = now;
            match entry.by_source.iter_mut().find(|(name, _)| *name == source) {
                Some((_, stored)) if stored.snapshot.markets == snapshot.markets => {
                    stored.snapshot.captured_at = snapshot.captured_at;
                    stored.snapshot.bookmaker_id = snapshot.bookmaker_id;
                    continue;
                }
                Some((_, stored)) => *stored = self.numbered(event_id, snapshot),
                None => {
                    let stored = self.numbered(event_id, snapshot);
                    entry.by_source.push((source.clone(), stored));
                }
            }
            if seen.insert(event_id) {
                changed.push(event_id);
            }
        }
        PutOutcome { accepted, changed }
    }

    /// A changed snapshot, stored under the next `snapshot_id`.
    fn numbered(&self, event_id: u64, snapshot: Snapshot) -> StoredSnapshot {
        StoredSnapshot {
            snapshot_id: self.shared.next_snapshot_id.fetch_add(1, Ordering::Relaxed) + 1,
            event_id,
            snapshot,
        }
    }

    fn notify(&self, event_ids: &[u64], source: &str) {
        // Clone the list so that no lock is held while callbacks run (one may register another).
        let callbacks = self.shared.callbacks.read().clone();
        for callback in callbacks {
            let result = catch_unwind(AssertUnwindSafe(|| callback(event_ids, source)));
            if result.is_err() {
                tracing::error!(
                    event = "cache.callback_panicked",
                    source,
                    count = event_ids.len(),
                    "an update callback panicked; the other callbacks still ran"
                );
            }
        }
    }

    /// Every cached event, by id.
    pub fn events(&self) -> Vec<EventSummary> {
        let events = self.shared.events.read();
        let mut summaries: Vec<EventSummary> = events
            .iter()
            .map(|(&event_id, entry)| EventSummary {
                event_id,
                sources: home_first(entry.by_source.iter().map(|(name, _)| name.clone())),
                updated_at: entry.updated_at,
            })
            .collect();
        drop(events);
        summaries.sort_unstable_by_key(|s| s.event_id);
        summaries
    }

    /// Every snapshot of one event, or `None` if the cache has never seen it.
    pub fn event_odds(&self, event_id: u64) -> Option<EventOdds> {
        let events = self.shared.events.read();
        let entry = events.get(&event_id)?;
        let mut competitors: BTreeMap<Arc<str>, StoredSnapshot> =
            entry.by_source.iter().cloned().collect();
        let betpawa = competitors.remove(HOME_SOURCE);
        Some(EventOdds {
            event_id,
            betpawa,
            competitors,
        })
    }

    /// Number of events cached.
    pub fn len(&self) -> usize {
        self.shared.events.read().len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn home_first(sources: impl Iterator<Item = Arc<str>>) -> Vec<Arc<str>> {
    let mut sorted: Vec<Arc<str>> = sources.collect();
    sorted.sort_by_key(|s| (&**s != HOME_SOURCE, s.clone()));
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn snapshot(price: f64) -> Snapshot {
        Snapshot {
            bookmaker_id: None,
            captured_at: Timestamp::now(),
            markets: vec![Market {
                market_id: "1x2".into(),
                name: "1X2".into(),
                line: None,
                outcomes: vec![Outcome {
                    name: "1".into(),
                    odds: price,
                }],
            }],
        }
    }

    #[test]
    fn unchanged_put_only_refreshes_captured_at() {
        let cache = OddsCache::new();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        cache.on_update(move |ids, source| {
            seen.lock().unwrap().push((ids.to_vec(), source.to_owned()))
        });

        let first = cache.put_competitor_snapshot(7, "sportybet", snapshot(2.0));
        assert_eq!(first.changed, vec![7]);
        let id_before = cache.event_odds(7).unwrap().competitors["sportybet"].snapshot_id;

        let mut again = snapshot(2.0);
        again.captured_at = Timestamp::parse("2030-01-01T00:00:00Z").unwrap();
        let second = cache.put_competitor_snapshot(7, "sportybet", again);
        assert_eq!(
            second,
            PutOutcome {
                accepted: 1,
                changed: vec![]
            }
        );

        let stored = &cache.event_odds(7).unwrap().competitors["sportybet"];
        assert_eq!(stored.snapshot_id, id_before);
        assert_eq!(
            stored.snapshot.captured_at.to_string(),
            "2030-01-01T00:00:00.000Z"
        );
        assert_eq!(
            calls.lock().unwrap().len(),
            1,
            "no callback for an unchanged put"
        );
    }

    #[test]
    fn batch_reports_distinct_changed_ids_once() {
        let cache = OddsCache::new();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        cache.on_update(move |ids, _| seen.lock().unwrap().push(ids.to_vec()));
        cache.put_batch(HOME_SOURCE, vec![(1, snapshot(2.0))]);
        let outcome = cache.put_batch(
            HOME_SOURCE,
            vec![
                (3, snapshot(2.0)),
                (1, snapshot(2.0)),
                (2, snapshot(1.5)),
                (3, snapshot(1.9)),
            ],
        );
        assert_eq!(outcome.accepted, 4);
        assert_eq!(outcome.changed, vec![3, 2]);
        assert_eq!(*calls.lock().unwrap(), vec![vec![1], vec![3, 2]]);
        assert_eq!(
            cache
                .event_odds(3)
                .unwrap()
                .betpawa
                .unwrap()
                .snapshot
                .markets[0]
                .outcomes[0]
                .odds,
            1.9
        );
    }

    #[test]
    fn sources_list_the_home_bookmaker_first() {
        let cache = OddsCache::new();
        cache.put_competitor_snapshot(1, "bet9ja", snapshot(2.0));
        cache.put_competitor_snapshot(1, "sportybet", snapshot(2.0));
        cache.put_betpawa_snapshot(1, 55, snapshot(2.0));
        let events = cache.events();
        let names: Vec<&str> = events[0].sources.iter().map(|s| &**s).collect();
        assert_eq!(names, ["betpawa", "bet9ja", "sportybet"]);
        assert_eq!(
            cache
                .event_odds(1)
                .unwrap()
                .betpawa
                .unwrap()
                .snapshot
                .bookmaker_id,
            Some(55)
        );
    }
}
