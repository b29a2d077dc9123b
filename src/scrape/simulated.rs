//! The simulated odds source: the embedded default, so the broker shows live odds moving
//! with no outside system.
//!
//! The world is a fixed list of football matches (teams, competition and kickoff from
//! `fixtures.rs`), each with expected goals for both teams drawn from the seed. Each platform
//! prices every match it lists from those expectations (1X2 and both-teams-to-score from
//! independent Poisson scores, over/under 2.5 from their sum) with its own margin, rounded to
//! two decimals as bookmakers show them.
//!
//! The market agrees with itself, as a real one does: each match's expectations swing slowly
//! and smoothly about their base (its [`Drift`], a function of how often a platform was
//! scraped), and every platform follows them with its own small bias. Each time a platform
//! is scraped after its first scrape, `change_fraction` of its events, and only those, catch
//! up with the drift, by a percent or two. Every platform has its own generator, so the
//! sequence depends only on the seed and on how often each platform was scraped.
//!
//! So that the odds analysis has something to say, now and then a chosen event also moves
//! sharply at one platform (8 to 45%, past each severity, and back by half each time it is
//! chosen again), pulls one of its markets (back when chosen again), or, at a competitor,
//! moves against the market (a direction disagreement with the home bookmaker) or prices its
//! home win too long (a short-lived sure bet, over when chosen again). At the defaults that
//! is a few alerts of each kind per minute (BENCHMARKS.md).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;

use super::fixtures::{fixtures, Fixture};
use crate::cache::{intern, Market, Outcome, Snapshot};
use crate::protocol::{Timestamp, HOME_SOURCE};
use crate::scrape::{OddsSource, SourceError};

/// The id of the first simulated event; the others follow it.
pub const FIRST_EVENT_ID: u64 = 100_001;

/// Shape of the simulated market.
#[derive(Debug, Clone)]
pub struct SimulatedSettings {
    /// Seed of every random choice.
    pub seed: u64,
    /// Matches in the world.
    pub events: usize,
    /// Fraction of a platform's events whose odds move between two scrapes (0 to 1).
    pub change_fraction: f64,
    /// Pretend network time of each `fetch_odds` call.
    pub latency: Duration,
}

/// A deterministic market of football matches over a set of platforms.
#[derive(Debug)]
pub struct SimulatedSource {
    settings: SimulatedSettings,
    /// Each match (teams, competition, kickoff), by index.
    fixtures: Vec<Fixture>,
    /// How each match's expectations drift, by index.
    drifts: Vec<Drift>,
    platforms: Mutex<HashMap<String, Platform>>,
}

/// One platform's view of the world.
#[derive(Debug)]
struct Platform {
    rng: fastrand::Rng,
    margin: f64,
    /// Offset of the platform's own event ids (`bookmaker_id`).
    id_base: i64,
    /// Indexes of the matches this platform offers.
    listed: Vec<usize>,
    /// This platform's standing view of each match: factors on the drift's expected goals.
    bias: Vec<(f64, f64)>,
    /// Each match's passing deviation from that view (a sharp move, a move against the
    /// market), halved each time the match is chosen again.
    shift: Vec<(f64, f64)>,
    /// How far along its drift each match is priced, in scrapes: the scrape at which it last
    /// caught up, or a little ahead (see [`Platform::walk`]).
    synced: Vec<u64>,
    /// Matches with one market pulled (its index in [`price`]'s list), until chosen again.
    pulled: HashMap<usize, usize>,
    /// Matches whose home win a competitor prices [`BOOST`] too long, until chosen again.
    boosted: HashSet<usize>,
    home: bool,
    scrapes: u64,
}

/// How much too long a boosted home win is priced: enough to beat every other bookmaker's
/// margin, so that the best prices usually add up to a sure bet.
const BOOST: f64 = 1.15;

