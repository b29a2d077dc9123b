//! How the odds moved: `GET /api/events/{id}/history` and `GET /api/moves`, fed by real
//! ingests.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, WAIT};
use oddsbus::Timestamp;
use serde_json::{json, Value};

fn at(event_id: u64, price: f64, captured_at: &str) -> Value {
    let mut snapshot = common::snapshot(event_id, price);
    snapshot["captured_at"] = json!(captured_at);
    snapshot
}

/// Posts one snapshot of `event_id` captured at `time`, and waits until the history has
/// recorded it: the recorder takes only the latest snapshot of an event and source that
/// waits, so one posted right after would take its place.
async fn post_recorded(server: &TestServer, source: &str, event_id: u64, price: f64, time: &str) {
    let body = json!({"source": source, "snapshots": [at(event_id, price, time)]});
    assert_eq!(server.ingest(&body).await.0, 200);
    let time = Timestamp::parse(time).unwrap();
    let path = format!("/api/events/{event_id}/history");
    until(server, &path, |h| {
        let points = h["history"].as_array().unwrap().iter();
        let mut times = points.flat_map(|s| s["points"].as_array().unwrap().iter());
        times.any(|p| Timestamp::parse(p["at"].as_str().unwrap()) == Ok(time))
    })
    .await;
}

