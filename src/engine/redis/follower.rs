//! The log follower: one task per node that reads the cluster's log in order and applies
//! each entry to the node's cache (changes then reach subscribers through the cache's
//! callback, the bridge and the dispatcher, as on a single node) or, for a scrape step, hands
//! it to the dispatcher. It reads heartbeats in the same blocking read (`members.rs`).
//!
//! A node joins by loading the whole state and then following the log from the entry the
//! state was read at: applying is idempotent (`crate::cache::Logged`), so nothing is missed
//! and nothing announced twice. It joins again when the epoch changes (Redis lost its data:
//! its cache is cleared first) and reloads when it finds that entries it had not read left
//! the log (it fell behind); either way its subscribers get `resync`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, RedisResult, Value};
use tokio_util::sync::CancellationToken;

use super::log::{self, Body, Entry, EntryId};
use super::sink::Sink;
use super::{state_key, Cluster, EVENTS, LOG, META, NODES};
use crate::cache::Details;
use crate::metrics::label;

/// How long one blocking read waits for new entries. The connection's response timeout is
/// longer by [`SLACK`], so a read only times out when Redis stopped answering (the redis
/// crate's default of 500 ms would cut every idle read short).
const BLOCK: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(1000);

/// Entries taken per read, and state entries per scan step.
const BATCH: usize = 512;

