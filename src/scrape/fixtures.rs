//! The simulated market's fixtures: which teams play each match, in which competition, and
//! when. A few matches are live, most kick off later today or in the next days, on the
//! quarter hour, as fixture lists do. Chosen from the seed, relative to when the market is
//! built; a match over for [`OVER_AFTER`] comes round again one [`ROUND`] later, so a
//! market that runs for weeks keeps its matches ahead of it.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Details, EventDetails};
use crate::protocol::Timestamp;

/// Competitions and their teams.
const LEAGUES: &[(&str, &[&str])] = &[
    (
        "England: Premier League",
        &[
            "Arsenal",
            "Chelsea",
            "Liverpool",
            "Manchester City",
            "Manchester United",
            "Tottenham",
            "Newcastle",
            "Aston Villa",
            "Brighton",
            "West Ham",
            "Everton",
            "Fulham",
        ],
    ),
    (
        "Spain: LaLiga",
        &[
            "Real Madrid",
            "Barcelona",
            "Atletico Madrid",
            "Sevilla",
            "Valencia",
            "Villarreal",
            "Real Sociedad",
            "Athletic Club",
            "Real Betis",
            "Girona",
        ],
    ),
    (
        "Italy: Serie A",
        &[
            "Inter",
            "Milan",
            "Juventus",
            "Napoli",
            "Roma",
            "Lazio",
            "Atalanta",
            "Fiorentina",
            "Bologna",
            "Torino",
        ],
    ),
    (
        "Germany: Bundesliga",
        &[
            "Bayern Munich",
            "Borussia Dortmund",
            "RB Leipzig",
            "Bayer Leverkusen",
            "Eintracht Frankfurt",
            "Stuttgart",
            "Wolfsburg",
            "Freiburg",
        ],
    ),
    (
        "France: Ligue 1",
        &[
            "Paris Saint-Germain",
            "Marseille",
            "Lyon",
            "Monaco",
            "Lille",
            "Rennes",
            "Nice",
            "Lens",
        ],
    ),
    (
        "Nigeria: NPFL",
        &[
            "Enyimba",
            "Rivers United",
            "Kano Pillars",
            "Enugu Rangers",
            "Shooting Stars",
            "Remo Stars",
            "Plateau United",
            "Lobi Stars",
        ],
    ),
    (
        "Ghana: Premier League",
        &[
            "Asante Kotoko",
            "Hearts of Oak",
            "Medeama",
            "Aduana",
            "Dreams FC",
            "Legon Cities",
        ],
    ),
    (
        "Kenya: Premier League",
        &[
            "Gor Mahia",
            "AFC Leopards",
            "Tusker",
            "Kakamega Homeboyz",
            "Bandari",
            "Police FC",
        ],
    ),
];

/// How long after its kickoff a simulated match is over.
const OVER_AFTER: Duration = Duration::from_secs(2 * 3600);

/// How far ahead fixtures reach, and how often a match comes round again.
const ROUND: Duration = Duration::from_secs(4 * 86_400);

/// One match of the simulated market.
#[derive(Debug)]
pub struct Fixture {
    details: EventDetails,
    /// Its details as first scheduled, encoded once.
    first: Arc<Details>,
}

impl Fixture {
    /// Its details at `now`: as first scheduled, or rolled forward by whole rounds once that
    /// match is over.
    pub fn details(&self, now: Timestamp) -> Arc<Details> {
        let Some(kickoff) = self.details.kickoff else {
            return self.first.clone();
        };
        let over = now.minus(OVER_AFTER);
        if kickoff >= over {
            return self.first.clone();
        }
        let round = i64::try_from(ROUND.as_millis()).unwrap_or(i64::MAX);
        let rounds = (over.unix_millis() - kickoff.unix_millis()) / round + 1;
        let rolled = Timestamp::from_unix_millis(kickoff.unix_millis() + rounds * round);
        Arc::new(Details::new(&EventDetails {
            kickoff: rolled.or(Some(kickoff)),
            ..self.details.clone()
        }))
    }
}

/// The `events` matches, in event order.
pub fn fixtures(rng: &mut fastrand::Rng, events: usize) -> Vec<Fixture> {
    let now = Timestamp::now();
    (0..events)
        .map(|_| {
            let (competition, teams) = LEAGUES[rng.usize(..LEAGUES.len())];
            let home = rng.usize(..teams.len());
            let away = (home + 1 + rng.usize(..teams.len() - 1)) % teams.len();
            // One match in twenty is under way; the others start within four days.
            let quarters = if rng.f64() < 0.05 {
                -(rng.i64(1..7))
            } else {
                rng.i64(1..4 * 24 * 4)
            };
            let details = EventDetails {
                name: Some(format!("{} v {}", teams[home], teams[away])),
                competition: Some(competition.to_owned()),
                kickoff: quarter_hour(now, quarters),
            };
            Fixture {
                first: Arc::new(Details::new(&details)),
                details,
            }
        })
        .collect()
}

/// The quarter hour `quarters` quarters after the one `now` falls in (before it if negative).
fn quarter_hour(now: Timestamp, quarters: i64) -> Option<Timestamp> {
    const QUARTER: i64 = 15 * 60 * 1000;
    let start = now.unix_millis() - now.unix_millis().rem_euclid(QUARTER);
    Timestamp::from_unix_millis(start + quarters * QUARTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_name_two_different_teams_of_one_league_and_a_kickoff_on_the_quarter() {
        let mut rng = fastrand::Rng::with_seed(7);
        let all = fixtures(&mut rng, 500);
        let now = Timestamp::now();
        let mut live = 0;
        for fixture in &all {
            let details = fixture.details(now);
            let text = std::str::from_utf8(&details.json).unwrap();
            let read: serde_json::Value = serde_json::from_str(text).unwrap();
            let name = read["name"].as_str().unwrap();
            let (home, away) = name.split_once(" v ").unwrap();
            assert_ne!(home, away, "{name}");
            let (_, teams) = LEAGUES
                .iter()
                .find(|(c, _)| *c == read["competition"])
                .unwrap();
            assert!(teams.contains(&home) && teams.contains(&away), "{text}");
            let kickoff = details.kickoff.unwrap();
            assert_eq!(kickoff.unix_millis() % (15 * 60 * 1000), 0);
            assert!(kickoff.unix_millis() < now.unix_millis() + 5 * 86_400_000);
            live += usize::from(kickoff < now);
        }
        assert!((5..=60).contains(&live), "{live} of 500 under way");
    }

    #[test]
    fn a_match_over_comes_round_again_ahead() {
        let mut rng = fastrand::Rng::with_seed(7);
        let all = fixtures(&mut rng, 50);
        let weeks_later = Timestamp::now().plus(Duration::from_secs(30 * 86_400));
        for fixture in &all {
            let kickoff = fixture.details(weeks_later).kickoff.unwrap();
            assert!(kickoff >= weeks_later.minus(OVER_AFTER), "not over");
            assert!(kickoff < weeks_later.plus(ROUND), "within a round");
            assert_eq!(kickoff.unix_millis() % (15 * 60 * 1000), 0);
        }
    }
}
