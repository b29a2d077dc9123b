//! One event's book: the latest and opening price of each outcome of its primary markets,
//! per bookmaker, and what each new snapshot raises against it.
//!
//! The rules are the contract's ("Odds alerts"); each alert goes through the cooldown of its
//! event, market and kind. An alert that ends another (`returned`, surebet `closed`) is sent
//! exactly when the one it ends was, whatever the cooldown, so a feed never shows a surebet
//! open that has closed. `fair.rs` computes the fair prices.

mod fair;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use litemap::LiteMap;

pub use self::fair::FairMarket;

use crate::cache::MarketPrices;
use crate::protocol::{
    rounded, Alert, AlertKind, Availability, Detail, Leg, PriceMove, Severity, SurebetState,
    Thresholds, Timestamp, EPSILON, HOME_SOURCE,
};

/// The markets analysed: 1X2, over/under and both teams to score.
pub const PRIMARY_MARKETS: [&str; 3] = ["1x2", "over_under", "btts"];

/// Lines of one market id kept per bookmaker (over/under 0.5 to 4.5 and more fit).
const MAX_LINES: usize = 16;

/// Outcomes of one market kept per bookmaker (1X2 has three).
const MAX_OUTCOMES: usize = 16;

/// A move smaller than this is no move, for direction disagreements.
pub const MIN_MOVE: f64 = 0.01;

/// How the rules are tuned.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `--alert-thresholds`.
    pub thresholds: Thresholds,
    /// `--alert-cooldown`.
    pub cooldown: Duration,
    /// How close in time two moves must be to disagree.
    pub window: Duration,
}

/// A market of an event: its id and line (in thousandths, so that it orders and compares).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MarketKey {
    /// The market id.
    pub market_id: Arc<str>,
    line: Option<i64>,
}

/// One event's book. Small sorted vectors, not trees: an event has a few markets and
/// bookmakers, and a tree's node would cost more than all of them.
#[derive(Debug, Default)]
pub struct Book {
    markets: LiteMap<MarketKey, MarketBook>,
}

/// The analysis's own shared names (market ids, outcomes, bookmakers): each book holds
/// pointers, not copies. At most [`MAX_NAMES`]; past it a name is held by each user.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

/// Most names shared.
const MAX_NAMES: usize = 4096;

impl Names {
    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(held) = self.0.get(name) {
            return held.clone();
        }
        let held: Arc<str> = Arc::from(name);
        if self.0.len() < MAX_NAMES {
            self.0.insert(held.clone());
        }
        held
    }
}

#[derive(Debug)]
struct MarketBook {
    line: Option<f64>,
    /// Each bookmaker's prices, in its snapshot's order.
    quotes: LiteMap<Arc<str>, Vec<Quote>>,
    /// Bookmakers that pulled the market, and whether that was announced.
    pulled: LiteMap<Arc<str>, bool>,
    surebet: Option<Surebet>,
    /// When each kind was last announced, by [`AlertKind`] order.
    sent: [Option<Instant>; 4],
}

#[derive(Debug, Clone)]
struct Quote {
    outcome: Arc<str>,
    odds: f64,
    /// The first price seen.
    opening: f64,
    /// The last move of at least [`MIN_MOVE`], and when it was taken in.
    moved: Option<(f64, f64, Instant)>,
}

/// An open surebet.
#[derive(Debug, Clone, PartialEq)]
pub struct Surebet {
    /// 1/sum - 1, in percent, two decimals.
    pub profit_pct: f64,
    /// The legs.
    pub legs: Vec<Leg>,
    /// When it opened.
    pub opened_at: Timestamp,
    announced: bool,
}

/// What every book shares, and the time a snapshot is taken in at.
#[derive(Debug)]
pub struct Context<'a> {
    /// How the rules are tuned.
    pub rules: &'a Rules,
    /// Now.
    pub now: Instant,
    /// The shared names.
    pub names: &'a mut Names,
    /// Every open surebet's event and market, kept up to date.
    pub open: &'a mut BTreeSet<(u64, MarketKey)>,
}

