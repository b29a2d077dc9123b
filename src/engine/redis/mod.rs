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

mod follower;
mod log;
mod members;
mod scrape;
mod shared_log;
mod sink;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// Not our ConnectionManager (`crate::topics`): redis's self-reconnecting connection.
use redis::aio::MultiplexedConnection;
use redis::aio::{ConnectionManager as RedisConnection, ConnectionManagerConfig};
use redis::{Client, RedisResult, Script, Value};
use tokio::sync::watch;

use self::follower::follow;
use self::log::EntryId;
use self::members::heartbeat;
pub use self::members::Member;
use self::scrape::watch_runs;
pub use self::shared_log::{LogEntry, Position, Read, SharedLog};
use self::sink::Sink;
use super::{Node, Stored};
use crate::cache::{Encoded, Snapshot};
use crate::config::Config;
use crate::dispatcher::Coalescing;
use crate::metrics::{known, label, Metrics};
use crate::protocol::{HttpError, HttpErrorCode, IngestReply, ScrapePhase, ScrapeProgress};
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

/// How long an append may take before the caller gets 503 `outcome_unknown`.
const APPEND_TIMEOUT: Duration = Duration::from_millis(1500);

/// The append script must end within this much of [`APPEND_TIMEOUT`]: it refuses to start
/// when what it carries could not be done by then ([`script_cost`]), so a request that
/// reaches a Redis frozen until after the caller got its 503 is never applied. The rest is
/// for the reply to come back, and for the clocks of Redis and the node to differ.
const APPEND_FINISH: Duration = Duration::from_millis(1300);

/// The most an append of `items` items of `bytes` bytes takes in Redis: twice what was
/// measured (10,000 snapshots in 0.4 s; copying about 100 MB/s).
fn script_cost(items: usize, bytes: usize) -> Duration {
    Duration::from_micros(80 * items as u64 + bytes as u64 / 50)
}