/// Of the walks, the share in which the first chosen event moves sharply, the second pulls a
/// market, and, at a competitor, the third is boosted and the fourth moves against the
/// market: at the default settings, a few of each per minute.
const SHARP: f64 = 1.0 / 16.0;
const PULL: f64 = 1.0 / 12.0;
const SUREBET: f64 = 1.0 / 24.0;
const AGAINST: f64 = 1.0 / 12.0;

/// How a match's expectations drift: each swings by up to [`SWING`] (as a log factor) about
/// its base over `period` scrapes, home and away out of phase.
#[derive(Debug)]
struct Drift {
    base: (f64, f64),
    period: f64,
    phase: (f64, f64),
}

const SWING: f64 = 0.25;

impl Drift {
    fn angles(&self, scrape: u64) -> (f64, f64) {
        let turn = std::f64::consts::TAU * scrape as f64 / self.period;
        (turn + self.phase.0, turn + self.phase.1)
    }

    /// The expected goals (home, away) after `scrape` scrapes.
    fn goals(&self, scrape: u64) -> (f64, f64) {
        let (h, a) = self.angles(scrape);
        (
            self.base.0 * (SWING * h.sin()).exp(),
            self.base.1 * (SWING * a.sin()).exp(),
        )
    }

    /// Which way each is heading: 1 or -1.
    fn heading(&self, scrape: u64) -> (f64, f64) {
        let (h, a) = self.angles(scrape);
        (1f64.copysign(h.cos()), 1f64.copysign(a.cos()))
    }
}

impl SimulatedSource {
    /// Builds the world and one view of it per platform.
    pub fn new(settings: SimulatedSettings, platforms: &[String]) -> SimulatedSource {
        let mut world = fastrand::Rng::with_seed(settings.seed);
        let bases: Vec<(f64, f64)> = (0..settings.events)
            .map(|_| (0.7 + 1.5 * world.f64(), 0.5 + 1.3 * world.f64()))
            .collect();
        let fixtures = fixtures(&mut world, settings.events);
        let drifts = bases
            .into_iter()
            .map(|base| Drift {
                base,
                period: 1_440.0 + 2_880.0 * world.f64(),
                phase: (
                    std::f64::consts::TAU * world.f64(),
                    std::f64::consts::TAU * world.f64(),
                ),
            })
            .collect();
        let views = platforms
            .iter()
            .map(|name| {
                let tag = fnv1a(name.as_bytes());
                let mut rng = fastrand::Rng::with_seed(settings.seed ^ tag);
                let home = name == HOME_SOURCE;
                // The home bookmaker lists everything; competitors most of it.
                let listed = (0..settings.events)
                    .filter(|_| home || rng.f64() < 0.92)
                    .collect();
                // Each platform's traders disagree a little with the market.
                let bias = (0..settings.events)
                    .map(|_| (0.99 + 0.02 * rng.f64(), 0.99 + 0.02 * rng.f64()))
                    .collect();
                let platform = Platform {
                    margin: if home {
                        0.05
                    } else {
                        0.055 + 0.01 * (tag % 3) as f64
                    },
                    id_base: 10_000_000 * (1 + (tag % 89) as i64),
                    listed,
                    bias,
                    shift: vec![(1.0, 1.0); settings.events],
                    synced: vec![0; settings.events],
                    pulled: HashMap::new(),
                    boosted: HashSet::new(),
                    home,
                    scrapes: 0,
                    rng,
                };
                (name.clone(), platform)
            })
            .collect();
        SimulatedSource {
            settings,
            fixtures,
            drifts,
            platforms: Mutex::new(views),
        }
    }

    fn unknown(platform: &str) -> SourceError {
        SourceError(format!("the simulated market has no platform `{platform}`"))
    }
}

