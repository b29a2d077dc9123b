//! The cache's own rules, without a server.

use super::*;
use crate::protocol::Timestamp;
use std::sync::Mutex;

mod leaving;

/// The price of outcome "1" of the first market in `source`'s stored snapshot of `event`.
fn price(cache: &OddsCache, event: u64, source: &str) -> f64 {
    let odds = cache.event_odds(event).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&odds.source(source).unwrap().json).unwrap();
    json["markets"][0]["outcomes"][0]["odds"].as_f64().unwrap()
}

fn snapshot(price: f64) -> Snapshot {
    Snapshot {
        bookmaker_id: None,
        captured_at: Timestamp::now(),
        markets: vec![Market {
            market_id: intern("1x2"),
            name: intern("1X2"),
            line: None,
            outcomes: vec![Outcome {
                name: intern("1"),
                odds: price,
            }],
        }],
        event: None,
    }
}

#[test]
fn unchanged_put_only_refreshes_captured_at() {
    let cache = OddsCache::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    cache.on_update(move |changes: Changes<'_>| {
        seen.lock()
            .unwrap()
            .push((changes.event_ids.to_vec(), changes.source.to_owned()))
    });

    let first = cache.put_competitor_snapshot(7, "sportybet", snapshot(2.0));
    assert_eq!(first.changed, vec![7]);
    let id_before = cache.event_odds(7).unwrap().sources[0].1.snapshot_id;

    let mut again = snapshot(2.0);
    again.captured_at = Timestamp::parse("2030-01-01T00:00:00Z").unwrap();
    let second = cache.put_competitor_snapshot(7, "sportybet", again);
    assert_eq!(
        second,
        PutOutcome {
            accepted: 1,
            changed: vec![],
            stale: 0,
        }
    );

    let odds = cache.event_odds(7).unwrap();
    let stored = odds.source("sportybet").unwrap();
    assert_eq!(stored.snapshot_id, id_before);
    let json = std::str::from_utf8(&stored.json).unwrap();
    assert!(
        json.contains(r#""captured_at":"2030-01-01T00:00:00.000Z""#),
        "{json}"
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "no callback for an unchanged put"
    );
}

#[test]
fn batch_reports_distinct_changed_ids_once() {
    let cache = OddsCache::new();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    cache.on_update(move |changes: Changes<'_>| {
        let prices = changes.snapshots.iter().map(|json| {
            let json: serde_json::Value = serde_json::from_slice(json).unwrap();
            json["markets"][0]["outcomes"][0]["odds"].as_f64().unwrap()
        });
        seen.lock().unwrap().push(
            changes
                .event_ids
                .iter()
                .copied()
                .zip(prices)
                .collect::<Vec<_>>(),
        )
    });
    cache.put_batch(HOME_SOURCE, vec![(1, snapshot(2.0))]);
    let outcome = cache.put_batch(
        HOME_SOURCE,
        vec![
            (3, snapshot(2.0)),
            (1, snapshot(2.0)),
            (2, snapshot(1.5)),
            (3, snapshot(1.9)),
        ],
    );
    assert_eq!(outcome.accepted, 4);
    assert_eq!(outcome.changed, vec![3, 2]);
    // The callback gets each changed event once, with its latest snapshot.
    assert_eq!(
        *calls.lock().unwrap(),
        vec![vec![(1, 2.0)], vec![(3, 1.9), (2, 1.5)]]
    );
    assert_eq!(price(&cache, 3, HOME_SOURCE), 1.9);
}

#[test]
fn sources_list_the_home_bookmaker_first() {
    let cache = OddsCache::new();
    cache.put_competitor_snapshot(1, "bet9ja", snapshot(2.0));
    cache.put_competitor_snapshot(1, "sportybet", snapshot(2.0));
    cache.put_betpawa_snapshot(1, 55, snapshot(2.0));
    let events = cache.events();
    let names: Vec<&str> = events[0].sources.iter().map(|(s, _)| &**s).collect();
    assert_eq!(names, ["betpawa", "bet9ja", "sportybet"]);
}