/// What a snapshot raised.
#[derive(Debug, Default)]
pub struct Raised {
    /// Alerts to send.
    pub alerts: Vec<Alert>,
    /// Kinds of the alerts the cooldown held back.
    pub suppressed: Vec<AlertKind>,
}

impl MarketKey {
    fn new(market_id: Arc<str>, line: Option<f64>) -> MarketKey {
        MarketKey {
            market_id,
            line: line.map(|l| (l * 1000.0).round() as i64),
        }
    }
}

impl MarketBook {
    fn new(line: Option<f64>) -> MarketBook {
        MarketBook {
            line,
            quotes: LiteMap::new(),
            pulled: LiteMap::new(),
            surebet: None,
            sent: [None; 4],
        }
    }

    /// Whether an alert of `kind` may go now; if so, it counts as sent.
    fn may_send(&mut self, kind: AlertKind, now: Instant, cooldown: Duration) -> bool {
        let slot = &mut self.sent[kind as usize];
        if slot.is_some_and(|at| now.duration_since(at) < cooldown) {
            return false;
        }
        *slot = Some(now);
        true
    }

    /// The outcomes some bookmaker prices, in the first full bookmaker's order, if one
    /// bookmaker prices all of them: a market counts only then.
    fn outcomes(&self) -> Option<Vec<Arc<str>>> {
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
    fn best(&self, outcome: &str) -> Option<(Arc<str>, f64)> {
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
    fn surebet_now(&self, at: Timestamp) -> Option<Surebet> {
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

/// What every alert of one snapshot shares.
struct Origin<'a> {
    event_id: u64,
    source: &'a Arc<str>,
    at: Timestamp,
}

impl Origin<'_> {
    fn alert(
        &self,
        key: &MarketKey,
        line: Option<f64>,
        severity: Severity,
        detail: Detail,
    ) -> Alert {
        let kind = match detail {
            Detail::PriceChange { .. } => AlertKind::PriceChange,
            Detail::DirectionDisagreement { .. } => AlertKind::DirectionDisagreement,
            Detail::Availability { .. } => AlertKind::Availability,
            Detail::Surebet { .. } => AlertKind::Surebet,
        };
        Alert {
            kind,
            severity,
            event_id: self.event_id,
            source: (kind != AlertKind::Surebet).then(|| self.source.clone()),
            market_id: key.market_id.clone(),
            line,
            detail,
            at: self.at,
        }
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

impl Book {
    /// Takes in `source`'s new snapshot of `event_id` (its primary markets only) and returns
    /// what it raises. `source` is one of `cx.names`.
    pub fn apply(
        &mut self,
        event_id: u64,
        source: &Arc<str>,
        at: Timestamp,
        markets: &[MarketPrices<'_>],
        cx: &mut Context<'_>,
    ) -> Raised {
        let (rules, now) = (cx.rules, cx.now);
        let origin = Origin {
            event_id,
            source,
            at,
        };
        let mut alerts = Vec::new();
        let mut seen = BTreeSet::new();
        let mut lines: BTreeMap<&str, usize> = BTreeMap::new();
        for market in markets {
            let Some(market_id) = PRIMARY_MARKETS.iter().find(|m| **m == market.market_id) else {
                continue;
            };
            let count = lines.entry(market_id).or_default();
            *count += 1;
            if *count > MAX_LINES || market.line.is_some_and(|l| !l.is_finite()) {
                continue;
            }
            let key = MarketKey::new(cx.names.get(market_id), market.line);
            if !seen.insert(key.clone()) {
                continue; // a market listed twice: its first listing counts
            }
            let book = self
                .markets
                .entry(key.clone())
                .or_insert_with(|| MarketBook::new(market.line));
            if book.pulled.remove(source) == Some(true) {
                let detail = Detail::Availability {
                    state: Availability::Returned,
                };
                alerts.push(origin.alert(&key, book.line, Severity::Warning, detail));
            }
            book.take(&origin, &key, market, cx, &mut alerts);
        }
        // Markets this bookmaker priced before and not now: pulled.
        for (key, book) in self.markets.iter_mut() {
            if seen.contains(key) || book.quotes.remove(source).is_none() {
                continue;
            }
            book.pulled.insert(source.clone(), false);
            let detail = Detail::Availability {
                state: Availability::Pulled,
            };
            alerts.push(origin.alert(key, book.line, Severity::Warning, detail));
            seen.insert(key.clone());
        }
        for key in &seen {
            if let Some(book) = self.markets.get_mut(key) {
                book.check_surebet(&origin, key, &mut alerts);
                if book.surebet.is_some() {
                    cx.open.insert((event_id, key.clone()));
                } else {
                    cx.open.remove(&(event_id, key.clone()));
                }
            }
        }
        let raised = self.through_cooldown(alerts, rules, now, source);
        self.markets
            .retain(|_, b| !b.quotes.is_empty() || !b.pulled.is_empty());
        raised
    }

    /// Sends what the cooldown allows, and records what an ending alert needs to know.
    fn through_cooldown(
        &mut self,
        alerts: Vec<Alert>,
        rules: &Rules,
        now: Instant,
        source: &Arc<str>,
    ) -> Raised {
        let mut raised = Raised::default();
        for alert in alerts {
            let key = MarketKey::new(alert.market_id.clone(), alert.line);
            let Some(book) = self.markets.get_mut(&key) else {
                continue;
            };
            let ending = matches!(
                alert.detail,
                Detail::Availability {
                    state: Availability::Returned
                } | Detail::Surebet {
                    state: SurebetState::Closed,
                    ..
                }
            );
            if !ending && !book.may_send(alert.kind, now, rules.cooldown) {
                raised.suppressed.push(alert.kind);
                continue;
            }
            match (&alert.detail, &mut book.surebet) {
                (
                    Detail::Availability {
                        state: Availability::Pulled,
                    },
                    _,
                ) => {
                    book.pulled.insert(source.clone(), true);
                }
                (
                    Detail::Surebet {
                        state: SurebetState::Open,
                        ..
                    },
                    Some(open),
                ) => open.announced = true,
                _ => {}
            }
            raised.alerts.push(alert);
        }
        raised
    }

    /// About what the book holds, names aside (they are shared): its entries, and its place
    /// in the analysis's LRU and in the open surebets.
    pub fn bytes(&self) -> usize {
        let markets: usize = self.markets.values().map(MarketBook::bytes).sum();
        EVENT_BYTES + markets
    }

    /// The markets with an open surebet.
    pub fn open_surebets(&self) -> impl Iterator<Item = &MarketKey> {
        self.markets
            .iter()
            .filter(|(_, book)| book.surebet.is_some())
            .map(|(key, _)| key)
    }

    /// The open surebet of `key`, with the market's line.
    pub fn surebet(&self, key: &MarketKey) -> Option<(Option<f64>, &Surebet)> {
        let book = self.markets.get(key)?;
        Some((book.line, book.surebet.as_ref()?))
    }

    /// The fair prices of the event's markets.
    pub fn fair(&self) -> Vec<FairMarket> {
        self.markets
            .iter()
            .filter(|(_, book)| !book.quotes.is_empty())
            .map(|(key, book)| book.fair(key))
            .collect()
    }
}

/// What an event's book costs besides its markets: its entry in the analysis's LRU.
const EVENT_BYTES: usize = 96;

/// What an open surebet costs besides its legs: its entry in the open surebets.
const OPEN_BYTES: usize = 64;

impl MarketBook {
    fn bytes(&self) -> usize {
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
    fn take(
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
    fn disagreeing(
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
    fn check_surebet(&mut self, origin: &Origin<'_>, key: &MarketKey, alerts: &mut Vec<Alert>) {
        let alert = |state, surebet: &Surebet| {
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
        };
        let now_open = self.surebet_now(origin.at);
        match (self.surebet.take(), now_open) {
            (None, Some(new)) => {
                alerts.push(alert(SurebetState::Open, &new));
                self.surebet = Some(new);
            }
            (Some(was), Some(new)) => {
                self.surebet = Some(Surebet {
                    opened_at: was.opened_at,
                    announced: was.announced,
                    ..new
                });
            }
            (Some(was), None) if was.announced => alerts.push(alert(SurebetState::Closed, &was)),
            _ => {}
        }
    }
}
