//! What a cluster's database writer (`crate::store`) needs from the cluster: a lease, so that
//! one node at a time writes; where this node's cache stands in the log; and the log read
//! entry by entry from a position, as the follower reads it.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use redis::streams::StreamRangeReply;
use redis::Script;

use super::follower::bytes;
use super::log::{self, Body, EntryId};
use super::{Cluster, LOG, META};
use crate::cache::Details;
use crate::metrics::label;

const WRITER_LEASE: &str = "oddsbus:store:lease";

/// How long the writer's lease lasts without renewal: a killed writer holds the others back
/// for at most this long.
pub const WRITER_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes or renews the lease for ARGV[1] (for ARGV[2] ms) unless another holds it.
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
        if held and held ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 1",
    )
});

/// Gives the lease back if ARGV[1] holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0",
    )
});

/// A place in the log: its epoch, and the id (`TOP-SEQ`) of the entry last taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub epoch: Arc<str>,
    pub top: u64,
    pub seq: u64,
}

impl Position {
    pub(super) fn entry(&self) -> EntryId {
        EntryId {
            top: self.top,
            seq: self.seq,
        }
    }

    pub(super) fn at(epoch: &Arc<str>, id: EntryId) -> Position {
        Position {
            epoch: epoch.clone(),
            top: id.top,
            seq: id.seq,
        }
    }

    /// Whether this is `other` or later in the same epoch.
    pub fn reached(&self, other: &Position) -> bool {
        self.epoch == other.epoch && (self.top, self.seq) >= (other.top, other.seq)
    }
}

/// An entry's odds: what changed, each event's snapshot JSON, and the details given.
#[derive(Debug)]
pub struct LoggedOdds {
    pub source: Arc<str>,
    pub changes: Vec<(u64, Bytes)>,
    pub details: Vec<(u64, Arc<Details>)>,
}

/// One entry of the log, as the database writer takes it.
#[derive(Debug)]
pub struct LogEntry {
    /// Its own position.
    pub position: Position,
    /// When it was appended, in milliseconds since 1970 by Redis's clock.
    pub appended_ms: u64,
    /// Its odds; none for a scrape step's.
    pub odds: Option<LoggedOdds>,
}

/// What a read of the log found after a position.
#[derive(Debug)]
pub enum Read {
    /// The entries after it, in order.
    Entries(Vec<LogEntry>),
    /// It is not in the log any more: its epoch ended, or entries after it were trimmed.
    /// The log's epoch now (none while Redis holds none).
    Gone(Option<Arc<str>>),
}

/// A cluster member's log, as the database writer sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedLog {
    cluster: Cluster,
}

impl SharedLog {
    pub(super) fn new(cluster: Cluster) -> SharedLog {
        SharedLog { cluster }
    }

    /// Takes or renews the writer's lease for this node: whether it holds it now.
    pub async fn hold(&self) -> Result<bool, String> {
        let ttl = WRITER_LEASE_TTL.as_millis() as u64;
        let mut call = HOLD.prepare_invoke();
        call.key(WRITER_LEASE).arg(&**self.cluster.node()).arg(ttl);
        let held: i64 = self.invoke(call).await?;
        Ok(held == 1)
    }

    /// Gives the writer's lease back, if this node holds it.
    pub async fn release(&self) {
        let mut call = RELEASE.prepare_invoke();
        call.key(WRITER_LEASE).arg(&**self.cluster.node());
        if let Err(error) = self.invoke::<i64>(call).await {
            tracing::warn!(event = "store.lease_release_failed", %error);
        }
    }

    /// Where this node's cache stands: the epoch it follows and the last entry it applied.
    pub fn applied(&self) -> Option<Position> {
        let epoch = self.cluster.shared.epoch.lock().clone()?;
        let applied = (*self.cluster.shared.applied.borrow())?;
        Some(Position::at(&epoch, applied))
    }

    /// Completes once this node's cache applied an entry after `position`, or its epoch
    /// changed.
    pub async fn applied_after(&self, position: &Position) {
        let mut applied = self.cluster.shared.applied.subscribe();
        let after = |applied: &Option<EntryId>| {
            let epoch = self.cluster.shared.epoch.lock().clone();
            match (epoch, applied) {
                (Some(epoch), Some(id)) => !position.reached(&Position::at(&epoch, *id)),
                _ => true,
            }
        };
        // The sender lives as long as the cluster, which `self` holds.
        let _ = applied.wait_for(after).await;
    }

    /// Reads at most `most` entries after `position`.
    pub async fn read(&self, position: &Position, most: usize) -> Result<Read, String> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(META).arg("epoch");
        pipe.cmd("XRANGE")
            .arg(LOG)
            .arg(format!("({}", position.entry()))
            .arg("+")
            .arg("COUNT")
            .arg(most);
        let mut commands = self.cluster.shared.commands.clone();
        self.count();
        let (epoch, page): (Option<String>, StreamRangeReply) = pipe
            .query_async(&mut commands)
            .await
            .map_err(|e| e.to_string())?;
        let epoch: Option<Arc<str>> = epoch.map(Arc::from);
        if epoch.as_deref() != Some(&*position.epoch) {
            return Ok(Read::Gone(epoch));
        }
        let mut entries = Vec::with_capacity(page.ids.len());
        let mut last = position.entry();
        for stream_id in &page.ids {
            let appended_ms = bytes(stream_id, "t")
                .and_then(|t| String::from_utf8(t).ok()?.parse().ok())
                .unwrap_or(0);
            let entry = match log::entry(&stream_id.id, |name| bytes(stream_id, name)) {
                Ok(entry) => entry,
                Err(error) => {
                    // Written by another version or by hand: passed over, as the follower does.
                    tracing::error!(event = "store.bad_entry", id = %stream_id.id, %error);
                    if let Ok(id) = stream_id.id.parse() {
                        entries.push(LogEntry {
                            position: Position::at(&position.epoch, id),
                            appended_ms,
                            odds: None,
                        });
                        last = id;
                    }
                    continue;
                }
            };
            if entry.prev != last {
                return Ok(Read::Gone(epoch));
            }
            last = entry.id;
            let odds = match entry.body {
                Body::Odds(source, logged, details) => Some(LoggedOdds {
                    source: Arc::from(source),
                    changes: logged
                        .into_iter()
                        .filter(|l| l.offset.is_some())
                        .map(|l| (l.event_id, l.snapshot.json))
                        .collect(),
                    details,
                }),
                Body::Progress(_) | Body::Cut => None,
            };
            entries.push(LogEntry {
                position: Position::at(&position.epoch, entry.id),
                appended_ms,
                odds,
            });
        }
        Ok(Read::Entries(entries))
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut commands = self.cluster.shared.commands.clone();
        self.count();
        call.invoke_async(&mut commands)
            .await
            .map_err(|e| e.to_string())
    }

    fn count(&self) {
        let metrics = &self.cluster.shared.metrics;
        metrics
            .redis_requests
            .get_or_create(&label("op", "persist"))
            .inc();
    }
}
