//! The fair prices of a market (`GET /api/events/{id}/fair`): each bookmaker's margin taken
//! out of its prices, the bookmakers averaged, and the home bookmaker's edge against that.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{MarketBook, MarketKey};
use crate::protocol::{rounded, HOME_SOURCE};

/// A market's fair prices (`GET /api/events/{id}/fair`).
#[derive(Debug, Serialize)]
pub struct FairMarket {
    market_id: Arc<str>,
    line: Option<f64>,
    /// Each bookmaker's margin (sum of 1/odds - 1), for those that price every outcome.
    margins: BTreeMap<Arc<str>, f64>,
    outcomes: Vec<FairOutcome>,
}

#[derive(Debug, Serialize)]
struct FairOutcome {
    outcome: Arc<str>,
    best: Option<Best>,
    fair_probability: Option<f64>,
    fair_odds: Option<f64>,
    /// The home bookmaker's odds x the fair probability - 1.
    betpawa_edge: Option<f64>,
    prices: BTreeMap<Arc<str>, Price>,
}

#[derive(Debug, Serialize)]
struct Best {
    source: Arc<str>,
    odds: f64,
}

#[derive(Debug, Serialize)]
struct Price {
    odds: f64,
    opening: f64,
}

impl MarketBook {
    /// This market's fair prices.
    pub(super) fn fair(&self, key: &MarketKey) -> FairMarket {
        let outcomes = self.outcomes().unwrap_or_default();
        // Each full bookmaker's margin-free probabilities, in `outcomes` order.
        let mut margins = BTreeMap::new();
        let mut probabilities: Vec<Vec<f64>> = Vec::new();
        for (source, quotes) in self.quotes.iter() {
            let odds: Option<Vec<f64>> = outcomes
                .iter()
                .map(|o| quotes.iter().find(|q| q.outcome == *o).map(|q| q.odds))
                .collect();
            let Some(odds) = odds.filter(|o| o.len() >= 2) else {
                continue;
            };
            let sum: f64 = odds.iter().map(|o| 1.0 / o).sum();
            margins.insert(source.clone(), rounded(sum - 1.0, 4));
            probabilities.push(odds.iter().map(|o| 1.0 / o / sum).collect());
        }
        let outcomes = outcomes
            .iter()
            .enumerate()
            .map(|(i, outcome)| {
                let p = (!probabilities.is_empty()).then(|| {
                    probabilities.iter().map(|p| p[i]).sum::<f64>() / probabilities.len() as f64
                });
                let prices: BTreeMap<Arc<str>, Price> = self
                    .quotes
                    .iter()
                    .filter_map(|(source, quotes)| {
                        let q = quotes.iter().find(|q| q.outcome == *outcome)?;
                        let price = Price {
                            odds: q.odds,
                            opening: q.opening,
                        };
                        Some((source.clone(), price))
                    })
                    .collect();
                let home = prices.get(HOME_SOURCE).map(|p| p.odds);
                FairOutcome {
                    outcome: outcome.clone(),
                    best: self
                        .best(outcome)
                        .map(|(source, odds)| Best { source, odds }),
                    fair_probability: p.map(|p| rounded(p, 4)),
                    fair_odds: p.map(|p| rounded(1.0 / p, 2)),
                    betpawa_edge: p.zip(home).map(|(p, odds)| rounded(odds * p - 1.0, 4)),
                    prices,
                }
            })
            .collect();
        FairMarket {
            market_id: key.market_id.clone(),
            line: self.line,
            margins,
            outcomes,
        }
    }
}
