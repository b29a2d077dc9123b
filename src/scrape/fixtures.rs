//! The simulated market's fixtures: which teams play each match, in which competition, and
//! when. A few matches are live, most kick off later today or in the next days, on the
//! quarter hour, as fixture lists do. Chosen from the seed, relative to when the market is
//! built.

use std::sync::Arc;

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

/// The details of `events` matches, in event order.
pub fn fixtures(rng: &mut fastrand::Rng, events: usize) -> Vec<Arc<Details>> {
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
            let kickoff = quarter_hour(now, quarters);
            Arc::new(Details::new(&EventDetails {
                name: Some(format!("{} v {}", teams[home], teams[away])),
                competition: Some(competition.to_owned()),
                kickoff,
            }))
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
        for details in &all {
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
}