impl OddsSource for SimulatedSource {
    fn list_events<'a>(
        &'a self,
        platform: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, SourceError>> {
        let listed = {
            let mut platforms = self.platforms.lock();
            match platforms.get_mut(platform) {
                Some(view) => {
                    if view.scrapes > 0 {
                        view.walk(self.settings.change_fraction, &self.drifts);
                    }
                    view.scrapes += 1;
                    Ok(view
                        .listed
                        .iter()
                        .map(|&i| FIRST_EVENT_ID + i as u64)
                        .collect())
                }
                None => Err(SimulatedSource::unknown(platform)),
            }
        };
        std::future::ready(listed).boxed()
    }

    fn fetch_odds<'a>(
        &'a self,
        platform: &'a str,
        event_ids: &'a [u64],
    ) -> BoxFuture<'a, Result<Vec<(u64, Snapshot)>, SourceError>> {
        async move {
            if !self.settings.latency.is_zero() {
                tokio::time::sleep(self.settings.latency).await;
            }
            let platforms = self.platforms.lock();
            let view = platforms
                .get(platform)
                .ok_or_else(|| SimulatedSource::unknown(platform))?;
            let captured_at = Timestamp::now();
            Ok(event_ids
                .iter()
                .filter_map(|&id| {
                    let index = usize::try_from(id.checked_sub(FIRST_EVENT_ID)?).ok()?;
                    let (home, away) = view.goals(index, self.drifts.get(index)?);
                    let mut markets = price(home, away, view.margin);
                    if view.boosted.contains(&index) {
                        let win = &mut markets[0].outcomes[0].odds;
                        *win = (*win * BOOST * 100.0).round() / 100.0;
                    }
                    if let Some(&market) = view.pulled.get(&index) {
                        markets.remove(market);
                    }
                    let snapshot = Snapshot {
                        bookmaker_id: Some(view.id_base + index as i64),
                        captured_at,
                        markets,
                        event: self.fixtures.get(index).map(|f| f.details(captured_at)),
                    };
                    Some((id, snapshot))
                })
                .collect())
        }
        .boxed()
    }
}

impl Platform {
    /// The expected goals (home, away) at which this platform prices match `index`.
    fn goals(&self, index: usize, drift: &Drift) -> (f64, f64) {
        let (home, away) = drift.goals(self.synced[index]);
        let ((bh, ba), (sh, sa)) = (self.bias[index], self.shift[index]);
        (
            (home * bh * sh).clamp(0.2, 4.5),
            (away * ba * sa).clamp(0.2, 4.5),
        )
    }

