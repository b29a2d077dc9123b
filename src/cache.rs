//! The OddsCache: the latest odds snapshot of every event from every source, in memory.
//!
//! Writers are the ingest endpoint and scrape runs; readers are the cache-first HTTP reads.
//! Whenever a put stores something new, the registered update callbacks are told which event
//! ids changed and from which source. That is how the broker learns about changes: the
//! cache-update bridge (`dispatcher.rs`) is one such callback.
//!
//! The cache is bounded. It holds at most `max_events` events: when a new one arrives and it
//! is full, the event updated longest ago is evicted. An event with no update for `ttl` is
//! dropped (finished matches stop being scraped and leave). Either way, its reads answer 404.
//! A snapshot older than the one stored for its event and source is stale: not applied, not
//! notified, counted.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Deserializer, Serialize};

use crate::protocol::{Timestamp, HOME_SOURCE};

/// A market or outcome name, shared by every snapshot that uses it (see [`intern`]).
pub type Name = Arc<str>;

/// One selectable result of a market and its decimal price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// e.g. `"1"`, `"X"`, `"Over"`.
    #[serde(deserialize_with = "interned")]
    pub name: Name,
    /// Decimal odds.
    pub odds: f64,
}

/// One market of an event, e.g. 1X2 or over/under 2.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Market {
    /// Stable id of the market kind, e.g. `"1x2"`.
    #[serde(deserialize_with = "interned")]
    pub market_id: Name,
    /// Display name.
    #[serde(deserialize_with = "interned")]
    pub name: Name,
    /// The handicap or total line, for markets that have one.
    #[serde(default)]
    pub line: Option<f64>,
    /// The prices.
    pub outcomes: Vec<Outcome>,
}

/// Most distinct names kept for sharing. Past it names are still stored, each on its own,
/// so a client sending endless new names costs memory per snapshot, not in the table.
const MAX_INTERNED: usize = 4096;

/// The shared copy of `name`. A market has the same few names in every event and from every
/// source ("1x2", "Over", ...): sharing them saves two allocations per name and snapshot.
pub fn intern(name: &str) -> Name {
    static NAMES: OnceLock<Mutex<HashSet<Name>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock();
    if let Some(shared) = names.get(name) {
        return shared.clone();
    }
    let shared = Name::from(name);
    if names.len() < MAX_INTERNED {
        names.insert(shared.clone());
    }
    shared
}

fn interned<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
    Cow::<str>::deserialize(deserializer).map(|name| intern(&name))
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
    /// Snapshots older than the one stored for their event and source: not applied.
    pub stale: usize,
}

/// How much the cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most events held; a new one evicts the event updated longest ago.
    pub max_events: usize,
    /// How long an event without an update stays.
    pub ttl: Duration,
}

impl Default for CacheLimits {
    /// 100,000 events, 24 hours: `--max-events` and `--event-ttl`.
    fn default() -> CacheLimits {
        CacheLimits {
            max_events: 100_000,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Events removed so far, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// To make room for a new event (`--max-events`).
    pub capacity: u64,
    /// After no update for the TTL (`--event-ttl`).
    pub ttl: u64,
}

/// A synchronous update callback: `(changed event ids, source)`.
pub type UpdateCallback = Arc<dyn Fn(&[u64], &str) + Send + Sync>;

#[derive(Debug)]
struct EventEntry {
    /// One snapshot per source. A vector, not a map: an event has a handful of sources, and
    /// a `BTreeMap`'s first node alone takes about 1 KiB.
    by_source: Vec<(Arc<str>, StoredSnapshot)>,
    updated_at: Timestamp,
    /// When it was last updated, for the TTL (the wall clock may jump; this does not).
    touched: Instant,
}

/// The in-memory odds store. Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct OddsCache {
    shared: Arc<Shared>,
}

struct Shared {
    /// The data, least recently updated first. A `parking_lot` lock is never poisoned, and
    /// it is never held across an `.await` or while callbacks run, so plain blocking locks
    /// are the right tool.
    events: RwLock<LruCache<u64, EventEntry>>,
    limits: CacheLimits,
    /// Registered update callbacks, called in registration order.
    callbacks: RwLock<Vec<UpdateCallback>>,
    /// Source of `snapshot_id`s.
    next_snapshot_id: AtomicU64,
    evicted_capacity: AtomicU64,
    evicted_ttl: AtomicU64,
}

impl std::fmt::Debug for OddsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OddsCache")
            .field("events", &self.len())
            .field("limits", &self.shared.limits)
            .field("callbacks", &self.shared.callbacks.read().len())
            .finish()
    }
}

