//! The days of the price history and of the alerts, and what `--retention` keeps.
//!
//! `odds_history` and `odds_alerts` are partitioned by the UTC day of their rows' time
//! (`recorded_at`, `raised_at`): one table per day, `odds_history_YYYYMMDD`, which the writers
//! create before they write the day's first row. Retention drops a day's table whole once
//! all of it is older than `--retention` days (never a slow `DELETE`), and deletes the current
//! odds and details of events not updated for as long, with the opening prices of what is
//! gone. It runs once the node serves, then every [`EVERY`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::macros::format_description;
use time::{Date, OffsetDateTime};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::{Store, RETENTION_LOCK, SCHEMA_LOCK};

/// How often retention runs: a day's table goes at most this late.
const EVERY: Duration = Duration::from_secs(3600);

const SECS_PER_DAY: u64 = 86_400;

/// The tables partitioned by day.
const BY_DAY: [&str; 2] = ["odds_history", "odds_alerts"];

/// What retention removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Days' tables dropped (of the history and of the alerts).
    pub days: usize,
    /// Market rows of current odds deleted (events not updated within the retention).
    pub markets: u64,
}

/// The UTC day `time` falls in, in days since 1970-01-01.
pub fn day_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / SECS_PER_DAY)
}

/// The date of `day`, as `YYYY-MM-DD` and as `YYYYMMDD` (the table's suffix).
fn date(day: u64) -> Option<(String, String)> {
    let secs = i64::try_from(day * SECS_PER_DAY).ok()?;
    let date = OffsetDateTime::from_unix_timestamp(secs).ok()?.date();
    let long = date
        .format(format_description!("[year]-[month]-[day]"))
        .ok()?;
    let short = date
        .format(format_description!("[year][month][day]"))
        .ok()?;
    Some((long, short))
}

/// The day a table of `parent` holds, from its name.
fn day_of_table(parent: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(parent)?.strip_prefix('_')?;
    let date = Date::parse(digits, format_description!("[year][month][day]")).ok()?;
    let secs = date.midnight().assume_utc().unix_timestamp();
    u64::try_from(secs).ok().map(|secs| secs / SECS_PER_DAY)
}

/// Creates the tables of `day` if they do not exist yet.
pub async fn create_day(client: &Client, day: u64) -> Result<(), String> {
    let ((from, table), (to, _)) = date(day)
        .zip(date(day + 1))
        .ok_or_else(|| format!("day {day} has no date"))?;
    // One implicit transaction, under a lock: two nodes creating the same table at once
    // would collide in the catalog.
    let mut statement = format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})");
    for parent in BY_DAY {
        statement += &format!(
            "; CREATE TABLE IF NOT EXISTS {parent}_{table} PARTITION OF {parent} \
             FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00')"
        );
    }
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| e.to_string())
}

/// Applies a retention of `days` as of `now`.
pub async fn apply(client: &Client, days: u32, now: SystemTime) -> Result<Removed, String> {
    let kept = Duration::from_secs(u64::from(days) * SECS_PER_DAY);
    let cutoff = now.checked_sub(kept).unwrap_or(UNIX_EPOCH);
    // A day's table goes once the day after it began before the cutoff.
    let first_kept = day_of(cutoff);
    let tables = client
        .query(
            "SELECT p.relname, c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = ANY($1)",
            &[&BY_DAY.as_slice()],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut removed = Removed::default();
    for row in tables {
        let (Ok(parent), Ok(name)) = (row.try_get::<_, &str>(0), row.try_get::<_, String>(1))
        else {
            continue;
        };
        if day_of_table(parent, &name).is_some_and(|day| day < first_kept) {
            let statement = format!("DROP TABLE IF EXISTS {name}");
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| e.to_string())?;
            removed.days += 1;
        }
    }
    let row = client
        .query_one(
            "WITH gone AS (
                 DELETE FROM odds_current WHERE updated_at < $1 RETURNING event_id, source
             ), details AS (
                 DELETE FROM event_details WHERE updated_at < $1
             ), openings AS (
                 DELETE FROM odds_opening o
                 USING (SELECT DISTINCT event_id, source FROM gone) g
                 WHERE o.event_id = g.event_id AND o.source = g.source
                   AND NOT EXISTS (SELECT 1 FROM odds_current c
                                   WHERE c.event_id = o.event_id AND c.source = o.source
                                     AND c.updated_at >= $1)
             )
             SELECT count(*) FROM gone",
            &[&cutoff],
        )
        .await
        .map_err(|e| e.to_string())?;
    removed.markets = u64::try_from(row.try_get::<_, i64>(0).unwrap_or(0)).unwrap_or(0);
    Ok(removed)
}

/// Runs `work` on `client` unless another node's retention runs: `None` then.
async fn alone<T>(
    client: &Client,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<Option<T>, String> {
    let locked = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
        .map_err(|e| e.to_string())?;
    if !locked {
        return Ok(None);
    }
    let done = work.await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK])
        .await;
    let done = done?;
    unlocked.map_err(|e| e.to_string())?;
    Ok(Some(done))
}

/// Applies the retention now (once the node serves: the warm start does not wait for it),
/// then every [`EVERY`], until `stop`.
pub async fn keep_applying(store: Store, stop: CancellationToken) {
    let days = store.shared.retention;
    let mut every = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let applied = match store.shared.pool.get().await {
            Ok(client) => alone(&client, apply(&client, days, SystemTime::now())).await,
            Err(error) => Err(error.to_string()),
        };
        match applied {
            // Another node of the cluster is applying it.
            Ok(None) => {}
            Ok(Some(removed)) => tracing::info!(
                event = "store.retention",
                days_dropped = removed.days,
                markets_deleted = removed.markets
            ),
            // The writer already warns of an outage; the next hour tries again.
            Err(error) => tracing::debug!(event = "store.retention_failed", %error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_table_is_named_by_its_date_and_read_back() {
        let day = 20_426; // 2025-12-04
        let (from, table) = date(day).unwrap();
        assert_eq!((from.as_str(), table.as_str()), ("2025-12-04", "20251204"));
        assert_eq!(
            day_of_table("odds_history", "odds_history_20251204"),
            Some(day)
        );
        assert_eq!(
            day_of_table("odds_alerts", "odds_alerts_20251204"),
            Some(day)
        );
        assert_eq!(day_of_table("odds_history", "odds_history_default"), None);
        let noon = UNIX_EPOCH + Duration::from_secs(day * SECS_PER_DAY + 43_200);
        assert_eq!(day_of(noon), day);
    }
}
