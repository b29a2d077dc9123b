//! The `odds_alert` payload (*extension*, on `alerts`): what the odds analysis raises.

use std::sync::Arc;

use serde::Serialize;

use super::Timestamp;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One bookmaker's price of an outcome moved by at least the lowest threshold.
    PriceChange,
    /// The home bookmaker moved one way and a competitor the other on the same outcome.
    DirectionDisagreement,
    /// A market left a bookmaker's snapshot, or came back.
    Availability,
    /// The best prices of a market's outcomes began, or stopped, to add up to a sure bet.
    Surebet,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 4] = [
        AlertKind::PriceChange,
        AlertKind::DirectionDisagreement,
        AlertKind::Availability,
        AlertKind::Surebet,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::PriceChange => "price_change",
            AlertKind::DirectionDisagreement => "direction_disagreement",
            AlertKind::Availability => "availability",
            AlertKind::Surebet => "surebet",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// How urgent an alert is, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Past the first threshold (7% by default).
    Warning,
    /// Past the second (10%).
    Elevated,
    /// Past the third (15%).
    Critical,
}

impl Severity {
    /// Every severity, least first.
    pub const ALL: [Severity; 3] = [Severity::Warning, Severity::Elevated, Severity::Critical];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Elevated => "elevated",
            Severity::Critical => "critical",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One alert: `data` of an `odds_alert`, and an item of `GET /api/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The event.
    pub event_id: u64,
    /// The bookmaker whose snapshot raised it; a surebet names its legs' instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Arc<str>>,
    /// The market, e.g. `"1x2"`.
    pub market_id: Arc<str>,
    /// The market's line, if it has one.
    pub line: Option<f64>,
    /// The kind's own fields.
    #[serde(flatten)]
    pub detail: Detail,
    /// The `captured_at` of the snapshot that raised it.
    pub at: Timestamp,
}

/// The fields of each kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// `price_change`.
    PriceChange {
        /// The outcome whose price moved.
        outcome: Arc<str>,
        /// The price before.
        from: f64,
        /// The price now.
        to: f64,
        /// (to - from) / from x 100, to two decimals.
        change_pct: f64,
    },
    /// `direction_disagreement`.
    DirectionDisagreement {
        /// The outcome.
        outcome: Arc<str>,
        /// The home bookmaker's last move, then the competitor's.
        moves: [PriceMove; 2],
    },
    /// `availability`.
    Availability {
        /// `pulled` or `returned`.
        state: Availability,
    },
    /// `surebet`.
    Surebet {
        /// `open` or `closed`.
        state: SurebetState,
        /// The profit of a stake spread as the legs say, in percent of the stake: 1/sum - 1.
        profit_pct: f64,
        /// The best price of each outcome and its bookmaker.
        legs: Vec<Leg>,
    },
}

/// One bookmaker's move of one price.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceMove {
    /// The bookmaker.
    pub source: Arc<str>,
    /// The price before.
    pub from: f64,
    /// The price after.
    pub to: f64,
    /// (to - from) / from x 100, to two decimals.
    pub change_pct: f64,
}

/// A market left a bookmaker's snapshot, or came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// It left.
    Pulled,
    /// It came back.
    Returned,
}

/// Whether a surebet began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SurebetState {
    /// It began.
    Open,
    /// It ended.
    Closed,
}

/// One leg of a surebet: an outcome at its best price.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leg {
    /// The outcome.
    pub outcome: Arc<str>,
    /// Who pays that price.
    pub source: Arc<str>,
    /// The price.
    pub odds: f64,
    /// This leg's share of the total stake, for the same return whatever the result:
    /// (1/odds) / sum, to four decimals.
    pub stake_share: f64,
}

/// The percentages a price change must reach to be `warning`, `elevated` and `critical`
/// (`--alert-thresholds`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds(pub [f64; 3]);

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds([7.0, 10.0, 15.0])
    }
}

/// How much under a threshold a figure may be and still reach it: prices have two decimals,
/// and a change of exactly 7% computes as 6.999999999999999% as often as 7.000000000000001%.
pub const EPSILON: f64 = 1e-9;

impl Thresholds {
    /// Parses three ascending percentages, comma-separated, each above 0 and at most 1000.
    pub fn parse(text: &str) -> Result<Thresholds, String> {
        let refuse = || {
            Err(format!(
                "`{text}`: expected three ascending percentages above 0 and at most 1000, e.g. 7,10,15"
            ))
        };
        let numbers: Vec<f64> = match text.split(',').map(|n| n.trim().parse()).collect() {
            Ok(numbers) => numbers,
            Err(_) => return refuse(),
        };
        match numbers[..] {
            [a, b, c] if 0.0 < a && a < b && b < c && c <= 1000.0 => Ok(Thresholds([a, b, c])),
            _ => refuse(),
        }
    }

    /// The severity of a change of `change_pct` percent, either way; `None` under the first.
    pub fn severity(&self, change_pct: f64) -> Option<Severity> {
        let size = change_pct.abs() + EPSILON;
        Severity::ALL
            .into_iter()
            .zip(self.0)
            .rev()
            .find(|&(_, threshold)| size >= threshold)
            .map(|(severity, _)| severity)
    }
}

/// `x` rounded to `decimals` places, for the wire.
#[cfg(feature = "server")]
pub fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
