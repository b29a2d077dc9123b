//! Where odds and scrape steps are written: straight into a single node's cache and
//! dispatcher queue, or, on a cluster member, into the cluster's log in Redis, from which
//! every node (this one too) applies them. Ingest and scrape runs write through this one
//! seam, so neither knows which it is.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::cache::{OddsCache, Snapshot};
use crate::cluster::Cluster;
use crate::dispatcher::{BusEvent, BusSender};
use crate::idempotency::Recent;
use crate::protocol::{HttpError, ScrapeProgress};

/// What a write stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Snapshots stored (changed or refreshed).
    pub accepted: usize,
    /// Events whose odds changed.
    pub changed: usize,
    /// Snapshots older than the one stored: not applied.
    pub stale: usize,
    /// A repeat of an ingest with the same `Idempotency-Key`: the counts are the first's,
    /// and nothing was applied.
    pub replayed: bool,
}

/// Where writes go. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Writer {
    /// A single node.
    Local {
        /// Its cache.
        cache: OddsCache,
        /// Its dispatcher's queue, for scrape steps.
        bus: BusSender,
        /// What keyed ingests stored: held across the put, so two requests with one key
        /// apply once.
        recent: Arc<Mutex<Recent>>,
    },
    /// A cluster member.
    Cluster(Cluster),
}

impl Writer {
    /// Stores snapshots of `source` all at once, unless an ingest of `source` with the same
    /// idempotency `key` was stored within `--history-ttl`: then it answers what that one
    /// stored, and stores nothing. On a cluster member, a 503 `backplane_unavailable` error
    /// means none was stored.
    pub async fn put(
        &self,
        source: &str,
        snapshots: Vec<(u64, Snapshot)>,
        key: Option<&str>,
    ) -> Result<Stored, HttpError> {
        match self {
            Writer::Local { cache, recent, .. } => {
                let put = || {
                    let outcome = cache.put_batch(source, snapshots);
                    Stored {
                        accepted: outcome.accepted,
                        changed: outcome.changed.len(),
                        stale: outcome.stale,
                        replayed: false,
                    }
                };
                let Some(key) = key else {
                    return Ok(put());
                };
                let key = format!("{source} {key}");
                let now = Instant::now();
                let mut recent = recent.lock();
                if let Some(first) = recent.get(&key, now) {
                    return Ok(Stored {
                        replayed: true,
                        ..first
                    });
                }
                let stored = put();
                recent.insert(&key, stored, now);
                Ok(stored)
            }
            Writer::Cluster(cluster) => cluster.put(source, snapshots, key).await,
        }
    }

    /// Publishes a scrape run's step on `scrape_progress`, after the odds written before it.
    pub async fn step(&self, progress: ScrapeProgress) -> Result<(), HttpError> {
        match self {
            Writer::Local { bus, .. } => {
                // Fails only once the dispatcher stopped, when nobody is left to tell.
                let _ = bus.send(BusEvent::ScrapeProgress {
                    progress,
                    offset: None,
                });
                Ok(())
            }
            Writer::Cluster(cluster) => cluster.step(&progress).await,
        }
    }
}
