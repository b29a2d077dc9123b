//! Scrape runs across the cluster: at most one at a time, held by a lease in Redis that the
//! node running it renews; periodic runs started once per interval for the whole cluster;
//! and a run whose node died ended `failed` by another node once its lease expires, so that
//! every stream following it ends.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Cluster, LEASE, META, PERIOD};
use crate::metrics::label;
use crate::protocol::{HttpError, ScrapePhase, ScrapeProgress};

/// How long a lease lasts without renewal: a killed node blocks runs for at most this long.
const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_millis(1500);

/// How often each node looks for a run whose lease expired.
const ORPHAN_CHECK: Duration = Duration::from_secs(1);

/// Takes the lease for `run` unless another run holds it; returns that run if so.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
        if held then return held end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return false",
    )
});

/// Renews the lease (ARGV[2] ms) or, with ARGV[2] = 0, releases it, if `run` still holds it.
static KEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])",
    )
});

impl Cluster {
    /// Takes the scrape lease for `run`: `None` if taken, or the run that holds it.
    pub async fn claim_run(&self, run: Uuid) -> Result<Option<Uuid>, HttpError> {
        let ttl = LEASE_TTL.as_millis() as u64;
        let mut call = CLAIM.prepare_invoke();
        call.key(LEASE).arg(run.to_string()).arg(ttl);
        let held: Option<String> = self.call("lease", call).await?;
        Ok(held.and_then(|held| held.parse().ok()))
    }

    /// Renews `run`'s lease until `done`, then releases it.
    pub async fn keep_lease(&self, run: Uuid, done: CancellationToken) {
        loop {
            let renew = tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => LEASE_TTL.as_millis() as u64,
                () = done.cancelled() => 0,
            };
            let mut call = KEEP.prepare_invoke();
            call.key(LEASE).arg(run.to_string()).arg(renew);
            match self.call::<i64>("lease", call).await {
                Ok(0) if renew > 0 => tracing::warn!(event = "scrape.lease_lost", %run),
                Ok(_) => {}
                Err(error) => tracing::warn!(event = "scrape.lease_failed", %run, %error),
            }
            if renew == 0 {
                return;
            }
        }
    }

    /// Whether this node starts this period's periodic run: the first node to ask in each
    /// `interval` does.
    pub async fn claim_period(&self, interval: Duration) -> bool {
        let mut claim = redis::cmd("SET");
        let ttl = (interval.as_millis() as u64).max(1);
        claim
            .arg(PERIOD)
            .arg(&*self.shared.node)
            .arg("NX")
            .arg("PX")
            .arg(ttl);
        let mut commands = self.shared.commands.clone();
        self.count("period");
        let reply = tokio::time::timeout(
            super::append::APPEND_TIMEOUT,
            claim.query_async::<Option<String>>(&mut commands),
        )
        .await;
        matches!(reply, Ok(Ok(Some(_))))
    }

    /// Runs a script invocation within the append timeout.
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, HttpError> {
        let mut commands = self.shared.commands.clone();
        self.count(op);
        match tokio::time::timeout(
            super::append::APPEND_TIMEOUT,
            call.invoke_async(&mut commands),
        )
        .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failed(op, super::append::unavailable(error.to_string()))),
            Err(_) => Err(self.failed(op, super::append::unavailable("no answer in time".into()))),
        }
    }

    fn count(&self, op: &'static str) {
        self.shared
            .metrics
            .redis_requests
            .get_or_create(&label("op", op))
            .inc();
    }
}

/// Every [`ORPHAN_CHECK`] until `stop`: if a run is open but nobody holds its lease (its
/// node died), ends it `failed`. Every node checks; the append script lets only one do it.
pub async fn watch_runs(cluster: Cluster, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(ORPHAN_CHECK) => {}
            () = stop.cancelled() => return,
        }
        let mut commands = cluster.shared.commands.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(META)
            .arg("run")
            .cmd("EXISTS")
            .arg(LEASE);
        cluster.count("runs");
        let reply = tokio::time::timeout(
            super::append::APPEND_TIMEOUT,
            pipe.query_async::<(Option<String>, bool)>(&mut commands),
        )
        .await;
        let Ok(Ok((Some(run), false))) = reply else {
            continue;
        };
        let Ok(run_id) = run.parse() else {
            continue;
        };
        let step = ScrapeProgress {
            run_id,
            phase: ScrapePhase::Failed,
            platform: None,
            events_scraped: 0,
            events_total: 0,
            message: "run lost: the node running it stopped answering and its lease expired".into(),
        };
        if let Ok(true) = cluster.append_step(&step, "orphan").await {
            tracing::warn!(event = "scrape.orphan_failed", %run_id);
        }
    }
}
