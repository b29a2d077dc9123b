//! Appending to the cluster's log: ingests, scrape steps and cuts, each one call of
//! `append.lua` within a deadline, then (for an ingest or a step) a wait for this node's
//! follower to apply the entry, and what a failed call answers.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::log::{self, EntryId};
use super::{state_key, Cluster, Position, EVENTS, LEASE, LOG, META, RECENT, TOUCHED};
use crate::cache::{Encoded, Snapshot};
use crate::engine::Stored;
use crate::metrics::label;
use crate::protocol::{HttpError, HttpErrorCode, IngestReply, ScrapePhase, ScrapeProgress};
use crate::topics::ConnectionManager;

/// How long an append may take before the caller gets 503 `outcome_unknown`.
pub(super) const APPEND_TIMEOUT: Duration = Duration::from_millis(1500);

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

impl Cluster {
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
    pub(super) async fn append_step(
        &self,
        progress: &ScrapeProgress,
        mark: &str,
    ) -> Result<bool, HttpError> {
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
    pub(super) async fn cut(
        &self,
        connection: &mut MultiplexedConnection,
        last: EntryId,
    ) -> RedisResult<()> {
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
    pub(super) fn failed(&self, op: &'static str, error: HttpError) -> HttpError {
        self.shared
            .metrics
            .redis_errors
            .get_or_create(&label("op", op))
            .inc();
        tracing::warn!(event = "cluster.append_failed", op, code = error.code.as_str(), reason = %error.message);
        error
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
pub(super) fn unavailable(reason: String) -> HttpError {
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