#[test]
fn reads_are_written_exactly_as_the_contract_shows_them() {
    let cache = OddsCache::new();
    let time = "2026-11-22T00:07:00.495Z";
    let market = |line, outcomes: &[(&str, f64)]| Market {
        market_id: intern("ou"),
        name: intern("Over/Under"),
        line,
        outcomes: outcomes
            .iter()
            .map(|&(name, odds)| Outcome {
                name: intern(name),
                odds,
            })
            .collect(),
    };
    let home = Snapshot {
        markets: vec![market(Some(2.5), &[("Over", 1.85), ("Under", 2.0)])],
        ..at(snapshot(2.0), time)
    };
    cache.put_betpawa_snapshot(101, 9001, home);
    cache.put_competitor_snapshot(101, "sportybet", at(snapshot(2.1), time));
    cache.put_competitor_snapshot(101, "bet9ja", at(snapshot(2.15), time));
    let mut out = Vec::new();
    cache.event_odds(101).unwrap().write_json(&mut out);
    let expected = concat!(
        r#"{"event_id":101,"betpawa":{"snapshot_id":1,"event_id":101,"bookmaker_id":9001,"captured_at":"2026-11-22T00:07:00.495Z","markets":[{"market_id":"ou","name":"Over/Under","line":2.5,"outcomes":[{"name":"Over","odds":1.85},{"name":"Under","odds":2.0}]}]},"#,
        r#""competitors":{"bet9ja":{"snapshot_id":3,"event_id":101,"bookmaker_id":null,"captured_at":"2026-11-22T00:07:00.495Z","markets":[{"market_id":"1x2","name":"1X2","line":null,"outcomes":[{"name":"1","odds":2.15}]}]},"#,
        r#""sportybet":{"snapshot_id":2,"event_id":101,"bookmaker_id":null,"captured_at":"2026-11-22T00:07:00.495Z","markets":[{"market_id":"1x2","name":"1X2","line":null,"outcomes":[{"name":"1","odds":2.1}]}]}}}"#,
    );
    assert_eq!(std::str::from_utf8(&out).unwrap(), expected);

    let mut out = Vec::new();
    cache.events()[0].write_json(&mut out);
    let text = std::str::from_utf8(&out).unwrap();
    let prefix = r#"{"event_id":101,"sources":["betpawa","bet9ja","sportybet"],"updated_at":""#;
    assert!(
        text.starts_with(prefix) && text.ends_with(r#"Z"}"#),
        "{text}"
    );
    assert_eq!(text.len(), prefix.len() + 24 + 2, "{text}");
}

#[test]
fn the_tag_follows_the_odds_not_the_refreshes() {
    let cache = OddsCache::new();
    let tag = |cache: &OddsCache| {
        let mut tag = Tag::default();
        cache.event_odds(1).unwrap().tag(&mut tag);
        tag.etag()
    };
    cache.put_competitor_snapshot(1, "sportybet", at(snapshot(2.0), "2026-01-01T00:00:00Z"));
    let first = tag(&cache);
    assert!(
        first.starts_with("W/\"") && first.len() == 2 + 2 + 16,
        "{first}"
    );
    cache.put_competitor_snapshot(1, "sportybet", at(snapshot(2.0), "2026-01-01T00:00:01Z"));
    assert_eq!(tag(&cache), first, "a refresh keeps the tag");
    cache.put_competitor_snapshot(1, "sportybet", at(snapshot(2.2), "2026-01-01T00:00:02Z"));
    let second = tag(&cache);
    assert_ne!(second, first, "new odds, new tag");
    cache.put_competitor_snapshot(1, "bet9ja", at(snapshot(2.2), "2026-01-01T00:00:02Z"));
    assert_ne!(tag(&cache), second, "a new source, new tag");
}

fn at(snapshot: Snapshot, time: &str) -> Snapshot {
    Snapshot {
        captured_at: Timestamp::parse(time).unwrap(),
        ..snapshot
    }
}

#[test]
fn an_older_snapshot_is_stale_not_applied_and_not_notified() {
    let cache = OddsCache::new();
    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    cache.on_update(move |_| *seen.lock().unwrap() += 1);
    let newer = at(snapshot(2.0), "2026-11-21T10:00:00Z");
    cache.put_competitor_snapshot(7, "sportybet", newer);
    let older = at(snapshot(9.0), "2020-01-01T00:00:00Z");
    let outcome = cache.put_competitor_snapshot(7, "sportybet", older);
    assert_eq!(
        outcome,
        PutOutcome {
            accepted: 0,
            changed: vec![],
            stale: 1
        }
    );
    assert_eq!(price(&cache, 7, "sportybet"), 2.0);
    assert_eq!(*calls.lock().unwrap(), 1);
    // Another source's older snapshot is not stale: staleness is per source.
    let other = at(snapshot(9.0), "2020-01-01T00:00:00Z");
    assert_eq!(cache.put_competitor_snapshot(7, "bet9ja", other).stale, 0);
}

#[test]
fn names_are_shared() {
    let a = intern("Over");
    let b = intern("Over");
    assert!(Arc::ptr_eq(&a, &b));
}
