//! One cached event, and the events with the indexes kept beside them.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;

use super::{Details, StoredSnapshot};
use crate::protocol::{Timestamp, HOME_SOURCE};

/// When a match starts, and which source said so: the kickoff rule trusts the home
/// bookmaker's word, or else the first source's, so that no other source can end a match.
#[derive(Debug)]
struct Kickoff {
    at: Timestamp,
    source: Arc<str>,
}

#[derive(Debug)]
pub(super) struct EventEntry {
    /// One snapshot per source, in the order reads list them: the home bookmaker first, then
    /// competitors by name (kept so on insert, so no read sorts). A vector, not a map: an
    /// event has a handful of sources, and a `BTreeMap`'s first node alone takes about 1 KiB.
    pub(super) by_source: Vec<(Arc<str>, StoredSnapshot)>,
    /// As the contract writes times: formatted once per put, shared by its events.
    pub(super) updated_at: Arc<str>,
    /// When it was last updated, for the TTL (the wall clock may jump; this does not).
    pub(super) touched: Instant,
    /// What the match is: the latest details given with an applied snapshot.
    pub(super) details: Option<Arc<Details>>,
    /// When it starts, for the rule that drops matches long over.
    kickoff: Option<Kickoff>,
}

impl EventEntry {
    pub(super) fn new(updated_at: Arc<str>, touched: Instant) -> EventEntry {
        EventEntry {
            by_source: Vec::new(),
            updated_at,
            touched,
            details: None,
            kickoff: None,
        }
    }

    /// Adds the first snapshot of `source`, where reads list it.
    pub(super) fn insert(&mut self, source: &Arc<str>, stored: StoredSnapshot) {
        let order = |name: &Arc<str>| (&**name != HOME_SOURCE, name.clone());
        let at = self
            .by_source
            .partition_point(|(name, _)| order(name) < order(source));
        self.by_source.insert(at, (source.clone(), stored));
    }

    /// Takes the details of an applied snapshot of `source`: the latest win for reads; the
    /// kickoff only from the home bookmaker, or from the source that gave the first one.
    fn take_details(&mut self, source: &Arc<str>, details: &Arc<Details>) {
        self.details = Some(details.clone());
        let Some(at) = details.kickoff else {
            return;
        };
        let trusted = match &self.kickoff {
            None => true,
            Some(kickoff) => &**source == HOME_SOURCE || kickoff.source == *source,
        };
        if trusted {
            self.kickoff = Some(Kickoff {
                at,
                source: source.clone(),
            });
        }
    }

    fn kickoff_at(&self) -> Option<Timestamp> {
        self.kickoff.as_ref().map(|k| k.at)
    }
}

/// The events, least recently updated first, with two indexes kept beside them so that
/// nothing under the lock looks at every event (with 100,000 held, a sort of their ids for
/// each page of `GET /api/events` held every write up for 5 to 10 ms, and so did a scan for
/// the matches over every second): their ids in order, and the kickoffs of those that have
/// one, in time order. Events come and go only through its methods, which keep both.
pub(super) struct Events {
    pub(super) lru: LruCache<u64, EventEntry>,
    ids: BTreeSet<u64>,
    kickoffs: BTreeSet<(Timestamp, u64)>,
}

impl Events {
    pub(super) fn new() -> Events {
        Events {
            lru: LruCache::unbounded(),
            ids: BTreeSet::new(),
            kickoffs: BTreeSet::new(),
        }
    }

    /// Adds an event the cache does not hold.
    pub(super) fn push(&mut self, event_id: u64, entry: EventEntry) {
        self.ids.insert(event_id);
        self.lru.push(event_id, entry);
    }

    /// Up to `limit` ids above `after` (from the first when `None`), in order.
    pub(super) fn ids_after(&self, after: Option<u64>, limit: usize) -> Vec<u64> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let ids = self.ids.range((from, Bound::Unbounded));
        ids.take(limit).copied().collect()
    }

    /// Removes the event updated longest ago.
    pub(super) fn pop_lru(&mut self) -> Option<(u64, EventEntry)> {
        let (event_id, entry) = self.lru.pop_lru()?;
        self.ids.remove(&event_id);
        if let Some(at) = entry.kickoff_at() {
            self.kickoffs.remove(&(at, event_id));
        }
        Some((event_id, entry))
    }

    /// Removes the match with the earliest kickoff if that is before `over`; returns its id.
    pub(super) fn pop_over(&mut self, over: Timestamp) -> Option<u64> {
        let &(at, event_id) = self.kickoffs.first()?;
        if at >= over {
            return None;
        }
        self.kickoffs.pop_first();
        self.ids.remove(&event_id);
        self.lru.pop(&event_id);
        Some(event_id)
    }

    /// Gives `event_id` the details of an applied snapshot of `source` (see
    /// [`EventEntry::take_details`]), keeping its kickoff's place in time order.
    pub(super) fn take_details(
        &mut self,
        event_id: u64,
        source: &Arc<str>,
        details: &Arc<Details>,
    ) {
        let Some(entry) = self.lru.peek_mut(&event_id) else {
            return;
        };
        let before = entry.kickoff_at();
        entry.take_details(source, details);
        let after = entry.kickoff_at();
        if before != after {
            if let Some(at) = before {
                self.kickoffs.remove(&(at, event_id));
            }
            if let Some(at) = after {
                self.kickoffs.insert((at, event_id));
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.lru.clear();
        self.ids.clear();
        self.kickoffs.clear();
    }
}
