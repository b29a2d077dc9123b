//! How a cluster member's cache follows the cluster's shared log (`crate::engine`'s Redis
//! engine): the snapshots arrive with their ids already assigned by Redis, so every node
//! stores the same snapshot under the same id and reads agree everywhere. Applying is idempotent, because a
//! node that loads the whole state and then follows the log sees some snapshots twice.

use std::sync::Arc;
use std::time::Instant;

use super::{Changes, Details, OddsCache, StoredSnapshot};
use crate::protocol::Timestamp;

/// A snapshot as the cluster's log or state carries it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The event.
    pub event_id: u64,
    /// The snapshot, under the id Redis gave it.
    pub snapshot: StoredSnapshot,
    /// The change's offset in the log; `None` for a refresh (the same odds, read again)
    /// and for a snapshot loaded from the state.
    pub offset: Option<u64>,
}

impl OddsCache {
    /// Stores snapshots of `source` from the cluster's log or state, unless the cache holds
    /// a newer one (a higher snapshot id, or the same id read later). Changes are told to the
    /// update callbacks with their offsets; refreshes and loads are not. Returns how many
    /// snapshots were stored.
    pub fn apply(&self, source: &str, logged: Vec<Logged>) -> usize {
        let source: Arc<str> = Arc::from(source);
        let (updated_at, touched): (Arc<str>, _) =
            (Timestamp::now().to_string().into(), Instant::now());
        let mut stored = 0;
        let (mut ids, mut snapshots, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        let mut evicted = Vec::new();
        let mut events = self.shared.events.write();
        self.expire_locked(&mut events, touched, &mut evicted);
        for Logged {
            event_id,
            snapshot,
            offset,
        } in logged
        {
            if !events.lru.contains(&event_id) && self.finished(event_id, None) {
                continue;
            }
            let Some(entry) = self.entry(&mut events, event_id, &updated_at, touched, &mut evicted)
            else {
                continue; // just inserted: cannot happen
            };
            let held = entry.by_source.iter_mut().find(|(name, _)| *name == source);
            let json = snapshot.json.clone();
            match held {
                // A change already loaded with the state is still announced, so that its
                // offset is published on this node too.
                Some((_, held)) if offset.is_some() && snapshot.snapshot_id >= held.snapshot_id => {
                    *held = snapshot;
                }
                Some((_, held))
                    if (snapshot.snapshot_id, snapshot.captured_at)
                        > (held.snapshot_id, held.captured_at) =>
                {
                    *held = snapshot;
                }
                Some(_) => continue,
                None => entry.insert(&source, snapshot),
            }
            entry.updated_at = updated_at.clone();
            entry.touched = touched;
            events.lru.promote(&event_id);
            stored += 1;
            // A log entry names each event once (the Redis engine sends distinct ids).
            if let Some(offset) = offset {
                ids.push(event_id);
                snapshots.push(json);
                offsets.push(offset);
            }
        }
        drop(events);
        self.notify_evicted(&evicted);
        if !ids.is_empty() {
            self.notify(Changes {
                source: &source,
                event_ids: &ids,
                snapshots: &snapshots,
                offsets: &offsets,
            });
        }
        stored
    }

    /// Sets the details of events the cache holds that `source` gave (from the cluster's log
    /// or state), under the same rules as a put's.
    pub fn set_details(&self, source: &str, details: Vec<(u64, Arc<Details>)>) {
        let source: Arc<str> = Arc::from(source);
        let mut events = self.shared.events.write();
        for (event_id, details) in details {
            events.take_details(event_id, &source, &details);
        }
    }

    /// Drops every event, telling no one: a cluster member does this before it loads the
    /// state again after Redis lost its data.
    pub fn clear(&self) {
        self.shared.events.write().clear();
    }
}
