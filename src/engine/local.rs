//! A single node's engine: puts go straight into its cache, which numbers their changes in
//! the node's log and tells its callbacks (the dispatcher's among them); steps take the
//! log's next offset and go straight onto the dispatcher's queue.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::idempotency::Recent;
use super::Stored;
use crate::cache::{OddsCache, Snapshot};
use crate::config::Config;
use crate::dispatcher::{BusEvent, BusSender};
use crate::protocol::{IngestReply, ScrapeProgress};

/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Local {
    cache: OddsCache,
    bus: BusSender,
    /// What keyed ingests stored: held across the put, so two requests with one key apply
    /// once.
    recent: Arc<Mutex<Recent>>,
}

impl Local {
    pub fn new(config: &Config, cache: &OddsCache, bus: &BusSender) -> Local {
        Local {
            cache: cache.clone(),
            bus: bus.clone(),
            recent: Arc::new(Mutex::new(Recent::new(config.history_ttl))),
        }
    }

    /// See [`Engine::put`](super::Engine::put).
    pub fn put(&self, source: &str, snapshots: Vec<(u64, Snapshot)>, key: Option<&str>) -> Stored {
        let put = || {
            let outcome = self.cache.put_batch(source, snapshots);
            let counts = IngestReply {
                accepted: outcome.accepted,
                changed: outcome.changed.len(),
                stale: outcome.stale,
            };
            Stored {
                counts,
                replayed: false,
                position: None,
            }
        };
        let Some(key) = key else {
            return put();
        };
        let key = format!("{source} {key}");
        let now = Instant::now();
        let mut recent = self.recent.lock();
        if let Some(counts) = recent.get(&key, now) {
            return Stored {
                counts,
                replayed: true,
                position: None,
            };
        }
        let stored = put();
        recent.insert(&key, stored.counts, now);
        stored
    }

    /// See [`Engine::step`](super::Engine::step).
    pub fn step(&self, progress: ScrapeProgress) {
        self.cache.take_offset(|offset| {
            // Fails only once the dispatcher stopped, when nobody is left to tell.
            let _ = self.bus.send(BusEvent::ScrapeProgress { progress, offset });
        });
    }
}
