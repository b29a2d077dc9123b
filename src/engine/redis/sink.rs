//! Where the log follower puts what it reads, and all it may do to the node: apply odds and
//! details to the cache (whose callback hands the changes to the dispatcher, as on a single
//! node), hand it scrape steps, held messages and the ends of groups, and start the topics
//! over.

use std::sync::Arc;

use crate::cache::{Details, Logged, OddsCache};
use crate::dispatcher::{BusEvent, BusSender};
use crate::protocol::ScrapeProgress;

/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sink {
    cache: OddsCache,
    bus: BusSender,
}

impl Sink {
    pub fn new(cache: OddsCache, bus: BusSender) -> Sink {
        Sink { cache, bus }
    }

    /// Applies one source's snapshots and the details given with them.
    pub fn odds(&self, source: &str, logged: Vec<Logged>, details: Vec<(u64, Arc<Details>)>) {
        self.cache.apply(source, logged);
        if !details.is_empty() {
            self.cache.set_details(source, details);
        }
    }

    /// Sets details of events already applied (loading the state).
    pub fn details(&self, source: &str, details: Vec<(u64, Arc<Details>)>) {
        self.cache.set_details(source, details);
    }

    /// Publishes a scrape step at its offset.
    pub fn step(&self, progress: ScrapeProgress, offset: u64) {
        self.send(BusEvent::ScrapeProgress { progress, offset });
    }

    /// Publishes the changes of an entry the state already holds (a joining node's history),
    /// without applying them.
    pub fn republish(&self, source: &str, changes: Vec<Logged>) {
        if changes.is_empty() {
            return;
        }
        self.send(BusEvent::OddsChanged {
            event_ids: changes.iter().map(|l| l.event_id).collect(),
            snapshots: changes.iter().map(|l| l.snapshot.json.clone()).collect(),
            offsets: changes.iter().filter_map(|l| l.offset).collect(),
            source: Arc::from(source),
        });
    }

    /// Ends a group of the log's entries: what they changed is published now.
    pub fn cut(&self) {
        self.send(BusEvent::Cut);
    }

    /// Starts every topic over in `epoch` after `top`: every subscriber gets `resync`.
    pub fn restart(&self, epoch: Arc<str>, top: u64) {
        self.send(BusEvent::Restart { epoch, top });
    }

    /// Forgets every event, telling no one (before the state is loaded again).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Events the cache holds.
    pub fn events(&self) -> usize {
        self.cache.len()
    }

    fn send(&self, event: BusEvent) {
        // Fails only once the dispatcher stopped, when nobody is left to tell.
        let _ = self.bus.send(event);
    }
}