    /// Moves the prices of `fraction` of the listed events, and only of those.
    fn walk(&mut self, fraction: f64, drifts: &[Drift]) {
        let moves = ((self.listed.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
        let mut chosen = self.listed.clone();
        self.rng.shuffle(&mut chosen);
        let roll = self.rng.f64();
        for (nth, &index) in chosen.iter().take(moves).enumerate() {
            let drift = &drifts[index];
            self.pulled.remove(&index);
            self.boosted.remove(&index);
            if nth == 1 && roll < PULL {
                self.pulled.insert(index, self.rng.usize(0..3));
            }
            if nth == 2 && !self.home && roll < SUREBET {
                self.boosted.insert(index);
            }
            let before = self.goals(index, drift);
            let synced = &mut self.synced[index];
            *synced = (*synced).max(self.scrapes);
            let heading = drift.heading(*synced);
            let shift = &mut self.shift[index];
            *shift = ((1.0 + shift.0) / 2.0, (1.0 + shift.1) / 2.0);
            if nth == 0 && roll < SHARP {
                let mut sharp = || {
                    let size = 1.08 + 0.37 * self.rng.f64();
                    if self.rng.bool() {
                        size
                    } else {
                        size.recip()
                    }
                };
                *shift = (shift.0 * sharp(), shift.1 * sharp());
            }
            if nth == 3 && !self.home && roll < AGAINST {
                let size = 0.03 + 0.02 * self.rng.f64();
                *shift = (
                    shift.0 * (1.0 - heading.0 * size),
                    shift.1 * (1.0 - heading.1 * size),
                );
            }
            // Rounding to two decimals can hide a small move: a chosen event then runs ahead
            // on its drift, the way the market goes, so that it always changes.
            let before = price(before.0, before.1, self.margin);
            for ahead in 1..=16 {
                let (home, away) = self.goals(index, drift);
                if price(home, away, self.margin) != before {
                    break;
                }
                self.synced[index] += 4 * ahead;
            }
        }
    }
}

/// The three markets of a match with expected goals `home` and `away`, at `margin`.
fn price(home: f64, away: f64, margin: f64) -> Vec<Market> {
    let (p_home, p_draw, p_away) = result_probabilities(home, away);
    let p_over = 1.0 - poisson_cdf(home + away, 2);
    let p_btts = (1.0 - (-home).exp()) * (1.0 - (-away).exp());
    let market = |id: &str, name: &str, line: Option<f64>, outcomes: &[(&str, f64)]| Market {
        market_id: intern(id),
        name: intern(name),
        line,
        outcomes: outcomes
            .iter()
            .map(|&(name, p)| Outcome {
                name: intern(name),
                odds: decimal_odds(p, margin),
            })
            .collect(),
    };
    vec![
        market(
            "1x2",
            "1X2",
            None,
            &[("1", p_home), ("X", p_draw), ("2", p_away)],
        ),
        market(
            "over_under",
            "Over/Under",
            Some(2.5),
            &[("Over", p_over), ("Under", 1.0 - p_over)],
        ),
        market(
            "btts",
            "Both Teams To Score",
            None,
            &[("Yes", p_btts), ("No", 1.0 - p_btts)],
        ),
    ]
}

/// Bookmaker odds for probability `p`: the fair price shortened by the margin, two decimals.
fn decimal_odds(p: f64, margin: f64) -> f64 {
    let fair = 1.0 / (p.clamp(0.005, 0.995) * (1.0 + margin));
    ((fair * 100.0).round() / 100.0).max(1.01)
}

/// Home win, draw and away win probabilities for independent Poisson scores.
fn result_probabilities(home: f64, away: f64) -> (f64, f64, f64) {
    const MAX_GOALS: usize = 12;
    let h = poisson_pmf(home, MAX_GOALS);
    let a = poisson_pmf(away, MAX_GOALS);
    let (mut win, mut draw, mut loss) = (0.0, 0.0, 0.0);
    for (i, ph) in h.iter().enumerate() {
        for (j, pa) in a.iter().enumerate() {
            let p = ph * pa;
            match i.cmp(&j) {
                std::cmp::Ordering::Greater => win += p,
                std::cmp::Ordering::Equal => draw += p,
                std::cmp::Ordering::Less => loss += p,
            }
        }
    }
    let total = win + draw + loss;
    (win / total, draw / total, loss / total)
}

fn poisson_pmf(lambda: f64, max: usize) -> Vec<f64> {
    let mut p = (-lambda).exp();
    let mut pmf = Vec::with_capacity(max + 1);
    for k in 0..=max {
        pmf.push(p);
        p *= lambda / (k + 1) as f64;
    }
    pmf
}

fn poisson_cdf(lambda: f64, k: usize) -> f64 {
    poisson_pmf(lambda, k).iter().sum()
}

/// A stable string hash (the standard library's may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_plausible_and_carry_the_margin() {
        for (home, away) in [(1.5, 1.1), (2.4, 0.6), (0.7, 1.9)] {
            let markets = price(home, away, 0.05);
            assert_eq!(markets.len(), 3);
            for market in &markets {
                let overround: f64 = market.outcomes.iter().map(|o| 1.0 / o.odds).sum();
                assert!((1.03..1.08).contains(&overround), "{market:?}: {overround}");
                assert!(market
                    .outcomes
                    .iter()
                    .all(|o| o.odds >= 1.01 && o.odds < 100.0));
            }
        }
        // The stronger side is the favourite.
        let markets = price(2.4, 0.6, 0.05);
        assert!(markets[0].outcomes[0].odds < markets[0].outcomes[2].odds);
    }
}