/// The key under which an ingest's `Idempotency-Key` is kept, per source; with none, a key
/// the script does not touch.
fn idempotency_key(source: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("oddsbus:idempotency:{source}:{key}"),
        None => "oddsbus:idempotency:".into(),
    }
}

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
                window: match Coalescing::from_config(config) {
                    Coalescing::PerSource { window } => window,
                    Coalescing::Off => Duration::ZERO,
                },
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

    /// Appends an ingest of `source`. Returns once this node's cache has applied it (so its
    /// reads show it); 503 `backplane_unavailable` if Redis refused it or never got it
    /// (nothing applied), 503 `outcome_unknown` if it was sent and no answer came.
    pub async fn put(
        &self,
        source: &str,
        snapshots: Vec<(u64, Snapshot)>,
        key: Option<&str>,
    ) -> Result<Stored, HttpError> {
        let items: Vec<Vec<u8>> = snapshots
            .iter()
            .flat_map(|(event_id, snapshot)| {
                let item = log::item(*event_id, &Encoded::new(*event_id, snapshot));
                let details = snapshot.event.as_ref();
                std::iter::once(item).chain(details.map(|d| log::details_item(*event_id, d)))
            })
            .collect();
        let bytes = items.iter().map(Vec::len).sum();
        let mut call = self.invocation(&state_key(source), &idempotency_key(source, key));
        let kept_for = key.map(|_| self.shared.history.ttl);
        self.arguments(&mut call, "odds", script_cost(items.len(), bytes), kept_for);
        call.arg(source);
        for item in &items {
            call.arg(item.as_slice());
        }
        self.appended("ingest", call).await
    }

    /// Appends a scrape run's step; every node publishes it on `scrape_progress`.
    pub async fn step(&self, progress: &ScrapeProgress) -> Result<(), HttpError> {
        let mark = match progress.phase {
            ScrapePhase::Started => "open",
            _ if progress.is_final() => "close",
            _ => "",
        };
        self.append_step(progress, mark).await.map(|_| ())
    }

    /// Appends a step marked `mark` (see `append.lua`); returns whether it was appended.
    async fn append_step(&self, progress: &ScrapeProgress, mark: &str) -> Result<bool, HttpError> {
        let json = serde_json::to_string(progress).map_err(|e| unavailable(e.to_string()))?;
        let mut call = self.invocation(LEASE, &idempotency_key("", None));
        self.arguments(&mut call, "progress", script_cost(1, json.len()), None);
        call.arg(json).arg(mark).arg(progress.run_id.to_string());
        let stored = self.appended("step", call).await?;
        Ok(stored.counts.changed > 0)
    }

    /// An append with its keys (see `append.lua`): the source's state (odds) or the scrape
    /// lease (a step or a cut) third, and the ingest's idempotency key.
    fn invocation(&self, third: &str, idempotency: &str) -> redis::ScriptInvocation<'_> {
        let mut call = self.shared.append.prepare_invoke();
        call.key(META)
            .key(LOG)
            .key(third)
            .key(EVENTS)
            .key(TOUCHED)
            .key(idempotency)
            .key(RECENT);
        call
    }

    /// The arguments every append starts with: among them the deadline by which the script
    /// must start so that, taking `cost`, it ends by [`APPEND_FINISH`], and how long the
    /// idempotency key is kept (`None`: no key).
    fn arguments(
        &self,
        call: &mut redis::ScriptInvocation<'_>,
        kind: &str,
        cost: Duration,
        kept_for: Option<Duration>,
    ) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let deadline = (now + APPEND_FINISH.saturating_sub(cost)).as_millis() as u64;
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        let history = self.shared.history;
        let kept_for = kept_for.map_or(String::new(), |ttl| ttl.as_millis().to_string());
        let shared = &self.shared;
        call.arg(kind)
            .arg(deadline)
            .arg(&epoch[..12])
            .arg(history.size)
            .arg(history.ttl.as_millis() as u64)
            .arg(history.bytes)
            .arg(shared.event_ttl.as_millis() as u64)
            .arg(shared.max_events)
            .arg(shared.sources.join(","))
            .arg(kept_for)
            .arg(&shared.limits)
            .arg(self.window().as_micros() as u64);
    }

    /// How long a group of the log's entries should span at least, as this node asks.
    fn window(&self) -> Duration {
        let shared = &self.shared;
        let pace = shared
            .manager
            .get()
            .map_or(Duration::ZERO, ConnectionManager::pace);
        shared.window.max(pace)
    }

    /// Closes the group `last` left open, unless an entry came after it or closed it.
    async fn cut(&self, connection: &mut MultiplexedConnection, last: EntryId) -> RedisResult<()> {
        let mut call = self.invocation(LEASE, &idempotency_key("", None));
        self.arguments(&mut call, "cut", script_cost(1, 0), None);
        call.arg(last.to_string());
        self.shared
            .metrics
            .redis_requests
            .get_or_create(&label("op", "cut"))
            .inc();
        call.invoke_async::<Value>(connection).await.map(|_| ())
    }

    /// Runs an append within [`APPEND_TIMEOUT`], then waits (within what is left of it) for
    /// this node's cache to apply the entry.
    async fn appended(
        &self,
        op: &'static str,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<Stored, HttpError> {
        let started = Instant::now();
        let mut commands = self.shared.commands.clone();
        let reply = tokio::time::timeout(
            APPEND_TIMEOUT,
            call.invoke_async::<Vec<Value>>(&mut commands),
        )
        .await;
        let metrics = &self.shared.metrics;
        metrics.redis_requests.get_or_create(&label("op", op)).inc();
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            // Refused by the script (past its deadline, or this node's limits are not the
            // cluster's) or by the connection: not applied.
            Ok(Err(error))
                if matches!(error.code(), Some("EXPIRED" | "LIMITS"))
                    || error.is_connection_refusal() =>
            {
                return Err(self.failed(op, unavailable(error.to_string())));
            }
            // Sent, and no answer: the script may have run (a Redis starved of CPU can
            // overrun the deadline's estimate), so the client is told it cannot be known.
            Ok(Err(error)) => return Err(self.failed(op, unknown(error.to_string()))),
            Err(_) => {
                let reason = format!("no answer within {APPEND_TIMEOUT:?}");
                return Err(self.failed(op, unknown(reason)));
            }
        };
        metrics
            .redis_append_seconds
            .observe(started.elapsed().as_secs_f64());
        let stored = append_reply(&reply)
            .ok_or_else(|| self.failed(op, unknown(format!("unexpected reply {reply:?}"))))?;
        if let Some(position) = &stored.position {
            let entry = position.entry();
            let mut applied = self.shared.applied.subscribe();
            let wait = applied.wait_for(|applied| applied.is_some_and(|a| a >= entry));
            let left = APPEND_TIMEOUT.saturating_sub(started.elapsed()) + APPEND_TIMEOUT;
            if tokio::time::timeout(left, wait).await.is_err() {
                // Redis has it: the reply is still a success, but this node's reads lag.
                tracing::warn!(event = "cluster.apply_late", %entry, "the follower has not applied an acknowledged entry yet");
            }
        }
        Ok(stored)
    }

    /// Counts and logs an append that failed with `error`.
    fn failed(&self, op: &'static str, error: HttpError) -> HttpError {
        self.shared
            .metrics
            .redis_errors
            .get_or_create(&label("op", op))
            .inc();
        tracing::warn!(event = "cluster.append_failed", op, code = error.code.as_str(), reason = %error.message);
        error
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

/// An append sent to Redis whose answer never came, or made no sense: it may have run.
fn unknown(reason: String) -> HttpError {
    HttpError::new(
        HttpErrorCode::OutcomeUnknown,
        format!(
            "the cluster's Redis did not answer ({reason}); the write may or may not be \
             applied: retry with the same Idempotency-Key"
        ),
    )
}

/// An append Redis refused, or that never reached it: nothing was applied.
fn unavailable(reason: String) -> HttpError {
    HttpError::new(
        HttpErrorCode::BackplaneUnavailable,
        format!("the cluster's Redis is unavailable ({reason}); nothing was applied, retry later"),
    )
}

/// Reads the script's reply `{epoch, entry, accepted, stale, changed, replayed}`.
fn append_reply(reply: &[Value]) -> Option<Stored> {
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let count = |value: &Value| match value {
        Value::Int(n) => usize::try_from(*n).ok(),
        _ => None,
    };
    let [epoch, entry, accepted, stale, changed, replayed] = reply else {
        return None;
    };
    let entry = text(entry)?;
    let position = if entry.is_empty() {
        None
    } else {
        let entry: EntryId = entry.parse().ok()?;
        Some(Position::at(&Arc::from(text(epoch)?), entry))
    };
    let stored = Stored {
        counts: IngestReply {
            accepted: count(accepted)?,
            changed: count(changed)?,
            stale: count(stale)?,
        },
        replayed: count(replayed)? == 1,
        position,
    };
    Some(stored)
}
