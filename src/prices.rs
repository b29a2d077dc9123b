//! How the odds moved: a bounded history of prices per event, source and outcome, for
//! `GET /api/events/{id}/history` (a chart of one event) and `GET /api/moves` (the biggest
//! moves of the last minutes).
//!
//! Fed like the dispatcher: an OddsCache callback that only queues the changed snapshots'
//! JSON, and one task that reads the prices out of it and records each outcome whose price
//! differs from its last point, at the snapshot's `captured_at`. Bounded twice: the last
//! [`POINTS_PER_OUTCOME`] prices of each outcome, and the events the cache may hold
//! (`--max-events`), the one updated longest ago leaving first.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cache::{intern, Changes, OddsCache};
use crate::metrics::Metrics;
use crate::protocol::Timestamp;

/// Prices kept per event, source and outcome: an hour of a price that moves every minute.
pub const POINTS_PER_OUTCOME: usize = 64;

/// Shared handle to the history. Cheap to clone.
#[derive(Clone)]
pub struct PriceHistory {
    events: Arc<Mutex<LruCache<u64, Vec<Series>>>>,
    metrics: Arc<Metrics>,
}

/// One outcome's prices from one source.
#[derive(Debug)]
struct Series {
    source: Arc<str>,
    market_id: Arc<str>,
    line: Option<f64>,
    outcome: Arc<str>,
    /// `captured_at` in Unix ms, and the price; oldest first.
    points: VecDeque<(i64, f64)>,
}

impl std::fmt::Debug for PriceHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceHistory")
            .field("events", &self.events.lock().len())
            .finish()
    }
}

/// A snapshot's prices, read from its stored JSON.
#[derive(Deserialize)]
struct Prices<'a> {
    captured_at: Timestamp,
    #[serde(borrow)]
    markets: Vec<MarketPrices<'a>>,
}

#[derive(Deserialize)]
struct MarketPrices<'a> {
    #[serde(borrow)]
    market_id: Cow<'a, str>,
    line: Option<f64>,
    #[serde(borrow)]
    outcomes: Vec<OutcomePrice<'a>>,
}

#[derive(Deserialize)]
struct OutcomePrice<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    odds: f64,
}

impl PriceHistory {
    /// An empty history of at most `max_events` events, counting its points into `metrics`.
    pub fn new(max_events: usize, metrics: Arc<Metrics>) -> PriceHistory {
        let capacity =
            std::num::NonZeroUsize::new(max_events.max(1)).unwrap_or(std::num::NonZeroUsize::MIN);
        PriceHistory {
            events: Arc::new(Mutex::new(LruCache::new(capacity))),
            metrics,
        }
    }

