//! The rules at their edges, on one event's book.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::book::{Book, Context, MarketKey, Names, Rules};
use crate::cache::{MarketPrices, OutcomePrice};
use crate::protocol::Timestamp;
use crate::protocol::{Alert, AlertKind, Availability, Detail, Severity, SurebetState, Thresholds};

const EVENT: u64 = 101;

/// A market as a test writes it: id, line, outcomes and their odds.
type Market<'a> = (&'a str, Option<f64>, Vec<(&'a str, f64)>);

/// A book with the default thresholds and cooldown, and the surebets it keeps open.
struct Fixture {
    book: Book,
    rules: Rules,
    open: BTreeSet<(u64, MarketKey)>,
    names: Names,
    now: Instant,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            book: Book::default(),
            rules: Rules {
                thresholds: Thresholds::default(),
                cooldown: Duration::from_secs(60),
                window: Duration::from_secs(300),
            },
            open: BTreeSet::new(),
            names: Names::default(),
            now: Instant::now(),
        }
    }

    /// Takes in `source`'s snapshot of 1X2 prices; returns the alerts and the suppressed.
    fn one_x_two(&mut self, source: &str, odds: [f64; 3]) -> (Vec<Alert>, Vec<AlertKind>) {
        self.take(
            source,
            &[(
                "1x2",
                None,
                vec![("1", odds[0]), ("X", odds[1]), ("2", odds[2])],
            )],
        )
    }

    fn take(&mut self, source: &str, markets: &[Market<'_>]) -> (Vec<Alert>, Vec<AlertKind>) {
        let markets: Vec<MarketPrices<'_>> = markets
            .iter()
            .map(|(id, line, outcomes)| MarketPrices {
                market_id: Cow::Borrowed(id),
                line: *line,
                outcomes: outcomes
                    .iter()
                    .map(|(name, odds)| OutcomePrice {
                        name: Cow::Borrowed(name),
                        odds: *odds,
                    })
                    .collect(),
            })
            .collect();
        let source = self.names.get(source);
        let mut cx = Context {
            rules: &self.rules,
            now: self.now,
            names: &mut self.names,
            open: &mut self.open,
        };
        let raised = self
            .book
            .apply(EVENT, &source, Timestamp::now(), &markets, &mut cx);
        (raised.alerts, raised.suppressed)
    }

    fn later(&mut self, seconds: u64) {
        self.now += Duration::from_secs(seconds);
    }
}

fn kinds(alerts: &[Alert]) -> Vec<AlertKind> {
    alerts.iter().map(|a| a.kind).collect()
}

#[test]
fn a_price_change_of_exactly_seven_percent_warns_and_six_point_nine_nine_does_not() {
    let mut f = Fixture::new();
    assert!(f.one_x_two("sportybet", [2.00, 3.40, 3.60]).0.is_empty());
    let (alerts, _) = f.one_x_two("sportybet", [2.14, 3.40, 3.60]);
    assert_eq!(kinds(&alerts), [AlertKind::PriceChange]);
    let alert = &alerts[0];
    assert_eq!(alert.severity, Severity::Warning);
    assert_eq!(alert.source.as_deref(), Some("sportybet"));
    assert_eq!(
        alert.detail,
        Detail::PriceChange {
            outcome: Arc::from("1"),
            from: 2.00,
            to: 2.14,
            change_pct: 7.0,
        }
    );

    let mut f = Fixture::new();
    f.one_x_two("sportybet", [2.00, 3.40, 3.60]);
    assert!(f.one_x_two("sportybet", [2.1398, 3.40, 3.60]).0.is_empty());
}

