//! The OddsCache: the latest odds snapshot of every event from every source, in memory.
//!
//! Writers are the ingest endpoint and scrape runs; readers are the cache-first HTTP reads.
//! Whenever a put stores something new, the registered update callbacks are told which event
//! ids changed, from which source, and what their new snapshots are. That is how the broker
//! learns about changes: the cache-update bridge (`dispatcher.rs`) is one such callback.
//!
//! Snapshots are encoded once, when they are stored (`snapshot.rs`): a read, however many
//! clients make it, joins stored bytes (`read.rs`), and an `odds_change` message carries the
//! same bytes.
//!
//! The cache is bounded. It holds at most `max_events` events: when a new one arrives and it
//! is full, the event updated longest ago is evicted. An event with no update for `ttl` is
//! dropped (finished matches stop being scraped and leave), and so is a match whose kickoff
//! is long past. Either way, its reads answer 404, and the eviction callbacks are told. A
//! snapshot older than the one stored for its event and source is stale: not applied, not
//! notified, counted; so is one for a match that left for its kickoff.

mod details;
mod events;
#[cfg(feature = "server")]
mod logged;
#[cfg(feature = "server")]
mod queue;
mod read;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::{Mutex, RwLock};

pub use self::details::{Details, EventDetails};
use self::events::{EventEntry, Events};
#[cfg(feature = "server")]
pub use self::logged::Logged;
#[cfg(test)]
pub use self::queue::OutcomePrice;
#[cfg(feature = "server")]
pub use self::queue::{spawn_worker, Job, MarketPrices, Prices};
pub use self::read::{EventOdds, EventSummary, Tag};
pub use self::snapshot::Encoded;
pub use self::snapshot::{intern, Market, Outcome, Snapshot, StoredSnapshot};
use crate::protocol::{Timestamp, HOME_SOURCE};

/// How long after its kickoff a match is taken to be over and leaves the cache: a match
/// lasts about two hours, and extra time, delays and late settling fit in the rest.
pub const MATCH_OVER_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Events a list copies out per hold of the cache's lock.
const LIST_CHUNK: usize = 1_000;

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
    /// A match whose kickoff is more than [`MATCH_OVER_AFTER`] past.
    pub kickoff: u64,
}

/// What one put changed, as update callbacks are told.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    /// Where the snapshots came from.
    pub source: &'a str,
    /// Distinct event ids, in order of first change.
    pub event_ids: &'a [u64],
    /// The JSON of each event's new snapshot (the latest, if the put changed it twice),
    /// in the same order.
    pub snapshots: &'a [Bytes],
    /// Each change's offset in the log, in the same order: the cluster's log on a cluster
    /// member; on a single node, the node's own, which the cache numbers (see
    /// [`OddsCache::take_offset`]).
    pub offsets: &'a [u64],
}

/// A synchronous update callback.
pub type UpdateCallback = Arc<dyn Fn(Changes<'_>) + Send + Sync>;

/// A synchronous eviction callback: told the ids of the events the cache dropped.
pub type EvictCallback = Arc<dyn Fn(&[u64]) + Send + Sync>;

/// The in-memory odds store. Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct OddsCache {
    shared: Arc<Shared>,
}

