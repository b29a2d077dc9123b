//! Scale-out on Redis: several nodes, one cache, one ordered log.
//!
//! With `--redis`, a node writes nothing into its own cache directly. An ingest (or a scrape
//! run's batch, or a run's step) is checked whole, then appended in one atomic script
//! (`append.lua`): change detection against the shared state, snapshot ids from one counter,
//! the entry in the log under the next offsets. The 200 reply means Redis has it.
//!
//! Every node follows the log in order (`follower.rs`) and applies each entry to its own
//! [`OddsCache`](crate::OddsCache), whose callback feeds the bridge and the dispatcher as on a
//! single node. Each change carries its log offset, and the log's entries come in groups
//! (`append.lua` says where each ends) that the dispatcher merges as it merges a drained
//! batch, so every node publishes the same messages under the same offsets in the same
//! epoch, and a client recovers with `since` on any node.
//!
//! Redis holds, under `oddsbus:`:
//! - `meta`: a hash with the `epoch`, the log's `top` offset, the `last` entry id, the
//!   snapshot-id counter `sid`, the log's `bytes`, the `limits` every member shares
//!   ([`shared_limits`]), whether the last entry left its group `open`, and the grouping's
//!   token bucket (`tokens`, `tokens_at`);
//! - `log`: a stream, bounded by `--history-size`, `--history-ttl` and `--history-bytes`
//!   (`log.rs`);
//! - `state:SOURCE`: a hash per source, event id to its latest snapshot;
//! - `events`: event id to the latest details given for it, with whose they are;
//! - `touched`: when each snapshot and details were last written, so that the state forgets
//!   what nobody updated for `--event-ttl`, as each node's cache does;
//! - `recent`: when each event was last written, so that the state keeps at most
//!   `--max-events` events, as each node's cache does;
//! - `idempotency:SOURCE:KEY`: what an ingest with an `Idempotency-Key` stored;
//! - `nodes`: a stream of members' heartbeats (`members.rs`), which is also how each node
//!   checks that what it writes comes back through what it reads;
//! - `scrape:lease` and `scrape:period`: who runs the scrape run, and who started the
//!   period's periodic one (`scrape.rs`);
//! - `store:lease`: which node writes the log into the database (`shared_log.rs`).

mod append;
mod follower;
mod log;
mod members;
mod scrape;
mod shared_log;
mod sink;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

// Not our ConnectionManager (`crate::topics`): redis's self-reconnecting connection.
use redis::aio::{ConnectionManager as RedisConnection, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::watch;

use self::append::APPEND_TIMEOUT;
use self::follower::follow;
use self::log::EntryId;
use self::members::heartbeat;
pub use self::members::Member;
use self::scrape::watch_runs;
pub use self::shared_log::{LogEntry, Position, Read, SharedLog};
use self::sink::Sink;
use super::Node;
use crate::config::Config;
use crate::dispatcher::Coalescing;
use crate::metrics::{known, Metrics};
use crate::topics::{ConnectionManager, HistoryLimits};

const META: &str = "oddsbus:meta";
const LOG: &str = "oddsbus:log";
const NODES: &str = "oddsbus:nodes";
const LEASE: &str = "oddsbus:scrape:lease";
const EVENTS: &str = "oddsbus:events";
const TOUCHED: &str = "oddsbus:touched";
const RECENT: &str = "oddsbus:recent";
const PERIOD: &str = "oddsbus:scrape:period";

fn state_key(source: &str) -> String {
    format!("oddsbus:state:{source}")
}

/// Every `op` a round trip to Redis is counted under (`redis_requests_total`,
/// `redis_errors_total`), listed at 0 from the start.
const OPS: [&str; 12] = [
    "ingest",
    "step",
    "cut",
    "read",
    "join",
    "load",
    "follow",
    "heartbeat",
    "lease",
    "period",
    "runs",
    "persist",
];

/// The flags that bound what Redis holds for every member, as `--flag=value ...`: each
/// node trims the one log and state by them, so they are the first node's, kept in `meta`;
/// a node started with others refuses to join ([`differing_limit`]) and, should it meet
/// them later (Redis lost them), the append script refuses its writes.
fn shared_limits(config: &Config) -> String {
    format!(
        "--history-size={} --history-ttl={} --history-bytes={} --event-ttl={} --max-events={}",
        config.history_size,
        config.history_ttl.as_secs_f64(),
        config.history_bytes,
        config.event_ttl.as_secs_f64(),
        config.max_events,
    )
}

/// Why a node whose limits are `ours` cannot join a cluster whose limits are `held`: the
/// first flag that differs, or `None` when they agree.
fn differing_limit(ours: &str, held: &str) -> Option<String> {
    if ours == held {
        return None;
    }
    let value = |limits: &'_ str, flag: &str| {
        let found = limits.split(' ').find_map(|pair| pair.strip_prefix(flag));
        found
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_owned)
    };
    let differs = ours.split(' ').find_map(|pair| {
        let (flag, mine) = pair.split_once('=')?;
        let theirs = value(held, flag).unwrap_or_else(|| "unset".into());
        (theirs != mine).then(|| {
            format!(
                "{flag} is {mine} on this node but {theirs} in the cluster (set by the first \
                 node to join); start every node with the same {flag}"
            )
        })
    });
    Some(
        differs
            .unwrap_or_else(|| format!("the cluster's limits are `{held}`, this node's `{ours}`")),
    )
}

