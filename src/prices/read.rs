//! The history's two reads: one event's prices (`GET /api/events/{id}/history`) and the
//! biggest moves (`GET /api/moves`), each encoded as its reply. Both block on the history's
//! lock: the routes call them on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{PriceHistory, SeriesKey, MAX_MOVES, MOVES_FRESH};
use crate::protocol::{HistoryQuery, HistoryReply, PricePoint, PriceSeries, Timestamp};

impl PriceHistory {
    /// The event's series that `query` asks for, each with its points in the window (those
    /// with none are left out), or `None` if no price of the event was recorded. Blocks on
    /// the history's lock: call it off the runtime.
    pub fn event(&self, event_id: u64, query: &HistoryQuery) -> Option<HistoryReply> {
        let recorded = self.shared.recorded.lock();
        let event = recorded.events.peek(&event_id)?;
        let point = |&(at, odds): &(i64, f64)| {
            let at = Timestamp::from_unix_millis(at)?;
            Some(PricePoint { at, odds })
        };
        let history = event
            .series
            .iter()
            .filter(|(key, _)| query.wants(&key.source, &key.market_id))
            .filter_map(|(key, series)| {
                let points: Vec<PricePoint> = series
                    .points
                    .iter()
                    .filter(|(at, _)| query.holds(*at))
                    .filter_map(point)
                    .collect();
                (!points.is_empty()).then(|| PriceSeries {
                    source: key.source.clone(),
                    market_id: key.market_id.clone(),
                    line: key.line.0,
                    outcome: key.outcome.clone(),
                    opening: point(&series.opening),
                    points,
                })
            })
            .collect();
        Some(HistoryReply {
            event_id,
            history,
            next_from: None,
        })
    }

    /// The `limit` biggest moves within `window` (the last price against the last one from
    /// before the window, or the first inside it), largest relative change first:
    /// `{"window_secs":..,"moves":[{"event_id":..,"source":..,"market_id":..,"line":..,"outcome":..,"from":..,"to":..,"change":..,"at":..}]}`.
    /// Computed at most once per [`MOVES_FRESH`] per window. Blocks: call it off the runtime.
    pub fn moves(&self, window: Duration, limit: usize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Reply<'a> {
            window_secs: u64,
            moves: &'a [Move],
        }
        let secs = window.as_secs();
        let moves = {
            // Held while computing: one computation at a time, and those who waited for it
            // take its result.
            let mut cached = self.shared.moves.lock();
            match cached.get(&secs) {
                Some((at, moves)) if at.elapsed() < MOVES_FRESH => moves.clone(),
                _ => {
                    let moves: Arc<[Move]> = self.compute_moves(window).into();
                    cached.insert(secs, (Instant::now(), moves.clone()));
                    moves
                }
            }
        };
        let reply = Reply {
            window_secs: secs,
            moves: &moves[..limit.min(moves.len())],
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }

    /// The [`MAX_MOVES`] biggest moves within `window`, largest first.
    fn compute_moves(&self, window: Duration) -> Vec<Move> {
        let since = Timestamp::now().minus(window).unix_millis();
        let recorded = self.shared.recorded.lock();
        let mut moves = Vec::new();
        for (&event_id, event) in recorded.events.iter() {
            for (key, series) in &event.series {
                let Some(&(last_at, to)) = series.points.back() else {
                    continue;
                };
                if last_at < since {
                    continue; // did not move in the window
                }
                let before = series.points.iter().rev().find(|(at, _)| *at < since);
                let from = before
                    .or_else(|| series.points.front())
                    .map_or(to, |&(_, odds)| odds);
                if from != to {
                    moves.push(Move {
                        event_id,
                        key: key.clone(),
                        from,
                        to,
                        at: last_at,
                    });
                }
            }
        }
        drop(recorded);
        let largest = |a: &Move, b: &Move| b.change().abs().total_cmp(&a.change().abs());
        if moves.len() > MAX_MOVES {
            moves.select_nth_unstable_by(MAX_MOVES, largest);
            moves.truncate(MAX_MOVES);
        }
        moves.sort_by(largest);
        moves
    }
}

/// One move of `/api/moves`.
#[derive(Debug)]
pub(super) struct Move {
    event_id: u64,
    key: SeriesKey,
    from: f64,
    to: f64,
    /// When the last price was captured, in Unix ms.
    at: i64,
}

impl Move {
    /// `to / from - 1`.
    fn change(&self) -> f64 {
        self.to / self.from - 1.0
    }

    /// The change as the contract writes it: to 4 decimals (0.27 for a 27% rise, not
    /// 0.2693069306930693), which is all a person or a threshold reads of it.
    fn rounded_change(&self) -> f64 {
        (self.change() * 1e4).round() / 1e4
    }
}

impl Serialize for Move {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            event_id: u64,
            source: &'a str,
            market_id: &'a str,
            line: Option<f64>,
            outcome: &'a str,
            from: f64,
            to: f64,
            change: f64,
            at: String,
        }
        Wire {
            event_id: self.event_id,
            source: &self.key.source,
            market_id: &self.key.market_id,
            line: self.key.line.0,
            outcome: &self.key.outcome,
            from: self.from,
            to: self.to,
            change: self.rounded_change(),
            at: time(self.at),
        }
        .serialize(serializer)
    }
}

/// Unix ms as the contract writes times.
fn time(millis: i64) -> String {
    Timestamp::from_unix_millis(millis)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
