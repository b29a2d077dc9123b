//! One event's book: the latest and opening price of each outcome of its primary markets,
//! per bookmaker, and what each new snapshot raises against it.
//!
//! The rules are the contract's ("Odds alerts"); each alert goes through the cooldown of its
//! event, market and kind. An alert that ends another (`returned`, surebet `closed`) is sent
//! exactly when the one it ends was, whatever the cooldown, so a feed never shows a surebet
//! open that has closed. `market.rs` takes one market's prices in and holds the rules'
//! arithmetic; `fair.rs` computes the fair prices.

mod fair;
mod market;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litemap::LiteMap;

pub use self::fair::FairMarket;

use crate::cache::MarketPrices;
use crate::protocol::{
    Alert, AlertKind, Availability, Detail, Leg, Severity, SurebetState, Thresholds, Timestamp,
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

    /// The `closed` alert of each surebet the book announced open, for an event the analysis
    /// stops holding (the cache dropped it, or the budget), `at` that time: a feed that
    /// showed it open does not keep showing it.
    pub fn close_surebets(&self, event_id: u64, at: Timestamp) -> Vec<Alert> {
        let nobody: Arc<str> = Arc::from(""); // a surebet names no source
        let origin = Origin {
            event_id,
            source: &nobody,
            at,
        };
        let announced = self.markets.iter().filter_map(|(key, book)| {
            let surebet = book.surebet.as_ref().filter(|s| s.announced)?;
            Some(book.surebet_alert(&origin, key, SurebetState::Closed, surebet))
        });
        announced.collect()
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