    /// Registers the callback that queues every change of `cache` for the recorder task,
    /// and returns that task: it runs as long as the cache.
    pub fn follow(
        &self,
        cache: &OddsCache,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (sender, mut queue) = mpsc::unbounded_channel::<(Arc<str>, Vec<(u64, Bytes)>)>();
        cache.on_update(move |changes: Changes<'_>| {
            let snapshots = changes
                .event_ids
                .iter()
                .copied()
                .zip(changes.snapshots.iter().cloned());
            let _ = sender.send((Arc::from(changes.source), snapshots.collect()));
        });
        let history = self.clone();
        async move {
            while let Some((source, snapshots)) = queue.recv().await {
                for (event_id, json) in snapshots {
                    history.record(&source, event_id, &json);
                }
            }
        }
    }

    /// Records the prices of one stored snapshot that differ from each outcome's last one.
    pub fn record(&self, source: &Arc<str>, event_id: u64, json: &[u8]) {
        let Ok(prices) = serde_json::from_slice::<Prices>(json) else {
            return; // the cache's own encoding: cannot happen
        };
        let at = prices.captured_at.unix_millis();
        let mut events = self.events.lock();
        let mut added: i64 = 0;
        if !events.contains(&event_id) {
            // The event updated longest ago leaves to make room, with its points.
            if let Some((_, gone)) = events.push(event_id, Vec::new()) {
                added -= gone.iter().map(|s| s.points.len() as i64).sum::<i64>();
            }
        }
        let Some(series) = events.get_mut(&event_id) else {
            return; // just inserted: cannot happen
        };
        for market in prices.markets {
            for outcome in market.outcomes {
                let same = |s: &&mut Series| {
                    s.source == *source
                        && *s.market_id == *market.market_id
                        && s.line == market.line
                        && *s.outcome == *outcome.name
                };
                let one = match series.iter_mut().find(|s| same(s)) {
                    Some(one) => one,
                    None => {
                        series.push(Series {
                            source: source.clone(),
                            market_id: intern(&market.market_id),
                            line: market.line,
                            outcome: intern(&outcome.name),
                            points: VecDeque::new(),
                        });
                        let last = series.len() - 1;
                        &mut series[last]
                    }
                };
                if one
                    .points
                    .back()
                    .is_some_and(|&(_, odds)| odds == outcome.odds)
                {
                    continue;
                }
                one.points.push_back((at, outcome.odds));
                added += 1;
                if one.points.len() > POINTS_PER_OUTCOME {
                    one.points.pop_front();
                    added -= 1;
                }
            }
        }
        drop(events);
        self.metrics.price_history_points.inc_by(added);
    }

    /// `{"event_id":..,"history":[{"source":..,"market_id":..,"line":..,"outcome":..,"points":[{"at":..,"odds":..}]}]}`,
    /// or `None` if no price of the event was recorded.
    pub fn event(&self, event_id: u64) -> Option<Vec<u8>> {
        #[derive(Serialize)]
        struct Reply<'a> {
            event_id: u64,
            history: Vec<SeriesReply<'a>>,
        }
        let events = self.events.lock();
        let series = events.peek(&event_id)?;
        let reply = Reply {
            event_id,
            history: series.iter().map(SeriesReply::from).collect(),
        };
        serde_json::to_vec(&reply).ok()
    }

    /// The `limit` biggest moves within `window` (the last price against the last one from
    /// before the window, or the first inside it), largest relative change first:
    /// `{"window_secs":..,"moves":[{"event_id":..,"source":..,"market_id":..,"line":..,"outcome":..,"from":..,"to":..,"change":..,"at":..}]}`.
    pub fn moves(&self, window: Duration, limit: usize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Move<'a> {
            event_id: u64,
            source: &'a str,
            market_id: &'a str,
            line: Option<f64>,
            outcome: &'a str,
            from: f64,
            to: f64,
            /// `to / from - 1`.
            change: f64,
            at: String,
        }
        #[derive(Serialize)]
        struct Reply<'a> {
            window_secs: u64,
            moves: Vec<Move<'a>>,
        }
        let since = Timestamp::now().minus(window).unix_millis();
        let events = self.events.lock();
        let mut moves: Vec<Move<'_>> = Vec::new();
        for (&event_id, series) in events.iter() {
            for one in series {
                let Some(&(last_at, to)) = one.points.back() else {
                    continue;
                };
                if last_at < since {
                    continue; // did not move in the window
                }
                let before = one.points.iter().rev().find(|(at, _)| *at < since);
                let from = before
                    .or_else(|| one.points.front())
                    .map_or(to, |&(_, odds)| odds);
                if from == to {
                    continue;
                }
                moves.push(Move {
                    event_id,
                    source: &one.source,
                    market_id: &one.market_id,
                    line: one.line,
                    outcome: &one.outcome,
                    from,
                    to,
                    change: to / from - 1.0,
                    at: Timestamp::from_unix_millis(last_at)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        moves.sort_by(|a, b| b.change.abs().total_cmp(&a.change.abs()));
        moves.truncate(limit);
        let reply = Reply {
            window_secs: window.as_secs(),
            moves,
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct SeriesReply<'a> {
    source: &'a str,
    market_id: &'a str,
    line: Option<f64>,
    outcome: &'a str,
    points: Vec<Point>,
}

#[derive(Serialize)]
struct Point {
    at: String,
    odds: f64,
}

impl<'a> From<&'a Series> for SeriesReply<'a> {
    fn from(series: &'a Series) -> SeriesReply<'a> {
        let point = |&(at, odds): &(i64, f64)| Point {
            at: Timestamp::from_unix_millis(at)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            odds,
        };
        SeriesReply {
            source: &series.source,
            market_id: &series.market_id,
            line: series.line,
            outcome: &series.outcome,
            points: series.points.iter().map(point).collect(),
        }
    }
}
