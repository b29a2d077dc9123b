//! The alerts the odds analysis raised, kept in `odds_alerts` over the retention and read
//! back for `GET /api/alerts` where a node's memory does not reach (before its start, or past
//! the day it keeps).
//!
//! Fed like the other writers: the analysis's listener only queues, at most [`QUEUE_BYTES`]
//! of alerts (while the database is away the oldest leave first, counted in
//! `alerts_unpersisted_total`), and one task inserts what waits, in batches. In a cluster
//! every node raises the same alerts from the same log, so only the node that holds the
//! writer's lease (`cluster.rs`) keeps its own: while the lease moves, the alerts of those
//! few seconds may be missing or twice.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::history::system_time;
use super::write::Attempts;
use super::{retention, within, Store, READ_TIMEOUT};
use crate::analysis::{AlertQuery, Analysis, KeptAlert};

/// Most bytes of alerts waiting for the database.
const QUEUE_BYTES: usize = 4 << 20;

/// Most alerts inserted at once.
const BATCH: usize = 1_000;

/// How long a new alert waits for others to join its insert.
const GATHER: Duration = Duration::from_millis(20);

/// Longest one insert may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

const INSERT: &str = "
    INSERT INTO odds_alerts (raised_at, kind, severity, event_id, alert)
    SELECT r, k, s, e, a::json
    FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::text[])
         AS t(r, k, s, e, a)";

/// The alerts raised in [$1, $2) of the kinds $3 and severities $4 (empty: any), newest
/// first, at most $5.
const READ: &str = "
    SELECT alert::text FROM odds_alerts
    WHERE raised_at >= $1 AND raised_at < $2
      AND (cardinality($3::text[]) = 0 OR kind = ANY($3))
      AND (cardinality($4::text[]) = 0 OR severity = ANY($4))
    ORDER BY raised_at DESC
    LIMIT $5";

/// Alerts waiting for the writer, oldest first.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    alerts: VecDeque<KeptAlert>,
    bytes: usize,
}

impl Store {
    /// Queues every alert `analysis` raises from now on, while this node writes alerts, for
    /// the writer [`Store::start`] starts.
    pub fn keep_alerts(&self, analysis: &Analysis) {
        let shared = self.shared.clone();
        analysis.on_alert(move |raised| {
            if !shared.writes_alerts.load(Ordering::Relaxed) {
                return;
            }
            let mut waiting = shared.alerts.lock();
            waiting.bytes += raised.json.len();
            waiting.alerts.push_back(raised.clone());
            let mut dropped = 0;
            while waiting.bytes > QUEUE_BYTES {
                let Some(gone) = waiting.alerts.pop_front() else {
                    break;
                };
                waiting.bytes -= gone.json.len();
                dropped += 1;
            }
            drop(waiting);
            shared.metrics.alerts_unpersisted.inc_by(dropped);
            shared.alerts_queued.notify_one();
        });
    }

    /// Takes up to [`BATCH`] waiting alerts, the oldest first.
    fn take_alerts(&self) -> Vec<KeptAlert> {
        let mut waiting = self.shared.alerts.lock();
        let count = waiting.alerts.len().min(BATCH);
        let batch: Vec<KeptAlert> = waiting.alerts.drain(..count).collect();
        waiting.bytes -= batch.iter().map(|r| r.json.len()).sum::<usize>();
        batch
    }

    /// Puts back in front a batch that failed, unless newer alerts filled the queue.
    fn put_back_alerts(&self, batch: Vec<KeptAlert>) {
        let mut waiting = self.shared.alerts.lock();
        let mut dropped = 0;
        for raised in batch.into_iter().rev() {
            if waiting.bytes + raised.json.len() > QUEUE_BYTES {
                dropped += 1;
                continue;
            }
            waiting.bytes += raised.json.len();
            waiting.alerts.push_front(raised);
        }
        drop(waiting);
        self.shared.metrics.alerts_unpersisted.inc_by(dropped);
    }

    /// The alerts `query` asks for that were raised before `until` (Unix ms), newest first,
    /// each as JSON, at most `limit`.
    pub async fn alerts(
        &self,
        query: &AlertQuery,
        until: i64,
        limit: usize,
    ) -> Result<Vec<String>, String> {
        let read = async {
            let client = self.shared.pool.get().await.map_err(|e| e.to_string())?;
            let kinds: Vec<&str> = query.kinds.iter().map(|k| k.name()).collect();
            let severities: Vec<&str> = query.severities.iter().map(|s| s.name()).collect();
            let (since, until) = (system_time(query.since), system_time(until));
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = client
                .query(READ, &[&since, &until, &kinds, &severities, &limit])
                .await
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|row| row.try_get::<_, String>(0).map_err(|e| e.to_string()))
                .collect()
        };
        within(READ_TIMEOUT, read).await
    }
}

/// Inserts the alerts that wait, until `stop`; then once more what still waits.
pub(super) async fn write_alerts(store: Store, stop: CancellationToken) {
    let mut attempts = Attempts::new();
    // The latest day whose table the writer made sure of.
    let mut day = None;
    loop {
        let stopping = tokio::select! {
            () = store.shared.alerts_queued.notified() => false,
            () = stop.cancelled() => true,
        };
        if !stopping {
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                () = stop.cancelled() => {}
            }
        }
        loop {
            let batch = store.take_alerts();
            if batch.is_empty() {
                break;
            }
            match within(WRITE_TIMEOUT, insert(&store, &batch, &mut day)).await {
                Ok(rows) => attempts.succeeded(&store, vec![("odds_alerts", rows)]),
                Err(error) => {
                    store.put_back_alerts(batch);
                    let wait = attempts.failed(&store, &error);
                    if stop.is_cancelled() {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Inserts `batch` in one statement, first creating the tables of its days unless `day`
/// says they exist; returns the rows inserted.
async fn insert(store: &Store, batch: &[KeptAlert], day: &mut Option<u64>) -> Result<u64, String> {
    let client = store.shared.pool.get().await.map_err(|e| e.to_string())?;
    let mut raised_at: Vec<SystemTime> = Vec::with_capacity(batch.len());
    let mut event_ids = Vec::with_capacity(batch.len());
    for raised in batch {
        let at = system_time(raised.raised);
        let of = retention::day_of(at);
        if day.is_none_or(|made| of > made) {
            retention::create_day(&client, of).await?;
            *day = Some(of);
        }
        raised_at.push(at);
        event_ids.push(i64::try_from(raised.event_id).map_err(|e| e.to_string())?);
    }
    let kinds: Vec<&str> = batch.iter().map(|r| r.kind.name()).collect();
    let severities: Vec<&str> = batch.iter().map(|r| r.severity.name()).collect();
    let alerts: Vec<&str> = batch.iter().map(|r| &*r.json).collect();
    client
        .execute(
            INSERT,
            &[&raised_at, &kinds, &severities, &event_ids, &alerts],
        )
        .await
        .map_err(|e| e.to_string())
}
