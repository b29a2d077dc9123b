//! How events leave the cache (capacity, TTL, kickoff) and how its lists follow them.

use super::*;

#[test]
fn a_full_cache_evicts_the_event_updated_longest_ago() {
    let limits = CacheLimits {
        max_events: 3,
        ..CacheLimits::default()
    };
    let cache = OddsCache::with_limits(limits);
    for id in [1, 2, 3] {
        cache.put_competitor_snapshot(id, "sportybet", snapshot(2.0));
    }
    // Event 1 is updated again (a refresh counts), so 2 is now the oldest.
    cache.put_competitor_snapshot(1, "sportybet", snapshot(2.0));
    cache.event_odds(2).unwrap(); // reading does not count as an update
    cache.put_competitor_snapshot(4, "sportybet", snapshot(2.0));
    assert!(cache.event_odds(2).is_none());
    let ids: Vec<u64> = cache.events().iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [1, 3, 4]);
    assert_eq!(
        cache.evictions(),
        Evictions {
            capacity: 1,
            ttl: 0,
            kickoff: 0
        }
    );
}

#[test]
fn events_without_an_update_for_the_ttl_are_dropped() {
    let ttl = Duration::from_secs(60);
    let cache = OddsCache::with_limits(CacheLimits {
        ttl,
        ..CacheLimits::default()
    });
    cache.put_competitor_snapshot(1, "sportybet", snapshot(2.0));
    let start = Instant::now();
    cache.put_competitor_snapshot(2, "sportybet", snapshot(2.0));
    assert_eq!(cache.expire(start + ttl / 2), 0);
    assert_eq!(cache.expire(start + ttl + Duration::from_secs(1)), 2);
    assert!(cache.is_empty());
    assert_eq!(
        cache.evictions(),
        Evictions {
            capacity: 0,
            ttl: 2,
            kickoff: 0
        }
    );
}

#[test]
fn details_are_kept_per_event_the_latest_win_and_a_match_long_over_leaves() {
    use super::{Details, EventDetails, MATCH_OVER_AFTER};
    let details = |name: &str, kickoff: Timestamp| {
        Some(Arc::new(Details::new(&EventDetails {
            name: Some(name.into()),
            competition: Some("England: Premier League".into()),
            kickoff: Some(kickoff),
        })))
    };
    let cache = OddsCache::new();
    let soon = Timestamp::now();
    let over = soon.minus(MATCH_OVER_AFTER + Duration::from_secs(60));
    let with = |name: &str, kickoff| Snapshot {
        event: details(name, kickoff),
        ..snapshot(2.0)
    };
    cache.put_betpawa_snapshot(1, 7, with("Arsenal v Chelsea", soon));
    cache.put_competitor_snapshot(1, "sportybet", snapshot(2.1)); // no details: kept
    cache.put_competitor_snapshot(2, "sportybet", with("Inter v Milan", over));
    let odds = cache.event_odds(1).unwrap();
    let json =
        |d: &Option<Arc<Details>>| String::from_utf8(d.as_ref().unwrap().json.to_vec()).unwrap();
    assert!(json(&odds.details).contains("Arsenal v Chelsea"));
    cache.put_competitor_snapshot(1, "bet9ja", with("Arsenal FC v Chelsea FC", soon));
    assert!(
        json(&cache.event_odds(1).unwrap().details).contains("Arsenal FC"),
        "the latest win"
    );

    assert_eq!(cache.expire(Instant::now()), 1, "the match long over");
    assert!(cache.event_odds(2).is_none());
    assert_eq!(cache.evictions().kickoff, 1);
    let mut out = Vec::new();
    cache.events()[0].write_json(&mut out);
    let row: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(row["event"]["competition"], "England: Premier League");
}

/// A snapshot carrying `name` and `kickoff` as its details.
fn with_details(price: f64, name: &str, kickoff: Timestamp) -> Snapshot {
    use super::{Details, EventDetails};
    Snapshot {
        event: Some(Arc::new(Details::new(&EventDetails {
            name: Some(name.into()),
            competition: None,
            kickoff: Some(kickoff),
        }))),
        ..snapshot(price)
    }
}

#[test]
fn only_an_applied_snapshot_changes_details_and_only_the_home_kickoff_ends_a_match() {
    let cache = OddsCache::new();
    let soon = Timestamp::now();
    let over = soon.minus(MATCH_OVER_AFTER + Duration::from_secs(60));
    let home = at(
        with_details(2.0, "Arsenal v Chelsea", soon),
        "2026-11-21T10:00:00Z",
    );
    cache.put_betpawa_snapshot(1, 7, home);
    // A stale snapshot's details are not applied.
    let stale = at(
        with_details(2.0, "Stale v Name", soon),
        "2020-01-01T00:00:00Z",
    );
    assert_eq!(cache.put_betpawa_snapshot(1, 7, stale).stale, 1);
    let details = cache.event_odds(1).unwrap().details.unwrap();
    assert!(String::from_utf8_lossy(&details.json).contains("Arsenal"));
    // A competitor's kickoff cannot end the home bookmaker's match.
    cache.put_competitor_snapshot(1, "sportybet", with_details(2.1, "Arsenal v Chelsea", over));
    assert_eq!(cache.expire(Instant::now()), 0);
    assert!(cache.event_odds(1).is_some());
    // Without the home bookmaker, the first source to give a kickoff is trusted.
    cache.put_competitor_snapshot(2, "sportybet", with_details(2.0, "Inter v Milan", soon));
    cache.put_competitor_snapshot(2, "bet9ja", with_details(2.0, "Inter v Milan", over));
    assert_eq!(cache.expire(Instant::now()), 0);
    cache.put_competitor_snapshot(2, "sportybet", with_details(2.0, "Inter v Milan", over));
    assert_eq!(cache.expire(Instant::now()), 1);
}