struct Shared {
    /// The data, least recently updated first. A `parking_lot` lock is never poisoned, and
    /// it is never held across an `.await` or while callbacks run, so plain blocking locks
    /// are the right tool.
    events: RwLock<Events>,
    limits: CacheLimits,
    /// Registered update callbacks, called in registration order.
    callbacks: RwLock<Vec<UpdateCallback>>,
    /// Registered eviction callbacks, called in registration order.
    evict_callbacks: RwLock<Vec<EvictCallback>>,
    /// Matches dropped for their kickoff, so that a source still listing one does not bring
    /// it back (at most `max_events`, the oldest forgotten first).
    finished: Mutex<LruCache<u64, ()>>,
    /// Source of `snapshot_id`s.
    next_snapshot_id: AtomicU64,
    /// A single node's log: the offset of its latest change or step. Held while a put's
    /// changes are told, so that they reach the callbacks in the order of their offsets.
    log_top: Mutex<u64>,
    evicted_capacity: AtomicU64,
    evicted_ttl: AtomicU64,
    evicted_kickoff: AtomicU64,
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
                events: RwLock::new(Events::new()),
                limits,
                callbacks: RwLock::default(),
                evict_callbacks: RwLock::default(),
                finished: Mutex::new(LruCache::new(
                    std::num::NonZeroUsize::new(limits.max_events)
                        .unwrap_or(std::num::NonZeroUsize::MIN),
                )),
                next_snapshot_id: AtomicU64::new(0),
                log_top: Mutex::new(0),
                evicted_capacity: AtomicU64::new(0),
                evicted_ttl: AtomicU64::new(0),
                evicted_kickoff: AtomicU64::new(0),
            }),
        }
    }

    /// Registers a callback told of every changed put, after the data is stored and with no
    /// lock on it held (only the log's, so that callbacks see changes in offset order: a
    /// callback must not put). It runs on the writer's thread, so it must be quick and must
    /// not block: hand the work to a task instead. A callback that panics is logged and
    /// skipped.
    pub fn on_update(&self, callback: impl Fn(Changes<'_>) + Send + Sync + 'static) {
        self.shared.callbacks.write().push(Arc::new(callback));
    }

    /// Registers a callback told of every event the cache drops (capacity, TTL or kickoff),
    /// after the lock is released. The same rules as for [`OddsCache::on_update`] apply.
    pub fn on_evict(&self, callback: impl Fn(&[u64]) + Send + Sync + 'static) {
        self.shared.evict_callbacks.write().push(Arc::new(callback));
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
        // Encoded before the lock: under it, only the snapshot id is written in front.
        let encoded = snapshots
            .iter()
            .map(|(event_id, snapshot)| (*event_id, Encoded::new(*event_id, snapshot)))
            .collect();
        let (outcome, changed) = self.store(source, encoded);
        if !outcome.changed.is_empty() {
            let mut top = self.shared.log_top.lock();
            let first = *top + 1;
            *top += outcome.changed.len() as u64;
            let offsets: Vec<u64> = (first..=*top).collect();
            self.notify(Changes {
                source,
                event_ids: &outcome.changed,
                snapshots: &changed,
                offsets: &offsets,
            });
        }
        outcome
    }

    /// Runs `f` with the next offset of a single node's log, after the changes of the puts
    /// told before it: this is how the local engine numbers a scrape step, so that its steps
    /// and its odds share one log, as a cluster's do. (A cluster member's changes carry the
    /// cluster's offsets instead: it never puts.)
    pub fn take_offset(&self, f: impl FnOnce(u64)) {
        let mut top = self.shared.log_top.lock();
        *top += 1;
        f(*top);
    }

    /// Stores encoded snapshots; returns what happened and the changed snapshots' JSON (in
    /// the order of `PutOutcome::changed`).
    fn store(&self, source: &str, snapshots: Vec<(u64, Encoded)>) -> (PutOutcome, Vec<Bytes>) {
        let source: Arc<str> = Arc::from(source);
        let (updated_at, touched): (Arc<str>, _) =
            (Timestamp::now().to_string().into(), Instant::now());
        let mut outcome = PutOutcome::default();
        let mut changed_json = Vec::new();
        // Where each changed id sits in `changed`, so a second change of it replaces the JSON.
        let mut positions = HashMap::new();
        let mut evicted = Vec::new();
        let mut events = self.shared.events.write();
        self.expire_locked(&mut events, touched, &mut evicted);
        for (event_id, snapshot) in snapshots {
            if !events.lru.contains(&event_id) && self.finished(event_id, snapshot.event.as_deref())
            {
                outcome.stale += 1;
                continue;
            }
            let Some(entry) = self.entry(&mut events, event_id, &updated_at, touched, &mut evicted)
            else {
                continue; // just inserted: cannot happen
            };
            let slot = entry.by_source.iter_mut().find(|(name, _)| *name == source);
            let stored = match slot {
                Some((_, stored)) if snapshot.captured_at() < stored.captured_at => {
                    outcome.stale += 1;
                    continue;
                }
                Some((_, stored)) if stored.markets() == snapshot.markets() => {
                    // A refresh: the same odds, read again. Same id, new `captured_at`.
                    *stored = snapshot.stored(stored.snapshot_id);
                    None
                }
                Some((_, stored)) => {
                    *stored = snapshot.stored(self.next_snapshot_id());
                    Some(stored.json.clone())
                }
                None => {
                    let stored = snapshot.stored(self.next_snapshot_id());
                    let json = stored.json.clone();
                    entry.insert(&source, stored);
                    Some(json)
                }
            };
            entry.updated_at = updated_at.clone();
            entry.touched = touched;
            if let Some(details) = &snapshot.event {
                events.take_details(event_id, &source, details);
            }
            events.lru.promote(&event_id);
            outcome.accepted += 1;
            if let Some(json) = stored {
                match positions.get(&event_id) {
                    Some(&at) => changed_json[at] = json,
                    None => {
                        positions.insert(event_id, outcome.changed.len());
                        outcome.changed.push(event_id);
                        changed_json.push(json);
                    }
                }
            }
        }
        drop(events);
        self.notify_evicted(&evicted);
        (outcome, changed_json)
    }

    /// Whether `event_id` is a match that left for its kickoff and is still over: a snapshot
    /// of it is stale, unless its details move the kickoff (a match rescheduled).
    fn finished(&self, event_id: u64, details: Option<&Details>) -> bool {
        let mut finished = self.shared.finished.lock();
        if !finished.contains(&event_id) {
            return false;
        }
        let over = Timestamp::now().minus(MATCH_OVER_AFTER);
        if details.and_then(|d| d.kickoff).is_some_and(|k| k >= over) {
            finished.pop(&event_id);
            return false;
        }
        true
    }

    /// The entry of `event_id`, made (after making room for it) if the cache has none.
    fn entry<'a>(
        &self,
        events: &'a mut Events,
        event_id: u64,
        updated_at: &Arc<str>,
        touched: Instant,
        evicted: &mut Vec<u64>,
    ) -> Option<&'a mut EventEntry> {
        if !events.lru.contains(&event_id) {
            self.make_room(events, evicted);
            events.push(event_id, EventEntry::new(updated_at.clone(), touched));
        }
        events.lru.peek_mut(&event_id)
    }

    /// Evicts the least recently updated event if the cache is full.
    fn make_room(&self, events: &mut Events, evicted: &mut Vec<u64>) {
        while events.lru.len() >= self.shared.limits.max_events.max(1) {
            let Some((event_id, _)) = events.pop_lru() else {
                return;
            };
            evicted.push(event_id);
            self.shared.evicted_capacity.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every event without an update for the TTL (they are the least recently
    /// updated, so they sit at the front), and every match whose kickoff is more than
    /// `MATCH_OVER_AFTER` (6 h) past (it is over, whatever its sources still say; the earliest
    /// kickoffs sit at the front of theirs); returns how many. Called every second or so.
    pub fn expire(&self, now: Instant) -> usize {
        let mut evicted = Vec::new();
        let over = Timestamp::now().minus(MATCH_OVER_AFTER);
        let mut events = self.shared.events.write();
        self.expire_locked(&mut events, now, &mut evicted);
        let ttl_dropped = evicted.len();
        let mut remembered = self.shared.finished.lock();
        while let Some(event_id) = events.pop_over(over) {
            remembered.put(event_id, ());
            evicted.push(event_id);
        }
        drop(remembered);
        drop(events);
        let counter = &self.shared.evicted_kickoff;
        counter.fetch_add((evicted.len() - ttl_dropped) as u64, Ordering::Relaxed);
        self.notify_evicted(&evicted);
        evicted.len()
    }

    fn expire_locked(&self, events: &mut Events, now: Instant, evicted: &mut Vec<u64>) {
        let ttl = self.shared.limits.ttl;
        let before = evicted.len();
        while let Some((_, oldest)) = events.lru.peek_lru() {
            if now.saturating_duration_since(oldest.touched) < ttl {
                break;
            }
            if let Some((event_id, _)) = events.pop_lru() {
                evicted.push(event_id);
            }
        }
        let dropped = evicted.len() - before;
        if dropped > 0 {
            let counter = &self.shared.evicted_ttl;
            counter.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// Numbers the snapshots stored from now on after `id` (a node loading what an earlier
    /// process numbered), so that ids only grow.
    pub fn number_after(&self, id: u64) {
        self.shared
            .next_snapshot_id
            .fetch_max(id, Ordering::Relaxed);
    }

    fn next_snapshot_id(&self) -> u64 {
        self.shared.next_snapshot_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn notify_evicted(&self, event_ids: &[u64]) {
        if event_ids.is_empty() {
            return;
        }
        let callbacks = self.shared.evict_callbacks.read().clone();
        for callback in callbacks {
            if catch_unwind(AssertUnwindSafe(|| callback(event_ids))).is_err() {
                tracing::error!(
                    event = "cache.callback_panicked",
                    count = event_ids.len(),
                    "an eviction callback panicked; the other callbacks still ran"
                );
            }
        }
    }

    fn notify(&self, changes: Changes<'_>) {
        // Clone the list so that no lock is held while callbacks run (one may register another).
        let callbacks = self.shared.callbacks.read().clone();
        for callback in callbacks {
            let result = catch_unwind(AssertUnwindSafe(|| callback(changes)));
            if result.is_err() {
                tracing::error!(
                    event = "cache.callback_panicked",
                    source = changes.source,
                    count = changes.event_ids.len(),
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
    /// more follow. Only the page is looked at, and it is copied out [`LIST_CHUNK`] events
    /// per hold of the lock: a list of 100,000 held writes up for 10 ms or more at once.
    /// An event dropped meanwhile is left out; one updated meanwhile is listed as it is then.
    pub fn events_page(&self, after: Option<u64>, limit: usize) -> (Vec<EventSummary>, bool) {
        let mut ids = self
            .shared
            .events
            .read()
            .ids_after(after, limit.saturating_add(1));
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut page = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_CHUNK) {
            let events = self.shared.events.read();
            page.extend(chunk.iter().filter_map(|&event_id| {
                let entry = events.lru.peek(&event_id)?;
                let sources = entry
                    .by_source
                    .iter()
                    .map(|(name, stored)| (name.clone(), stored.snapshot_id))
                    .collect();
                Some(EventSummary {
                    event_id,
                    details: entry.details.clone(),
                    sources,
                    updated_at: entry.updated_at.clone(),
                })
            }));
        }
        (page, more)
    }

    /// Every snapshot of one event, or `None` if the cache does not hold it.
    pub fn event_odds(&self, event_id: u64) -> Option<EventOdds> {
        self.many_event_odds(&[event_id]).pop()
    }

    /// The odds of each of `event_ids` the cache holds, in the order given, under one lock.
    /// The snapshots are shared, not copied: a few reference counts per event.
    pub fn many_event_odds(&self, event_ids: &[u64]) -> Vec<EventOdds> {
        let events = self.shared.events.read();
        event_ids
            .iter()
            .filter_map(|&event_id| {
                let entry = events.lru.peek(&event_id)?;
                Some(EventOdds {
                    event_id,
                    details: entry.details.clone(),
                    sources: entry.by_source.clone(),
                })
            })
            .collect()
    }

    /// Number of events cached.
    pub fn len(&self) -> usize {
        self.shared.events.read().lru.len()
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
            kickoff: self.shared.evicted_kickoff.load(Ordering::Relaxed),
        }
    }
}