impl Default for OddsCache {
    fn default() -> OddsCache {
        OddsCache::new()
    }
}

impl OddsCache {
    /// An empty cache with the default limits.
    pub fn new() -> OddsCache {
        OddsCache::with_limits(CacheLimits::default())
    }

    /// An empty cache holding at most what `limits` allows.
    pub fn with_limits(limits: CacheLimits) -> OddsCache {
        OddsCache {
            shared: Arc::new(Shared {
                events: RwLock::new(LruCache::unbounded()),
                limits,
                callbacks: RwLock::default(),
                next_snapshot_id: AtomicU64::new(0),
                evicted_capacity: AtomicU64::new(0),
                evicted_ttl: AtomicU64::new(0),
            }),
        }
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
    /// snapshot wins unless it is older.
    pub fn put_batch(&self, source: &str, snapshots: Vec<(u64, Snapshot)>) -> PutOutcome {
        let outcome = self.store(source, snapshots);
        if !outcome.changed.is_empty() {
            self.notify(&outcome.changed, source);
        }
        outcome
    }

    fn store(&self, source: &str, snapshots: Vec<(u64, Snapshot)>) -> PutOutcome {
        let source: Arc<str> = Arc::from(source);
        let (now, touched) = (Timestamp::now(), Instant::now());
        let mut outcome = PutOutcome::default();
        // Distinct ids in a batch; `changed` keeps their order.
        let mut seen = HashSet::new();
        let mut events = self.shared.events.write();
        self.expire_locked(&mut events, touched);
        for (event_id, snapshot) in snapshots {
            if !events.contains(&event_id) {
                self.make_room(&mut events);
                let entry = EventEntry {
                    by_source: Vec::new(),
                    updated_at: now,
                    touched,
                };
                events.push(event_id, entry);
            }
            let Some(entry) = events.peek_mut(&event_id) else {
                continue; // just inserted: cannot happen
            };
            let slot = entry.by_source.iter_mut().find(|(name, _)| *name == source);
            let changed = match slot {
                Some((_, stored)) if snapshot.captured_at < stored.snapshot.captured_at => {
                    outcome.stale += 1;
                    continue;
                }
                Some((_, stored)) if stored.snapshot.markets == snapshot.markets => {
                    stored.snapshot.captured_at = snapshot.captured_at;
                    stored.snapshot.bookmaker_id = snapshot.bookmaker_id;
                    false
                }
                Some((_, stored)) => {
                    *stored = self.numbered(event_id, snapshot);
                    true
                }
                None => {
                    let stored = self.numbered(event_id, snapshot);
                    entry.by_source.push((source.clone(), stored));
                    true
                }
            };
            entry.updated_at = now;
            entry.touched = touched;
            events.promote(&event_id);
            outcome.accepted += 1;
            if changed && seen.insert(event_id) {
                outcome.changed.push(event_id);
            }
        }
        outcome
    }

    /// Evicts the least recently updated event if the cache is full.
    fn make_room(&self, events: &mut LruCache<u64, EventEntry>) {
        while events.len() >= self.shared.limits.max_events.max(1) {
            if events.pop_lru().is_none() {
                return;
            }
            self.shared.evicted_capacity.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every event without an update for the TTL (they are the least recently
    /// updated, so they sit at the front); returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        self.expire_locked(&mut self.shared.events.write(), now)
    }

    fn expire_locked(&self, events: &mut LruCache<u64, EventEntry>, now: Instant) -> usize {
        let ttl = self.shared.limits.ttl;
        let mut dropped = 0;
        while let Some((_, oldest)) = events.peek_lru() {
            if now.saturating_duration_since(oldest.touched) < ttl {
                break;
            }
            events.pop_lru();
            dropped += 1;
        }
        if dropped > 0 {
            let counter = &self.shared.evicted_ttl;
            counter.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        dropped
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
        self.events_page(None, usize::MAX).0
    }

    /// Up to `limit` events with ids above `after` (all when `None`), by id, and whether
    /// more follow. Only the ids are sorted under the lock; only the page is copied out.
    pub fn events_page(&self, after: Option<u64>, limit: usize) -> (Vec<EventSummary>, bool) {
        let events = self.shared.events.read();
        let mut ids: Vec<u64> = events
            .iter()
            .map(|(&id, _)| id)
            .filter(|&id| after.is_none_or(|after| id > after))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let page = ids
            .into_iter()
            .filter_map(|event_id| {
                let entry = events.peek(&event_id)?;
                Some(EventSummary {
                    event_id,
                    sources: home_first(entry.by_source.iter().map(|(name, _)| name.clone())),
                    updated_at: entry.updated_at,
                })
            })
            .collect();
        (page, more)
    }

    /// Every snapshot of one event, or `None` if the cache does not hold it.
    pub fn event_odds(&self, event_id: u64) -> Option<EventOdds> {
        let events = self.shared.events.read();
        let entry = events.peek(&event_id)?;
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

    /// Events removed so far, by reason.
    pub fn evictions(&self) -> Evictions {
        Evictions {
            capacity: self.shared.evicted_capacity.load(Ordering::Relaxed),
            ttl: self.shared.evicted_ttl.load(Ordering::Relaxed),
        }
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
                market_id: intern("1x2"),
                name: intern("1X2"),
                line: None,
                outcomes: vec![Outcome {
                    name: intern("1"),
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
                changed: vec![],
                stale: 0,
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

    fn at(snapshot: Snapshot, time: &str) -> Snapshot {
        Snapshot {
            captured_at: Timestamp::parse(time).unwrap(),
            ..snapshot
        }
    }

    #[test]
    fn a_full_cache_evicts_the_event_updated_longest_ago() {
        let limits = CacheLimits {
            max_events: 3,
            ..CacheLimits::default()
        };
        let cache = OddsCache::with_limits(limits);
        for id in [1, 2, 3] {
            cache.put_competitor_snapshot(id, "sportybet", snapshot(2.0));
        }
        // Event 1 is updated again (a refresh counts), so 2 is now the oldest.
        cache.put_competitor_snapshot(1, "sportybet", snapshot(2.0));
        cache.event_odds(2).unwrap(); // reading does not count as an update
        cache.put_competitor_snapshot(4, "sportybet", snapshot(2.0));
        assert!(cache.event_odds(2).is_none());
        let ids: Vec<u64> = cache.events().iter().map(|e| e.event_id).collect();
        assert_eq!(ids, [1, 3, 4]);
        assert_eq!(
            cache.evictions(),
            Evictions {
                capacity: 1,
                ttl: 0
            }
        );
    }

    #[test]
    fn events_without_an_update_for_the_ttl_are_dropped() {
        let ttl = Duration::from_secs(60);
        let cache = OddsCache::with_limits(CacheLimits {
            ttl,
            ..CacheLimits::default()
        });
        cache.put_competitor_snapshot(1, "sportybet", snapshot(2.0));
        let start = Instant::now();
        cache.put_competitor_snapshot(2, "sportybet", snapshot(2.0));
        assert_eq!(cache.expire(start + ttl / 2), 0);
        assert_eq!(cache.expire(start + ttl + Duration::from_secs(1)), 2);
        assert!(cache.is_empty());
        assert_eq!(
            cache.evictions(),
            Evictions {
                capacity: 0,
                ttl: 2
            }
        );
    }

    #[test]
    fn an_older_snapshot_is_stale_not_applied_and_not_notified() {
        let cache = OddsCache::new();
        let calls = Arc::new(Mutex::new(0));
        let seen = calls.clone();
        cache.on_update(move |_, _| *seen.lock().unwrap() += 1);
        let newer = at(snapshot(2.0), "2026-11-21T10:00:00Z");
        cache.put_competitor_snapshot(7, "sportybet", newer);
        let older = at(snapshot(9.0), "2020-01-01T00:00:00Z");
        let outcome = cache.put_competitor_snapshot(7, "sportybet", older);
        assert_eq!(
            outcome,
            PutOutcome {
                accepted: 0,
                changed: vec![],
                stale: 1
            }
        );
        let stored = &cache.event_odds(7).unwrap().competitors["sportybet"];
        assert_eq!(stored.snapshot.markets[0].outcomes[0].odds, 2.0);
        assert_eq!(*calls.lock().unwrap(), 1);
        // Another source's older snapshot is not stale: staleness is per source.
        let other = at(snapshot(9.0), "2020-01-01T00:00:00Z");
        assert_eq!(cache.put_competitor_snapshot(7, "bet9ja", other).stale, 0);
    }

    #[test]
    fn names_are_shared() {
        let a = intern("Over");
        let b = intern("Over");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