#[test]
fn a_match_that_left_for_its_kickoff_is_not_brought_back_unless_rescheduled() {
    let cache = OddsCache::new();
    let over = Timestamp::now().minus(MATCH_OVER_AFTER + Duration::from_secs(60));
    cache.put_betpawa_snapshot(3, 7, with_details(2.0, "Old v Match", over));
    assert_eq!(cache.expire(Instant::now()), 1);
    let again = cache.put_competitor_snapshot(3, "sportybet", snapshot(2.5));
    assert_eq!((again.accepted, again.stale), (0, 1), "still listed: stale");
    let listed = cache.put_betpawa_snapshot(3, 7, with_details(2.0, "Old v Match", over));
    assert_eq!(listed.stale, 1);
    assert!(cache.event_odds(3).is_none());
    let moved = with_details(2.0, "Old v Match", Timestamp::now());
    assert_eq!(cache.put_betpawa_snapshot(3, 7, moved).changed, vec![3]);
}

#[test]
fn pages_and_kickoffs_follow_every_event_in_and_out() {
    let cache = OddsCache::with_limits(CacheLimits {
        max_events: 3,
        ttl: Duration::from_secs(60),
    });
    let over = Timestamp::now().minus(MATCH_OVER_AFTER + Duration::from_secs(60));
    cache.put_betpawa_snapshot(2, 7, with_details(2.0, "Gone v Early", over));
    // Rescheduled by the home bookmaker: its old kickoff no longer ends it.
    cache.put_betpawa_snapshot(1, 7, with_details(2.0, "Moved v Match", over));
    cache.put_betpawa_snapshot(1, 7, with_details(2.1, "Moved v Match", Timestamp::now()));
    cache.put_competitor_snapshot(3, "sportybet", snapshot(2.0));
    cache.put_competitor_snapshot(4, "sportybet", snapshot(2.0)); // evicts 2, the oldest
    assert_eq!(cache.expire(Instant::now()), 0, "nothing over is held");
    let page = |after, limit| {
        let (events, more) = cache.events_page(after, limit);
        (events.iter().map(|e| e.event_id).collect::<Vec<_>>(), more)
    };
    assert_eq!(page(None, 10), (vec![1, 3, 4], false));
    assert_eq!(page(Some(1), 1), (vec![3], true));
    assert_eq!(page(Some(3), 1), (vec![4], false));
    assert_eq!(cache.expire(Instant::now() + Duration::from_secs(61)), 3);
    assert_eq!(page(None, 10), (vec![], false));
    assert_eq!(
        cache.evictions(),
        Evictions {
            capacity: 1,
            ttl: 3,
            kickoff: 0
        }
    );
}

#[test]
fn a_list_longer_than_a_chunk_comes_whole_and_in_order() {
    let cache = OddsCache::new();
    let batch = (0..2_500).rev().map(|id| (id, snapshot(2.0))).collect();
    cache.put_batch("sportybet", batch);
    let (all, more) = cache.events_page(None, usize::MAX);
    let ids: Vec<u64> = all.iter().map(|e| e.event_id).collect();
    assert_eq!((ids, more), ((0..2_500).collect::<Vec<u64>>(), false));
    let (page, more) = cache.events_page(Some(999), 1_001);
    assert_eq!(page.first().map(|e| e.event_id), Some(1_000));
    assert_eq!((page.len(), more), (1_001, true));
}

#[test]
fn eviction_callbacks_are_told_every_event_dropped() {
    let cache = OddsCache::with_limits(CacheLimits {
        max_events: 2,
        ttl: Duration::from_secs(60),
    });
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = told.clone();
    cache.on_evict(move |ids| seen.lock().unwrap().extend_from_slice(ids));
    for id in [1, 2, 3] {
        cache.put_competitor_snapshot(id, "sportybet", snapshot(2.0));
    }
    assert_eq!(*told.lock().unwrap(), [1], "capacity");
    let over = Timestamp::now().minus(MATCH_OVER_AFTER + Duration::from_secs(60));
    cache.put_betpawa_snapshot(2, 7, with_details(2.0, "Old v Match", over));
    assert_eq!(cache.expire(Instant::now()), 1);
    assert_eq!(*told.lock().unwrap(), [1, 2], "kickoff");
    assert_eq!(cache.expire(Instant::now() + Duration::from_secs(61)), 1);
    assert_eq!(*told.lock().unwrap(), [1, 2, 3], "ttl");
}