/// Polls `path` until `check` holds on its 200 body.
async fn until(server: &TestServer, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = server.get(path).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn each_outcome_keeps_the_prices_it_moved_through() {
    let server = TestServer::start().await;
    for (price, time) in [
        (2.0, "2026-12-01T10:00:00Z"),
        (2.2, "2026-12-01T10:01:00Z"),
        (1.9, "2026-12-01T10:02:00Z"),
    ] {
        post_recorded(&server, "betpawa", 7, price, time).await;
    }
    let body = json!({"source": "sportybet", "snapshots": [at(7, 2.05, "2026-12-01T10:00:30Z")]});
    assert_eq!(server.ingest(&body).await.0, 200);

    let history = until(&server, "/api/events/7/history", |h| {
        h["history"].as_array().is_some_and(|s| s.len() == 6)
    })
    .await;
    assert_eq!(history["event_id"], 7);
    let series = |source: &str, outcome: &str| -> Vec<Value> {
        let all = history["history"].as_array().unwrap();
        let one = all
            .iter()
            .find(|s| s["source"] == source && s["outcome"] == outcome);
        one.unwrap_or_else(|| panic!("{source} {outcome}: {history}"))["points"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert_eq!(
        series("betpawa", "1"),
        [
            json!({"at": "2026-12-01T10:00:00.000Z", "odds": 2.0}),
            json!({"at": "2026-12-01T10:01:00.000Z", "odds": 2.2}),
            json!({"at": "2026-12-01T10:02:00.000Z", "odds": 1.9}),
        ]
    );
    assert_eq!(
        series("betpawa", "X").len(),
        1,
        "a price that did not move is one point"
    );
    assert_eq!(
        series("sportybet", "1"),
        [json!({"at": "2026-12-01T10:00:30.000Z", "odds": 2.05})]
    );
    assert_eq!(history["history"][0]["market_id"], "1x2");

    // A window and a source: the series with points in it, each with its opening price.
    let (status, later) = server
        .get("/api/events/7/history?from=2026-12-01T10:01:00Z&to=2026-12-01T11:01:30%2B01:00&source=betpawa")
        .await;
    assert_eq!(status, 200, "{later}");
    let later = later["history"].as_array().unwrap();
    assert_eq!(
        later.len(),
        1,
        "only betpawa's 1 moved in the window: {later:?}"
    );
    assert_eq!(
        (&later[0]["opening"], &later[0]["points"]),
        (
            &json!({"at": "2026-12-01T10:00:00.000Z", "odds": 2.0}),
            &json!([{"at": "2026-12-01T10:01:00.000Z", "odds": 2.2}])
        ),
        "`to` is 10:01:30 UTC and not in the window: {later:?}"
    );
    for bad in [
        "from=yesterday",
        "from=2026-12-01T10:00:00Z&to=2026-12-01T10:00:00Z",
        "limit=0",
    ] {
        let (status, body) = server.get(&format!("/api/events/7/history?{bad}")).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_query")),
            "{bad}"
        );
    }

    assert_eq!(server.get("/api/events/8/history").await.0, 404);
    assert_eq!(
        server.get("/api/events/x/history").await.1["error"]["code"],
        "invalid_event_id"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("oddsbus_price_history_points 8"),
        "3 + 1 + 1 + 3: {metrics}"
    );
}

#[tokio::test]
async fn the_biggest_moves_of_the_last_minutes_come_first() {
    let server = TestServer::start().await;
    let ago = |secs: u64| {
        Timestamp::now()
            .minus(Duration::from_secs(secs))
            .to_string()
    };
    // Event 1 moves 2.0 -> 3.0 (+50%), event 2 moves 2.0 -> 1.8 (-10%), event 3 moved an
    // hour ago only.
    let steps = [
        (1, 2.0, ago(1200)),
        (2, 2.0, ago(1200)),
        (3, 2.0, ago(4000)),
        (3, 2.5, ago(3900)),
        (1, 3.0, ago(60)),
        (2, 1.8, ago(30)),
    ];
    for (event_id, price, time) in steps {
        post_recorded(&server, "betpawa", event_id, price, &time).await;
    }
    let moves = until(&server, "/api/moves?minutes=10", |m| {
        m["moves"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    assert_eq!(moves["window_secs"], 600);
    let first = &moves["moves"][0];
    assert_eq!(
        (
            first["event_id"].clone(),
            first["from"].clone(),
            first["to"].clone()
        ),
        (json!(1), json!(2.0), json!(3.0))
    );
    assert!((first["change"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(moves["moves"][1]["event_id"], 2);
    // 1.8 / 2.0 - 1 is -0.09999999999999998 in floating point: written rounded.
    assert_eq!(moves["moves"][1]["change"], json!(-0.1));
    let limited = server.get("/api/moves?limit=1").await.1;
    assert_eq!(limited["moves"].as_array().unwrap().len(), 1);
    for bad in ["minutes=0", "minutes=61", "limit=x", "limit=501"] {
        let (status, reply) = server.get(&format!("/api/moves?{bad}")).await;
        assert_eq!(
            (status, reply["error"]["code"].clone()),
            (400, json!("invalid_query")),
            "{bad}"
        );
    }
}

/// The history of a snapshot is bounded by the snapshot: at most 2,048 outcomes per event and
/// source, and an outcome that left its source's latest snapshot leaves the history.
#[tokio::test]
async fn an_events_history_holds_its_sources_latest_outcomes_only() {
    let server = TestServer::start().await;
    let big = common::wide_snapshot(9, 30, 100);
    let body = json!({"source": "sportybet", "snapshots": [big]});
    assert_eq!(server.ingest(&body).await.0, 200);
    server.ingest_ok("betpawa", &[9], 2.0).await;
    let count = |h: &Value, source: &str| {
        let series = h["history"].as_array().unwrap();
        series.iter().filter(|s| s["source"] == source).count()
    };
    until(&server, "/api/events/9/history", |h| {
        count(h, "sportybet") == 2_048 && count(h, "betpawa") == 3
    })
    .await;

    // The market list shrank to the 1X2: every other outcome of that source leaves.
    server.ingest_ok("sportybet", &[9], 2.1).await;
    until(&server, "/api/events/9/history", |h| {
        count(h, "sportybet") == 3 && count(h, "betpawa") == 3
    })
    .await;
}

/// The history holds the events the cache holds, and no more bytes than its budget: the
/// event recorded longest ago leaves first.
#[tokio::test]
async fn the_history_forgets_what_the_cache_drops_and_keeps_within_its_bytes() {
    let server = TestServer::with(|c| c.max_events = 2).await;
    server.ingest_ok("betpawa", &[1, 2], 2.0).await;
    until(&server, "/api/events/1/history", |_| true).await;
    server.ingest_ok("betpawa", &[3], 2.0).await;
    until(&server, "/api/events/3/history", |_| true).await;
    let gone = server.get("/api/events/1/history").await;
    assert_eq!(
        gone.0, 404,
        "evicted from the cache, so from the history: {gone:?}"
    );

    let budget = 1 << 20;
    let server = TestServer::with(|c| c.price_history_bytes = budget).await;
    // 2,000 outcomes an event, about 600 KB of history: the budget holds one.
    for event_id in 1..=10 {
        let snapshot = common::wide_snapshot(event_id, 20, 100);
        let body = json!({"source": "betpawa", "snapshots": [snapshot]});
        assert_eq!(server.ingest(&body).await.0, 200);
    }
    until(&server, "/api/events/10/history", |_| true).await;
    assert_eq!(server.get("/api/events/1/history").await.0, 404);
    let metrics = server.metrics().await;
    let bytes: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("oddsbus_price_history_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(bytes <= budget && bytes > budget / 2, "{bytes} of {budget}");
}