/// A cluster member's handle on Redis. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    /// This node's id in `/api/cluster` and the heartbeats.
    node: Arc<str>,
    /// Where clients reach this node: the address it listens on.
    address: parking_lot::Mutex<String>,
    client: Client,
    /// Appends and heartbeats: reconnects by itself.
    commands: RedisConnection,
    append: Script,
    history: HistoryLimits,
    /// The coalescing window (zero: every entry is published on its own); the append
    /// script groups entries by it, or by the node's pace if longer, and the follower cuts
    /// a group left open for as long.
    window: Duration,
    /// The node's connections, whose pace its appends carry; set when it starts.
    manager: std::sync::OnceLock<ConnectionManager>,
    /// What the limits are, as [`shared_limits`] writes them.
    limits: String,
    /// Why this node may not be a member (its limits differ from the cluster's), once the
    /// follower found it.
    refused: watch::Sender<Option<String>>,
    /// How long the state keeps a snapshot nobody updates (`--event-ttl`).
    event_ttl: Duration,
    /// How many events the state keeps (`--max-events`).
    max_events: usize,
    sources: Vec<String>,
    /// The epoch this node's cache follows, once it joined.
    epoch: parking_lot::Mutex<Option<Arc<str>>>,
    /// The last log entry this node's cache applied.
    applied: watch::Sender<Option<EntryId>>,
    /// When the follower last saw this node's own heartbeat come back from Redis.
    seen: parking_lot::Mutex<Option<Instant>>,
    members: parking_lot::Mutex<HashMap<Arc<str>, Member>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.shared.node)
            .field("applied", &*self.shared.applied.borrow())
            .finish()
    }
}

impl Cluster {
    /// A member of the cluster whose Redis is at `url`. Connects lazily: the log follower
    /// (`follow`) joins, and the server waits for it before it serves.
    pub fn new(config: &Config, url: &str, metrics: Arc<Metrics>) -> Result<Cluster, String> {
        let client = Client::open(url).map_err(|e| format!("--redis `{url}`: {e}"))?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(APPEND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let commands = RedisConnection::new_lazy_with_config(client.clone(), settings)
            .map_err(|e| format!("--redis `{url}`: {e}"))?;
        known(&metrics.redis_requests, "op", OPS);
        known(&metrics.redis_errors, "op", OPS);
        let node: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .take(8)
            .collect();
        Ok(Cluster {
            shared: Arc::new(Shared {
                node: Arc::from(node),
                address: parking_lot::Mutex::new(config.listen.clone()),
                client,
                commands,
                append: Script::new(include_str!("append.lua")),
                history: HistoryLimits::from_config(config),
                window: Coalescing::from_config(config).window(),
                manager: std::sync::OnceLock::new(),
                limits: shared_limits(config),
                refused: watch::channel(None).0,
                event_ttl: config.event_ttl,
                max_events: config.max_events,
                sources: config.sources().into_iter().map(String::from).collect(),
                epoch: parking_lot::Mutex::default(),
                applied: watch::channel(None).0,
                seen: parking_lot::Mutex::default(),
                members: parking_lot::Mutex::default(),
                metrics,
            }),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.shared.node
    }

    /// The log, for the database writer.
    pub fn shared_log(&self) -> SharedLog {
        SharedLog::new(self.clone())
    }

    /// Records the address the node listens on, for the other members.
    fn listening_on(&self, address: String) {
        *self.shared.address.lock() = address;
    }

    /// Starts the log follower and completes once it has joined, or with why it may not;
    /// then starts the heartbeats and the watch for runs whose node died (a node the cluster
    /// refuses is never listed among its members).
    pub(super) async fn start(&self, node: Node<'_>) -> Result<(), String> {
        if let Some(address) = node.address {
            self.listening_on(address);
        }
        let _ = self.shared.manager.set(node.manager.clone());
        let sink = Sink::new(node.cache.clone(), node.bus.clone());
        let stop = node.follow_stop.clone();
        node.tasks.spawn(follow(self.clone(), sink, stop));
        tracing::info!(event = "cluster.joining", node = %self.node());
        self.joined().await?;
        let manager = node.manager.clone();
        node.tasks
            .spawn(heartbeat(self.clone(), manager, node.shutdown.clone()));
        node.tasks
            .spawn(watch_runs(self.clone(), node.shutdown.clone()));
        Ok(())
    }

    /// Completes once the follower has joined the log (loaded the state) for the first time,
    /// or with why it may not (its limits differ from the cluster's).
    async fn joined(&self) -> Result<(), String> {
        let mut applied = self.shared.applied.subscribe();
        let mut refused = self.shared.refused.subscribe();
        // The senders live as long as `self`.
        tokio::select! {
            _ = applied.wait_for(Option::is_some) => Ok(()),
            why = refused.wait_for(Option::is_some) => {
                Err(why.map_or_else(|_| "refused".into(), |why| why.clone().unwrap_or_default()))
            }
        }
    }

    /// Stops this node from being taken for a member: `why` in its health from now on.
    fn refuse(&self, why: String) {
        tracing::error!(event = "cluster.limits_differ", reason = %why);
        self.shared.refused.send_replace(Some(why));
    }

    /// `Err` with the reason when this node cannot be trusted to deliver: its limits are not
    /// the cluster's, or its own heartbeat has not come back through its log follower within
    /// 1.5 s (`DEGRADED_AFTER`).
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = &*self.shared.refused.borrow() {
            return Err(why.clone());
        }
        match *self.shared.seen.lock() {
            Some(seen) if seen.elapsed() < members::DEGRADED_AFTER => Ok(()),
            Some(seen) => Err(format!(
                "redis: nothing came back through the log for {} ms",
                seen.elapsed().as_millis()
            )),
            None => Err("redis: not following the log yet".into()),
        }
    }
}