/// Follows the log until `stop`, reconnecting with backoff whenever Redis fails.
pub async fn follow(cluster: Cluster, sink: Sink, stop: CancellationToken) {
    let mut follower = Follower {
        cluster,
        sink,
        epoch: None,
        last: EntryId::default(),
        open: None,
        nodes: "$".to_owned(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = tokio::select! {
            result = follower.connect_and_follow() => result,
            () = stop.cancelled() => return,
        };
        if let Err(Stop::Refused(why)) = result {
            follower.cluster.refuse(why);
            return;
        }
        if let Err(Stop::Redis(error)) = result {
            let metrics = &follower.cluster.shared.metrics;
            metrics
                .redis_errors
                .get_or_create(&label("op", "follow"))
                .inc();
            tracing::warn!(event = "cluster.follow_failed", %error, retry_in_ms = backoff.as_millis() as u64);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Why following stopped: Redis failed (it is retried), or this node may not follow.
enum Stop {
    Redis(redis::RedisError),
    /// Its limits differ from the cluster's: the reason.
    Refused(String),
}

impl From<redis::RedisError> for Stop {
    fn from(error: redis::RedisError) -> Stop {
        Stop::Redis(error)
    }
}

struct Follower {
    cluster: Cluster,
    /// Where what it reads goes.
    sink: Sink,
    /// The epoch followed; `None` before the first join.
    epoch: Option<Arc<str>>,
    /// The last entry applied.
    last: EntryId,
    /// Since when the last entry applied left its group open (nothing came after it).
    open: Option<Instant>,
    /// The last heartbeat read.
    nodes: String,
}

impl Follower {
    async fn connect_and_follow(&mut self) -> Result<(), Stop> {
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(BLOCK + SLACK));
        let client = &self.cluster.shared.client;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&settings)
            .await?;
        if self.epoch.is_none() {
            self.join(&mut connection).await?;
        }
        loop {
            self.read(&mut connection).await?;
        }
    }

    /// One blocking read of the log and the heartbeats, and what it found applied. A group
    /// left open for a window with nothing after it is cut here: by whichever member comes
    /// first, so that a node that died after appending holds nobody up.
    async fn read(&mut self, connection: &mut MultiplexedConnection) -> Result<(), Stop> {
        let window = self.cluster.shared.window;
        let block = match self.open {
            Some(since) if since.elapsed() >= window => {
                // Read back as an entry that closes; if it fails, tried again a window on
                // (a broken connection fails the read below as well).
                if let Err(error) = self.cluster.cut(connection, self.last).await {
                    tracing::warn!(event = "cluster.cut_failed", %error);
                }
                self.open = Some(Instant::now());
                window
            }
            Some(since) => window.saturating_sub(since.elapsed()),
            None => BLOCK,
        };
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(META).arg("epoch").arg("top");
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            // 0 would block for ever.
            .arg(block.as_millis().max(1) as u64);
        pipe.arg("STREAMS")
            .arg(LOG)
            .arg(NODES)
            .arg(self.last.to_string())
            .arg(&self.nodes);
        self.count("read");
        let ((epoch, top), read): ((Option<String>, Option<u64>), Option<StreamReadReply>) =
            pipe.query_async(connection).await?;
        if epoch.as_deref() != self.epoch.as_deref() {
            tracing::warn!(event = "cluster.epoch_changed", old = ?self.epoch, new = ?epoch, "Redis lost the log; loading the state again");
            return self.join(connection).await;
        }
        for key in read.map(|r| r.keys).unwrap_or_default() {
            for stream_id in key.ids {
                if key.key == NODES {
                    self.cluster.heard(|name| text(&stream_id, name));
                    self.nodes = stream_id.id;
                } else if !self.apply(&stream_id) {
                    tracing::warn!(event = "cluster.fell_behind", last = %self.last, "entries left the log before this node read them; reloading");
                    return Ok(self.reload(connection).await?);
                }
            }
        }
        let lag = top.unwrap_or(0).saturating_sub(self.last.top);
        self.cluster.shared.metrics.cluster_lag.set(lag as i64);
        Ok(())
    }

    /// Applies one log entry; `false` if it does not follow the last one applied.
    fn apply(&mut self, stream_id: &StreamId) -> bool {
        let entry = match log::entry(&stream_id.id, |name| bytes(stream_id, name)) {
            Ok(entry) => entry,
            Err(error) => {
                // Written by another version or by hand: skipping it beats stopping.
                tracing::error!(event = "cluster.bad_entry", id = %stream_id.id, %error);
                if let Ok(id) = stream_id.id.parse() {
                    self.advance(id);
                }
                return true;
            }
        };
        if entry.prev != self.last {
            return false;
        }
        let closes = entry.closes;
        match entry.body {
            Body::Odds(source, logged, details) => self.sink.odds(&source, logged, details),
            Body::Progress(progress) => self.sink.step(progress, entry.id.top),
            Body::Cut => {}
        }
        self.ended(closes);
        self.advance(entry.id);
        true
    }

    /// After an entry: the end of its group, or a group (still) open.
    fn ended(&mut self, closes: bool) {
        if closes {
            self.sink.cut();
            self.open = None;
        } else {
            self.open = Some(Instant::now());
        }
    }

    fn advance(&mut self, id: EntryId) {
        self.last = id;
        self.cluster.shared.applied.send_replace(Some(id));
    }

    /// Joins the log: its epoch and limits (set if Redis has none; refused if they are not
    /// this node's), the history it holds (published again here, so clients recover on this
    /// node too), then the whole state.
    async fn join(&mut self, connection: &mut MultiplexedConnection) -> Result<(), Stop> {
        let candidate = uuid::Uuid::new_v4().simple().to_string();
        let limits = &self.cluster.shared.limits;
        self.count("join");
        let (_, _, (epoch, last, held)): (Value, Value, (String, Option<String>, String)) =
            redis::pipe()
                .atomic()
                .cmd("HSETNX")
                .arg(META)
                .arg("epoch")
                .arg(&candidate[..12])
                .cmd("HSETNX")
                .arg(META)
                .arg("limits")
                .arg(limits)
                .cmd("HMGET")
                .arg(META)
                .arg("epoch")
                .arg("last")
                .arg("limits")
                .query_async(connection)
                .await?;
        if let Some(why) = super::differing_limit(limits, &held) {
            return Err(Stop::Refused(why));
        }
        let last: EntryId = last.and_then(|l| l.parse().ok()).unwrap_or_default();
        if self.epoch.is_some() {
            self.sink.clear();
        }
        self.open = None;
        // Loaded before clients are told to refetch, so that they find all of it.
        self.load(connection).await?;
        let epoch: Arc<str> = Arc::from(epoch);
        // The history the log holds, up to `last`, a page at a time (a page fits in one
        // response timeout however large the entries).
        let mut from = "-".to_owned();
        let mut restarted = false;
        loop {
            self.count("join");
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(LOG)
                .arg(&from)
                .arg(last.to_string())
                .arg("COUNT")
                .arg(BATCH)
                .query_async(connection)
                .await?;
            let entries: Vec<Entry> = page
                .ids
                .iter()
                .filter_map(|id| log::entry(&id.id, |name| bytes(id, name)).ok())
                .collect();
            if !restarted {
                let top = entries.first().map_or(last.top, |entry| entry.prev.top);
                self.sink.restart(epoch.clone(), top);
                restarted = true;
            }
            for entry in entries {
                let closes = entry.closes;
                self.republish(entry);
                self.ended(closes);
            }
            match page.ids.last() {
                Some(newest) if page.ids.len() == BATCH => from = format!("({}", newest.id),
                _ => break,
            }
        }
        if self.nodes == "$" {
            let newest: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(NODES)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(connection)
                .await?;
            self.nodes = newest
                .ids
                .first()
                .map_or_else(|| "0-0".to_owned(), |id| id.id.clone());
        }
        tracing::info!(event = "cluster.joined", %epoch, top = last.top, events = self.sink.events());
        *self.cluster.shared.epoch.lock() = Some(epoch.clone());
        self.epoch = Some(epoch);
        self.advance(last);
        Ok(())
    }

    /// After falling behind: the whole state again, and `resync` for every subscriber.
    async fn reload(&mut self, connection: &mut MultiplexedConnection) -> RedisResult<()> {
        let last: Option<String> = redis::cmd("HGET")
            .arg(META)
            .arg("last")
            .query_async(connection)
            .await?;
        let last: EntryId = last.and_then(|l| l.parse().ok()).unwrap_or_default();
        // Loaded before clients are told to refetch, so that they find all of it.
        self.load(connection).await?;
        if let Some(epoch) = self.epoch.clone() {
            self.sink.restart(epoch, last.top);
        }
        self.open = None;
        self.advance(last);
        Ok(())
    }

    /// Hands a held entry's messages to the dispatcher without applying it: the state,
    /// loaded next, has it already.
    fn republish(&self, entry: Entry) {
        match entry.body {
            Body::Odds(source, logged, _) => {
                let changes = logged.into_iter().filter(|l| l.offset.is_some()).collect();
                self.sink.republish(&source, changes);
            }
            Body::Progress(progress) => self.sink.step(progress, entry.id.top),
            Body::Cut => {}
        }
    }

    /// Loads every source's state into the cache, then the events' details.
    async fn load(&mut self, connection: &mut MultiplexedConnection) -> RedisResult<()> {
        for source in self.cluster.shared.sources.clone() {
            let key = state_key(&source);
            let mut cursor = 0u64;
            loop {
                let (next, pairs) = self.scan(connection, &key, cursor).await?;
                let logged = pairs.iter().filter_map(|(event_id, value)| {
                    match log::state_value(*event_id, value) {
                        Ok(logged) => Some(logged),
                        Err(error) => {
                            tracing::error!(event = "cluster.bad_state", %source, event_id, %error);
                            None
                        }
                    }
                });
                self.sink.odds(&source, logged.collect(), Vec::new());
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let mut cursor = 0u64;
        loop {
            let (next, pairs) = self.scan(connection, EVENTS, cursor).await?;
            let mut by_source: HashMap<&str, Vec<(u64, Arc<Details>)>> = HashMap::new();
            for (event_id, value) in &pairs {
                match log::held_details(value) {
                    Ok((source, details)) => {
                        by_source
                            .entry(source)
                            .or_default()
                            .push((*event_id, details));
                    }
                    Err(error) => tracing::error!(event = "cluster.bad_state", event_id, %error),
                }
            }
            for (source, details) in by_source {
                self.sink.details(source, details);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(())
    }

    /// One step of `HSCAN` over hash `key` whose fields are event ids.
    async fn scan(
        &self,
        connection: &mut MultiplexedConnection,
        key: &str,
        cursor: u64,
    ) -> RedisResult<(u64, Vec<(u64, Vec<u8>)>)> {
        self.count("load");
        let mut scan = redis::cmd("HSCAN");
        scan.arg(key).arg(cursor).arg("COUNT").arg(BATCH);
        scan.query_async(connection).await
    }

    fn count(&self, op: &'static str) {
        self.cluster
            .shared
            .metrics
            .redis_requests
            .get_or_create(&label("op", op))
            .inc();
    }
}

pub(super) fn bytes(stream_id: &StreamId, name: &str) -> Option<Vec<u8>> {
    match stream_id.map.get(name)? {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        _ => None,
    }
}

fn text(stream_id: &StreamId, name: &str) -> Option<String> {
    bytes(stream_id, name).and_then(|b| String::from_utf8(b).ok())
}
