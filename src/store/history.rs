//! Reading the price history back: one event's changes in a window, a page at a time, with
//! each outcome's opening price.
//!
//! A page holds at most `limit` market rows and ends between two capture times, so the next
//! page (from `next_from`) neither repeats nor skips a row; only when more than `limit` rows
//! share one capture time does a page hold all of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio_postgres::Row;

use super::{within, Store, READ_TIMEOUT};
use crate::cache::intern;
use crate::protocol::{HistoryQuery, HistoryReply, PricePoint, PriceSeries, Timestamp};

/// Rows of `odds_history` in the window, oldest first; `$6` caps them.
const CHANGES: &str = "
    SELECT source, market_id, line, outcomes::text,
           (extract(epoch FROM captured_at) * 1000)::bigint
    FROM odds_history
    WHERE event_id = $1 AND captured_at >= $2 AND captured_at < $3
      AND ($4::text IS NULL OR source = $4) AND ($5::text IS NULL OR market_id = $5)
    ORDER BY captured_at, source, market_id, line
    LIMIT $6";

const OPENINGS: &str = "
    SELECT source, market_id, line, outcome, odds,
           (extract(epoch FROM captured_at) * 1000)::bigint
    FROM odds_opening
    WHERE event_id = $1 AND ($2::text IS NULL OR source = $2)
      AND ($3::text IS NULL OR market_id = $3)";

/// Whether the database holds any price of an event.
const KNOWN: &str = "SELECT 1 FROM odds_opening WHERE event_id = $1 LIMIT 1";

/// 10000-01-01 in Unix ms: later than any time a snapshot can carry.
const YEAR_10000: i64 = 253_402_300_800_000;

/// An outcome's price in a row's outcomes.
#[derive(Deserialize)]
struct Outcome {
    name: String,
    odds: f64,
}

/// A series' key: source, market, line (as stored: `''` for none) and outcome.
type Key = (Arc<str>, Arc<str>, String, Arc<str>);

impl Store {
    /// The changes of `event_id` that `query` asks for (none may be), or `None` when the
    /// database holds no price of the event at all.
    pub async fn history(
        &self,
        event_id: u64,
        query: &HistoryQuery,
    ) -> Result<Option<HistoryReply>, String> {
        within(READ_TIMEOUT, self.read_history(event_id, query)).await
    }

    async fn read_history(
        &self,
        event_id: u64,
        query: &HistoryQuery,
    ) -> Result<Option<HistoryReply>, String> {
        let id = i64::try_from(event_id).map_err(|e| e.to_string())?;
        let from = system_time(query.from.map_or(i64::MIN, Timestamp::unix_millis));
        let to = system_time(query.to.map_or(YEAR_10000, Timestamp::unix_millis));
        let (source, market) = (query.source.as_deref(), query.market.as_deref());
        let client = self.shared.pool.get().await.map_err(|e| e.to_string())?;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let mut rows = client
            .query(CHANGES, &[&id, &from, &to, &source, &market, &(limit + 1)])
            .await
            .map_err(|e| e.to_string())?;
        let mut next_from = None;
        if rows.len() > query.limit {
            // The page ends before the first capture time it cannot hold whole.
            let first_out = millis(&rows[query.limit]);
            rows.retain(|row| millis(row) < first_out);
            if rows.is_empty() {
                let at = system_time(first_out);
                let just_after = system_time(first_out + 1);
                rows = client
                    .query(
                        CHANGES,
                        &[&id, &at, &just_after, &source, &market, &i64::MAX],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                next_from = Timestamp::from_unix_millis(first_out + 1);
            } else {
                next_from = Timestamp::from_unix_millis(first_out);
            }
        }
        let openings = client
            .query(OPENINGS, &[&id, &source, &market])
            .await
            .map_err(|e| e.to_string())?;
        if rows.is_empty() && openings.is_empty() {
            let known = client
                .query_opt(KNOWN, &[&id])
                .await
                .map_err(|e| e.to_string())?;
            if known.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(HistoryReply {
            event_id,
            history: series(&rows, &openings),
            next_from,
        }))
    }
}

/// The instant `millis` after the Unix epoch, clamped to it.
pub(super) fn system_time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A row's capture time in Unix ms (its last column).
fn millis(row: &Row) -> i64 {
    row.try_get(row.len() - 1).unwrap_or(0)
}

/// The series of `rows` (of [`CHANGES`]), each with its opening from `openings`, ordered by
/// source, market, line and outcome; a point equal to the one before it is left out (a row
/// holds its market's every outcome, not only the one that moved).
fn series(rows: &[Row], openings: &[Row]) -> Vec<PriceSeries> {
    let mut series: BTreeMap<Key, Vec<PricePoint>> = BTreeMap::new();
    for row in rows {
        let (Ok(source), Ok(market), Ok(line), Ok(outcomes)) = (
            row.try_get::<_, &str>(0),
            row.try_get::<_, &str>(1),
            row.try_get::<_, &str>(2),
            row.try_get::<_, &str>(3),
        ) else {
            continue;
        };
        let (Ok(outcomes), Some(at)) = (
            serde_json::from_str::<Vec<Outcome>>(outcomes),
            Timestamp::from_unix_millis(millis(row)),
        ) else {
            tracing::error!(event = "store.bad_row", table = "odds_history");
            continue;
        };
        for outcome in outcomes {
            let key = (
                intern(source),
                intern(market),
                line.to_owned(),
                intern(&outcome.name),
            );
            let points = series.entry(key).or_default();
            if points.last().is_none_or(|last| last.odds != outcome.odds) {
                points.push(PricePoint {
                    at,
                    odds: outcome.odds,
                });
            }
        }
    }
    let mut opening: BTreeMap<Key, PricePoint> = BTreeMap::new();
    for row in openings {
        let (Ok(source), Ok(market), Ok(line), Ok(outcome), Ok(odds)) = (
            row.try_get::<_, &str>(0),
            row.try_get::<_, &str>(1),
            row.try_get::<_, &str>(2),
            row.try_get::<_, &str>(3),
            row.try_get::<_, f64>(4),
        ) else {
            continue;
        };
        if let Some(at) = Timestamp::from_unix_millis(millis(row)) {
            let key = (
                intern(source),
                intern(market),
                line.to_owned(),
                intern(outcome),
            );
            opening.insert(key, PricePoint { at, odds });
        }
    }
    let mut history: Vec<PriceSeries> = series
        .into_iter()
        .map(|(key, points)| {
            let opening = opening.get(&key).copied();
            let (source, market_id, line, outcome) = key;
            PriceSeries {
                source,
                market_id,
                line: line.parse().ok(),
                outcome,
                opening,
                points,
            }
        })
        .collect();
    // Lines in numeric order, as the in-memory history lists them.
    history.sort_by(|a, b| {
        let line = |s: &PriceSeries| s.line;
        (&a.source, &a.market_id)
            .cmp(&(&b.source, &b.market_id))
            .then_with(|| match (line(a), line(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (x, y) => x.is_some().cmp(&y.is_some()),
            })
            .then_with(|| a.outcome.cmp(&b.outcome))
    });
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_clamp_to_it() {
        assert_eq!(system_time(-5), UNIX_EPOCH);
        assert_eq!(
            system_time(1_500),
            UNIX_EPOCH + Duration::from_millis(1_500)
        );
    }
}