#[test]
fn severities_follow_the_thresholds_either_way() {
    for (to, severity) in [
        (2.20, Severity::Elevated),
        (1.70, Severity::Critical),
        (2.35, Severity::Critical),
    ] {
        let mut f = Fixture::new();
        f.one_x_two("bet9ja", [2.00, 3.40, 3.20]);
        let (alerts, _) = f.one_x_two("bet9ja", [to, 3.40, 3.20]);
        assert_eq!(alerts.len(), 1, "{to}");
        assert_eq!(alerts[0].severity, severity, "{to}");
    }
    let json = {
        let mut f = Fixture::new();
        f.one_x_two("sportybet", [2.10, 3.40, 3.20]);
        let (alerts, _) = f.one_x_two("sportybet", [2.35, 3.40, 3.20]);
        serde_json::to_value(&alerts[0]).unwrap()
    };
    assert_eq!(json["kind"], "price_change");
    assert_eq!(json["severity"], "elevated");
    assert_eq!(json["market_id"], "1x2");
    assert_eq!(json["line"], serde_json::Value::Null);
    assert_eq!(json["outcome"], "1");
    assert_eq!(json["change_pct"], 11.9);
    assert!(json["at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_competitor_moving_against_the_home_bookmaker_disagrees_and_a_half_cent_is_no_move() {
    let mut f = Fixture::new();
    f.one_x_two("betpawa", [2.00, 3.40, 3.60]);
    f.one_x_two("sportybet", [2.00, 3.40, 3.60]);
    f.one_x_two("betpawa", [2.05, 3.40, 3.60]);
    let (alerts, _) = f.one_x_two("sportybet", [1.95, 3.40, 3.60]);
    assert_eq!(kinds(&alerts), [AlertKind::DirectionDisagreement]);
    let json = serde_json::to_value(&alerts[0]).unwrap();
    assert_eq!(json["outcome"], "1");
    assert_eq!(json["moves"][0]["source"], "betpawa");
    assert_eq!(json["moves"][0]["from"], 2.0);
    assert_eq!(json["moves"][0]["to"], 2.05);
    assert_eq!(json["moves"][1]["source"], "sportybet");
    assert_eq!(json["moves"][1]["to"], 1.95);
    assert_eq!(json["severity"], "warning");

    // A move of 0.005 is none.
    let mut f = Fixture::new();
    f.one_x_two("betpawa", [2.00, 3.40, 3.60]);
    f.one_x_two("sportybet", [2.00, 3.40, 3.60]);
    f.one_x_two("betpawa", [2.005, 3.40, 3.60]);
    assert!(f.one_x_two("sportybet", [1.95, 3.40, 3.60]).0.is_empty());

    // Moves further apart than the window do not disagree.
    let mut f = Fixture::new();
    f.one_x_two("betpawa", [2.00, 3.40, 3.60]);
    f.one_x_two("sportybet", [2.00, 3.40, 3.60]);
    f.one_x_two("betpawa", [2.05, 3.40, 3.60]);
    f.later(301);
    assert!(f.one_x_two("sportybet", [1.95, 3.40, 3.60]).0.is_empty());
}

#[test]
fn a_surebet_opens_under_a_sum_of_one_and_closes_with_it() {
    // 1/2 + 1/2.004008 = 0.999: open. 1/2 + 1/2 = 1.000: not.
    let mut f = Fixture::new();
    let over_under = |over, under| {
        [(
            "over_under",
            Some(2.5),
            vec![("Over", over), ("Under", under)],
        )]
    };
    assert!(f.take("betpawa", &over_under(2.0, 1.8)).0.is_empty());
    assert!(
        f.take("sportybet", &over_under(1.8, 2.0)).0.is_empty(),
        "sum 1.000"
    );
    assert!(f.open.is_empty());
    let (alerts, _) = f.take("sportybet", &over_under(1.8, 1.0 / 0.499));
    assert_eq!(kinds(&alerts), [AlertKind::Surebet], "sum 0.999");
    let Detail::Surebet {
        state,
        profit_pct,
        legs,
    } = &alerts[0].detail
    else {
        panic!("{alerts:?}");
    };
    assert_eq!(*state, SurebetState::Open);
    assert_eq!(*profit_pct, 0.1);
    assert_eq!(
        alerts[0].severity,
        Severity::Critical,
        "the home bookmaker is a leg"
    );
    assert_eq!(alerts[0].source, None);
    let legs: Vec<(&str, &str)> = legs.iter().map(|l| (&*l.outcome, &*l.source)).collect();
    assert_eq!(legs, [("Over", "betpawa"), ("Under", "sportybet")]);
    assert_eq!(f.open.len(), 1);

    let (alerts, _) = f.take("sportybet", &over_under(1.8, 2.0));
    assert_eq!(kinds(&alerts), [AlertKind::Surebet]);
    assert!(matches!(
        alerts[0].detail,
        Detail::Surebet {
            state: SurebetState::Closed,
            ..
        }
    ));
    assert!(f.open.is_empty());
}

#[test]
fn a_market_missing_then_back_is_pulled_then_returned() {
    let mut f = Fixture::new();
    let btts = [("btts", None, vec![("Yes", 1.8), ("No", 1.9)])];
    f.take("bet9ja", &btts);
    let (alerts, _) = f.take("bet9ja", &[]);
    assert_eq!(kinds(&alerts), [AlertKind::Availability]);
    assert_eq!(
        alerts[0].detail,
        Detail::Availability {
            state: Availability::Pulled
        }
    );
    assert_eq!(alerts[0].market_id.as_ref(), "btts");
    assert!(f.take("bet9ja", &[]).0.is_empty(), "pulled once");
    let (alerts, _) = f.take("bet9ja", &btts);
    assert_eq!(
        alerts[0].detail,
        Detail::Availability {
            state: Availability::Returned
        }
    );
}

#[test]
fn the_cooldown_holds_back_a_second_alert_of_a_kind_and_never_an_ending_one() {
    let mut f = Fixture::new();
    f.one_x_two("sportybet", [2.00, 3.40, 3.00]);
    assert_eq!(f.one_x_two("sportybet", [2.20, 3.40, 3.00]).0.len(), 1);
    f.later(30);
    let (alerts, suppressed) = f.one_x_two("sportybet", [2.50, 3.40, 3.00]);
    assert!(alerts.is_empty());
    assert_eq!(suppressed, [AlertKind::PriceChange]);
    f.later(31);
    assert_eq!(f.one_x_two("sportybet", [2.00, 3.40, 3.00]).0.len(), 1);

    // A pull the cooldown held back is not followed by its return; one it let through is,
    // even within the cooldown.
    let mut f = Fixture::new();
    let btts = [("btts", None, vec![("Yes", 1.8), ("No", 1.9)])];
    f.take("bet9ja", &btts);
    f.take("sportybet", &btts);
    assert_eq!(f.take("bet9ja", &[]).0.len(), 1);
    let (alerts, suppressed) = f.take("sportybet", &[]);
    assert!(alerts.is_empty());
    assert_eq!(suppressed, [AlertKind::Availability]);
    assert!(
        f.take("sportybet", &btts).0.is_empty(),
        "its pull was not sent"
    );
    let (alerts, _) = f.take("bet9ja", &btts);
    assert_eq!(
        kinds(&alerts),
        [AlertKind::Availability],
        "within the cooldown"
    );
}

#[test]
fn an_unknown_market_raises_nothing() {
    let mut f = Fixture::new();
    let corners = |odds| [("corners", Some(9.5), vec![("Over", odds), ("Under", 1.2)])];
    f.take("sportybet", &corners(2.0));
    assert!(f.take("sportybet", &corners(3.0)).0.is_empty());
    assert!(f.take("sportybet", &[]).0.is_empty());
    assert!(f.book.fair().is_empty());
}

#[test]
fn the_fair_price_takes_each_margin_out_and_averages() {
    let mut f = Fixture::new();
    // Both at a 5% margin on an even market: fair 2.00, each outcome at p = 0.5.
    let even = |a, b| [("btts", None, vec![("Yes", a), ("No", b)])];
    f.take("betpawa", &even(1.905, 1.905));
    f.take("sportybet", &even(1.80, 2.0));
    f.take("betpawa", &even(2.0, 1.82));
    let fair = serde_json::to_value(f.book.fair()).unwrap();
    let market = &fair[0];
    assert_eq!(market["market_id"], "btts");
    // betpawa 1/2 + 1/1.82 = 1.0495; sportybet 1/1.8 + 1/2 = 1.0556.
    assert_eq!(market["margins"]["betpawa"], 0.0495);
    assert_eq!(market["margins"]["sportybet"], 0.0556);
    let yes = &market["outcomes"][0];
    assert_eq!(yes["outcome"], "Yes");
    // p(yes) = (0.5/1.0495 + 0.5556/1.0556) / 2 = (0.4764 + 0.5263) / 2.
    assert_eq!(yes["fair_probability"], 0.5014);
    assert_eq!(yes["fair_odds"], 1.99);
    assert_eq!(yes["best"]["source"], "betpawa");
    assert_eq!(yes["best"]["odds"], 2.0);
    assert_eq!(yes["betpawa_edge"], 0.0028);
    assert_eq!(yes["prices"]["betpawa"]["opening"], 1.905);
    assert_eq!(yes["prices"]["sportybet"]["odds"], 1.8);
}
