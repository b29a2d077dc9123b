//! The engine: where a node puts odds and scrape steps, holds the scrape lease, and learns
//! its health and its cluster's members. A single node's engine ([`local`]) writes into its
//! own cache and dispatcher queue; a cluster member's ([`redis`], `--redis`) writes into the
//! cluster's log in Redis, from which every node (this one too) applies them. Ingest, scrape
//! runs, health and `/api/cluster` go through this one seam, so none of them knows which it
//! is; the server picks the engine and starts its tasks here.

mod idempotency;
mod local;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use self::idempotency::check as check_idempotency_key;
use self::local::Local;
pub use self::redis::{Cluster, LogEntry, Member, Position, Read, SharedLog};
use crate::cache::{OddsCache, Snapshot};
use crate::config::Config;
use crate::dispatcher::{BusSender, Coalescing};
use crate::metrics::Metrics;
use crate::protocol::{HttpError, IngestReply, ScrapeProgress};
use crate::topics::ConnectionManager;

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The counts the ingest's reply carries.
    pub counts: IngestReply,
    /// A repeat of an ingest with the same `Idempotency-Key`: the counts are the first's,
    /// and nothing was applied.
    pub replayed: bool,
    /// Where in the cluster's log it was written; none on a single node, or when nothing
    /// was.
    pub position: Option<Position>,
}

/// A node's engine. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Engine {
    /// A single node.
    Local(Local),
    /// A cluster member.
    Redis(Cluster),
}

/// What a running node hands its engine's tasks.
#[derive(Debug)]
pub struct Node<'a> {
    /// The address it listens on, for the other members.
    pub address: Option<String>,
    /// Its cache, which a cluster member fills from the log.
    pub cache: &'a OddsCache,
    /// Its dispatcher's queue.
    pub bus: &'a BusSender,
    /// Its connections, which heartbeats count.
    pub manager: &'a ConnectionManager,
    /// Where the engine's tasks run: shutdown waits for them.
    pub tasks: &'a TaskTracker,
    /// Cancelled when the node shuts down.
    pub shutdown: &'a CancellationToken,
    /// Cancelled once in-flight requests are done: an ingest waits for its entry until then.
    pub follow_stop: &'a CancellationToken,
}

impl Engine {
    /// The engine `config` asks for: a cluster member's with `--redis`, else a single node's.
    pub fn new(
        config: &Config,
        cache: &OddsCache,
        bus: &BusSender,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, String> {
        match config.redis.as_deref() {
            Some(url) => Cluster::new(config, url, metrics).map(Engine::Redis),
            None => Ok(Engine::Local(Local::new(config, cache, bus))),
        }
    }

    /// Where the dispatcher ends a group of changes: a single node's as `config` says; a
    /// cluster member's where the log says, so that every member publishes alike.
    pub fn coalescing(&self, config: &Config) -> Coalescing {
        match self {
            Engine::Local(_) => Coalescing::from_config(config),
            Engine::Redis(_) => Coalescing::LogGroups {
                window: Coalescing::from_config(config).window(),
            },
        }
    }

    /// Starts the engine's tasks and completes once the node may serve: at once on a single
    /// node; on a cluster member once it has joined the log (serving an empty cache as if it
    /// were the cluster's would mislead every client), or with why it may not join.
    pub async fn start(&self, node: Node<'_>) -> Result<(), String> {
        match self {
            Engine::Local(_) => Ok(()),
            Engine::Redis(cluster) => cluster.start(node).await,
        }
    }

    /// Stores snapshots of `source` all at once, unless an ingest of `source` with the same
    /// idempotency `key` was stored within `--history-ttl`: then it answers what that one
    /// stored, and stores nothing. On a cluster member, 503 `backplane_unavailable` means
    /// none was stored, 503 `outcome_unknown` that it cannot be told.
    pub async fn put(
        &self,
        source: &str,
        snapshots: Vec<(u64, Snapshot)>,
        key: Option<&str>,
    ) -> Result<Stored, HttpError> {
        match self {
            Engine::Local(local) => Ok(local.put(source, snapshots, key)),
            Engine::Redis(cluster) => cluster.put(source, snapshots, key).await,
        }
    }

    /// Publishes a scrape run's step on `scrape_progress`, after the odds written before it.
    pub async fn step(&self, progress: ScrapeProgress) -> Result<(), HttpError> {
        match self {
            Engine::Local(local) => {
                local.step(progress);
                Ok(())
            }
            Engine::Redis(cluster) => cluster.step(&progress).await,
        }
    }

    /// Takes the scrape lease for `run`: `None` when this node may run it, or the run that
    /// another node runs. A single node has only its own runs.
    pub async fn claim_run(&self, run: Uuid) -> Result<Option<Uuid>, HttpError> {
        match self {
            Engine::Local(_) => Ok(None),
            Engine::Redis(cluster) => cluster.claim_run(run).await,
        }
    }

    /// Holds the lease taken for `run` until `done`, then gives it back.
    pub async fn keep_lease(&self, run: Uuid, done: CancellationToken) {
        if let Engine::Redis(cluster) = self {
            cluster.keep_lease(run, done).await;
        }
    }

    /// Whether this node starts the periodic run of the period of length `interval` that
    /// has begun: on a cluster, only the first node to ask does.
    pub async fn claim_period(&self, interval: Duration) -> bool {
        match self {
            Engine::Local(_) => true,
            Engine::Redis(cluster) => cluster.claim_period(interval).await,
        }
    }

    /// `Err` with the reason when this node cannot be trusted to deliver.
    pub fn health(&self) -> Result<(), String> {
        match self {
            Engine::Local(_) => Ok(()),
            Engine::Redis(cluster) => cluster.health(),
        }
    }

    /// The cluster's log, which the database writer follows; a single node has none (its
    /// writer is fed by the cache's callback).
    pub fn shared_log(&self) -> Option<SharedLog> {
        match self {
            Engine::Local(_) => None,
            Engine::Redis(cluster) => Some(cluster.shared_log()),
        }
    }

    /// This node's id among its cluster's members; a single node has none.
    pub fn node(&self) -> Option<Arc<str>> {
        match self {
            Engine::Local(_) => None,
            Engine::Redis(cluster) => Some(cluster.node().clone()),
        }
    }

    /// The members heard from lately, by id; none on a single node.
    pub fn members(&self) -> Vec<Member> {
        match self {
            Engine::Local(_) => Vec::new(),
            Engine::Redis(cluster) => cluster.members(),
        }
    }
}
