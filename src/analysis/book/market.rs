//! One market of an event's book: taking in a bookmaker's prices (price changes and
//! disagreements), opening and closing its surebet, and the rules' arithmetic.

use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use litemap::LiteMap;

use super::{
    Context, MarketBook, MarketKey, Origin, Quote, Rules, Surebet, MAX_OUTCOMES, MIN_MOVE,
};
use crate::cache::MarketPrices;
use crate::protocol::{
    rounded, Alert, AlertKind, Detail, Leg, PriceMove, Severity, SurebetState, Timestamp, EPSILON,
    HOME_SOURCE,
};

/// What an open surebet costs besides its legs: its entry in the open surebets.
const OPEN_BYTES: usize = 64;

impl MarketBook {
    pub(super) fn new(line: Option<f64>) -> MarketBook {
        MarketBook {
            line,
            quotes: LiteMap::new(),
            pulled: LiteMap::new(),
            surebet: None,
            sent: [None; 4],
        }
    }

    /// Whether an alert of `kind` may go now; if so, it counts as sent.
    pub(super) fn may_send(&mut self, kind: AlertKind, now: Instant, cooldown: Duration) -> bool {
        let slot = &mut self.sent[kind as usize];
        if slot.is_some_and(|at| now.duration_since(at) < cooldown) {
            return false;
        }
        *slot = Some(now);
        true
    }

    /// The outcomes some bookmaker prices, in the first full bookmaker's order, if one
    /// bookmaker prices all of them: a market counts only then.
    pub(super) fn outcomes(&self) -> Option<Vec<Arc<str>>> {
        let mut names: Vec<Arc<str>> = Vec::new();
        for quotes in self.quotes.values() {
            for quote in quotes {
                if !names.contains(&quote.outcome) {
                    names.push(quote.outcome.clone());
                }
            }
        }
        let full =
            |quotes: &Vec<Quote>| names.iter().all(|n| quotes.iter().any(|q| q.outcome == *n));
        let first_full = self.quotes.values().find(|q| full(q))?;
        Some(first_full.iter().map(|q| q.outcome.clone()).collect())
    }

    /// The best price of each outcome and its bookmaker (the first by name on a tie).
    pub(super) fn best(&self, outcome: &str) -> Option<(Arc<str>, f64)> {
        let mut best: Option<(Arc<str>, f64)> = None;
        for (source, quotes) in self.quotes.iter() {
            let Some(quote) = quotes.iter().find(|q| *q.outcome == *outcome) else {
                continue;
            };
            if best.as_ref().is_none_or(|(_, odds)| quote.odds > *odds) {
                best = Some((source.clone(), quote.odds));
            }
        }
        best
    }

    /// The surebet the best prices make now, if any.
    pub(super) fn surebet_now(&self, at: Timestamp) -> Option<Surebet> {
        let outcomes = self.outcomes()?;
        if outcomes.len() < 2 {
            return None;
        }
        let best: Vec<(Arc<str>, Arc<str>, f64)> = outcomes
            .into_iter()
            .map(|o| self.best(&o).map(|(source, odds)| (o, source, odds)))
            .collect::<Option<_>>()?;
        let (profit_pct, legs) = surebet(&best)?;
        Some(Surebet {
            profit_pct,
            legs,
            opened_at: at,
            announced: false,
        })
    }
}

impl MarketBook {
    pub(super) fn bytes(&self) -> usize {
        let quotes: usize = self
            .quotes
            .values()
            .map(|q| size_of::<(Arc<str>, Vec<Quote>)>() + q.capacity() * size_of::<Quote>())
            .sum();
        let surebet = self.surebet.as_ref();
        size_of::<(MarketKey, MarketBook)>()
            + quotes
            + self.pulled.len() * size_of::<(Arc<str>, bool)>()
            + surebet.map_or(0, |s| OPEN_BYTES + s.legs.capacity() * size_of::<Leg>())
    }

    /// Takes in one bookmaker's prices of this market; price changes and disagreements go
    /// to `alerts`.
    pub(super) fn take(
        &mut self,
        origin: &Origin<'_>,
        key: &MarketKey,
        market: &MarketPrices<'_>,
        cx: &mut Context<'_>,
        alerts: &mut Vec<Alert>,
    ) {
        let (source, rules, now) = (origin.source, cx.rules, cx.now);
        let old = self.quotes.remove(source).unwrap_or_default();
        let mut quotes: Vec<Quote> = Vec::with_capacity(market.outcomes.len().min(MAX_OUTCOMES));
        for outcome in market.outcomes.iter().take(MAX_OUTCOMES) {
            if quotes.iter().any(|q| *q.outcome == *outcome.name) {
                continue;
            }
            let odds = outcome.odds;
            let Some(before) = old.iter().find(|q| *q.outcome == *outcome.name) else {
                quotes.push(Quote {
                    outcome: cx.names.get(&outcome.name),
                    odds,
                    opening: odds,
                    moved: None,
                });
                continue;
            };
            let mut quote = Quote {
                odds,
                ..before.clone()
            };
            if odds != before.odds {
                let change = change_pct(before.odds, odds);
                if let Some(severity) = rules.thresholds.severity(change) {
                    let detail = Detail::PriceChange {
                        outcome: quote.outcome.clone(),
                        from: before.odds,
                        to: odds,
                        change_pct: rounded(change, 2),
                    };
                    alerts.push(origin.alert(key, self.line, severity, detail));
                }
                let way = direction(before.odds, odds);
                quote.moved = (way != 0).then_some((before.odds, odds, now));
                for (other, from, to) in self.disagreeing(source, &quote.outcome, way, now, rules) {
                    let ours = (source.clone(), before.odds, odds);
                    let theirs = (other, from, to);
                    let (home, competitor) = if **source == *HOME_SOURCE {
                        (ours, theirs)
                    } else {
                        (theirs, ours)
                    };
                    let moves = [price_move(home), price_move(competitor)];
                    let biggest = moves[0].change_pct.abs().max(moves[1].change_pct.abs());
                    let severity = rules
                        .thresholds
                        .severity(biggest)
                        .unwrap_or(Severity::Warning);
                    let detail = Detail::DirectionDisagreement {
                        outcome: quote.outcome.clone(),
                        moves,
                    };
                    alerts.push(origin.alert(key, self.line, severity, detail));
                }
            }
            quotes.push(quote);
        }
        self.quotes.insert(source.clone(), quotes);
    }

    /// The bookmakers whose last move of `outcome`, within the window, went against a move
    /// of `way` by `source`: the home bookmaker against every competitor, a competitor
    /// against the home bookmaker. Each with that move's from and to.
    pub(super) fn disagreeing(
        &self,
        source: &Arc<str>,
        outcome: &str,
        way: i8,
        now: Instant,
        rules: &Rules,
    ) -> Vec<(Arc<str>, f64, f64)> {
        if way == 0 {
            return Vec::new();
        }
        let home = **source == *HOME_SOURCE;
        self.quotes
            .iter()
            .filter(|(other, _)| other != &source && (home || ***other == *HOME_SOURCE))
            .filter_map(|(other, quotes)| {
                let quote = quotes.iter().find(|q| *q.outcome == *outcome)?;
                let (from, to, at) = quote.moved?;
                let recent = now.duration_since(at) <= rules.window;
                (recent && direction(from, to) == -way).then(|| (other.clone(), from, to))
            })
            .collect()
    }

    /// Opens or closes the market's surebet as its best prices now say.
    pub(super) fn check_surebet(
        &mut self,
        origin: &Origin<'_>,
        key: &MarketKey,
        alerts: &mut Vec<Alert>,
    ) {
        let now_open = self.surebet_now(origin.at);
        match (self.surebet.take(), now_open) {
            (None, Some(new)) => {
                alerts.push(self.surebet_alert(origin, key, SurebetState::Open, &new));
                self.surebet = Some(new);
            }
            (Some(was), Some(new)) => {
                self.surebet = Some(Surebet {
                    opened_at: was.opened_at,
                    announced: was.announced,
                    ..new
                });
            }
            (Some(was), None) if was.announced => {
                alerts.push(self.surebet_alert(origin, key, SurebetState::Closed, &was));
            }
            _ => {}
        }
    }

    /// The `surebet` alert of `surebet` in `state`.
    pub(super) fn surebet_alert(
        &self,
        origin: &Origin<'_>,
        key: &MarketKey,
        state: SurebetState,
        surebet: &Surebet,
    ) -> Alert {
        let home_leg = surebet.legs.iter().any(|l| *l.source == *HOME_SOURCE);
        let severity = if home_leg {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let detail = Detail::Surebet {
            state,
            profit_pct: surebet.profit_pct,
            legs: surebet.legs.clone(),
        };
        origin.alert(key, self.line, severity, detail)
    }
}

/// The surebet of a market whose best prices are `best` (outcome, bookmaker, odds): when the
/// sum of 1/odds is under 1, the profit in percent and the legs.
pub fn surebet(best: &[(Arc<str>, Arc<str>, f64)]) -> Option<(f64, Vec<Leg>)> {
    let sum: f64 = best.iter().map(|(_, _, odds)| 1.0 / odds).sum();
    if sum >= 1.0 - EPSILON {
        return None;
    }
    let legs = best
        .iter()
        .map(|(outcome, source, odds)| Leg {
            outcome: outcome.clone(),
            source: source.clone(),
            odds: *odds,
            stake_share: rounded(1.0 / odds / sum, 4),
        })
        .collect();
    Some((rounded((1.0 / sum - 1.0) * 100.0, 2), legs))
}

/// (to - from) / from x 100.
pub fn change_pct(from: f64, to: f64) -> f64 {
    (to - from) / from * 100.0
}

/// The direction of a move: 1 up, -1 down, 0 for less than [`MIN_MOVE`].
pub fn direction(from: f64, to: f64) -> i8 {
    let delta = to - from;
    if delta.abs() + EPSILON < MIN_MOVE {
        0
    } else if delta > 0.0 {
        1
    } else {
        -1
    }
}

fn price_move((source, from, to): (Arc<str>, f64, f64)) -> PriceMove {
    PriceMove {
        source,
        from,
        to,
        change_pct: rounded(change_pct(from, to), 2),
    }
}
