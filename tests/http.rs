//! Ingest, cache-first reads, stats and health over real HTTP (docs/PROTOCOL.md, "Ingest",
//! "Cache-first reads", "Introspection").

mod common;

use common::{snapshot, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn ingest_replies_with_counts_and_notifies_the_changed_ids() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;

    let reply = server.ingest_ok("betpawa", &[101, 102], 2.1).await;
    assert_eq!(reply, json!({"accepted": 2, "changed": 2, "stale": 0}));
    let update = client.recv().await;
    assert_eq!(update["type"], "odds_update");
    assert_eq!(
        update["data"],
        json!({"event_ids": [101, 102], "source": "betpawa", "count": 2})
    );
}

#[tokio::test]
async fn an_unchanged_snapshot_refreshes_captured_at_silently() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let mut first = snapshot(7, 2.0);
    first["captured_at"] = json!("2026-11-21T10:00:00Z");
    let (status, _) = server
        .ingest(&json!({"source": "sportybet", "snapshots": [first]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(client.recv().await["data"]["event_ids"], json!([7]));
    let (_, before) = server.get("/api/events/7/odds").await;

    let mut again = snapshot(7, 2.0);
    again["captured_at"] = json!("2026-11-21T12:30:00.250+01:00");
    let (status, reply) = server
        .ingest(&json!({"source": "sportybet", "snapshots": [again, snapshot(8, 2.0)]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply, json!({"accepted": 2, "changed": 1, "stale": 0}));
    // Only the new event is notified.
    assert_eq!(client.recv().await["data"]["event_ids"], json!([8]));

    let (_, after) = server.get("/api/events/7/odds").await;
    let (old, new) = (
        &before["competitors"]["sportybet"],
        &after["competitors"]["sportybet"],
    );
    assert_eq!(new["captured_at"], "2026-11-21T11:30:00.250Z");
    assert_eq!(
        new["snapshot_id"], old["snapshot_id"],
        "same data, same snapshot"
    );
    assert_eq!(new["markets"], old["markets"]);
}

#[tokio::test]
async fn reads_serve_what_the_cache_holds() {
    let server = TestServer::start().await;
    let mut home = snapshot(101, 2.1);
    home["bookmaker_id"] = json!(9001);
    server
        .ingest(&json!({"source": "betpawa", "snapshots": [home]}))
        .await;
    server.ingest_ok("sportybet", &[101, 102], 2.2).await;

    let (status, events) = server.get("/api/events").await;
    assert_eq!(status, 200);
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_id"], 101);
    assert_eq!(events[0]["sources"], json!(["betpawa", "sportybet"]));
    assert_eq!(events[1]["event_id"], 102);
    assert_eq!(events[1]["sources"], json!(["sportybet"]));
    assert!(events[0]["updated_at"].as_str().unwrap().ends_with('Z'));

    let (status, odds) = server.get("/api/events/101/odds").await;
    assert_eq!(status, 200);
    assert_eq!(odds["event_id"], 101);
    let betpawa = &odds["betpawa"];
    assert_eq!(betpawa["event_id"], 101);
    assert_eq!(betpawa["bookmaker_id"], 9001);
    assert_eq!(betpawa["markets"], snapshot(101, 2.1)["markets"]);
    assert!(
        betpawa["captured_at"].as_str().unwrap().ends_with('Z'),
        "filled in: {betpawa}"
    );
    let sporty = &odds["competitors"]["sportybet"];
    assert!(sporty["snapshot_id"].as_u64().unwrap() > betpawa["snapshot_id"].as_u64().unwrap());
    assert_eq!(odds["competitors"].as_object().unwrap().len(), 1);

    let (_, only_competitor) = server.get("/api/events/102/odds").await;
    assert_eq!(only_competitor["betpawa"], Value::Null);

    let (status, body) = server.get("/api/events/999/odds").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = server.get("/api/events/abc/odds").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_event_id");
}

#[tokio::test]
async fn several_events_can_be_read_at_once() {
    let server = TestServer::start().await;
    server.ingest_ok("betpawa", &[1, 2, 3], 2.0).await;
    server.ingest_ok("bet9ja", &[2], 2.2).await;

    let (status, body) = server.get("/api/events/odds?ids=3,2,99,2").await;
    assert_eq!(status, 200);
    let events = body["events"].as_array().unwrap();
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["event_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 3], "sorted, distinct, unknown ids left out");
    assert_eq!(events[0], server.get("/api/events/2/odds").await.1);

    assert_eq!(
        server.get("/api/events/odds").await.1,
        json!({"events": []})
    );
    let (status, body) = server.get("/api/events/odds?ids=1,x").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_event_id"))
    );
    let many: Vec<String> = (0..501).map(|i| i.to_string()).collect();
    let (status, body) = server
        .get(&format!("/api/events/odds?ids={}", many.join(",")))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("too_many_ids"))
    );
    // The limit counts distinct ids: repeating one is not reading more.
    let repeated = vec!["1"; 600].join(",");
    let (status, body) = server
        .get(&format!("/api/events/odds?ids={repeated}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
}

/// Every malformed body gets a 4xx JSON error and changes nothing: not the cache, not the
/// subscribers, and the next good request still works.
#[tokio::test]
async fn bad_ingest_bodies_are_refused_whole_and_change_nothing() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    assert_eq!(client.recv().await["data"]["event_ids"], json!([1]));
    let (_, events_before) = server.get("/api/events").await;
    let (_, odds_before) = server.get("/api/events/1/odds").await;

    let mut bad_odds = snapshot(3, 2.0);
    bad_odds["markets"][0]["outcomes"][1]["odds"] = json!(0.5);
    let mut no_name = snapshot(3, 2.0);
    no_name["markets"][0]["market_id"] = json!("");
    // The bounds of one snapshot: markets, outcomes per market, characters per name.
    let mut markets = snapshot(3, 2.0);
    markets["markets"] = json!(vec![markets["markets"][0].clone(); 1_001]);
    let mut outcomes = snapshot(3, 2.0);
    outcomes["markets"][0]["outcomes"] = json!(vec![json!({"name": "1", "odds": 2.0}); 101]);
    let mut long_id = snapshot(3, 2.0);
    long_id["markets"][0]["market_id"] = json!("m".repeat(201));
    let mut control = snapshot(3, 2.0);
    control["markets"][0]["outcomes"][0]["name"] = json!("1\u{7}");
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid_json"),
        ("{\"source\":".into(), "invalid_json"),
        ("[]".into(), "invalid_body"),
        (json!({"snapshots": []}).to_string(), "invalid_body"),
        (json!({"source": "betpawa"}).to_string(), "invalid_body"),
        (json!({"source": "betpawa", "snapshots": [{"event_id": -1, "markets": []}]}).to_string(), "invalid_body"),
        (json!({"source": "betpawa", "snapshots": [{"event_id": 1}]}).to_string(), "invalid_body"),
        (json!({"source": "betpawa", "snapshots": [{"event_id": 1, "markets": [], "captured_at": 42}]}).to_string(), "invalid_body"),
        // A time the server could not write back as RFC 3339 in UTC, or no time at all.
        (json!({"source": "betpawa", "snapshots": [{"event_id": 1, "markets": [], "captured_at": "yesterday"}]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [{"event_id": 1, "markets": [], "captured_at": "9999-12-31T23:59:59-00:01"}]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [{"event_id": 1, "markets": [], "captured_at": "0000-01-01T00:00:00+00:01"}]}).to_string(), "invalid_snapshot"),
        // An id JavaScript clients would round.
        (json!({"source": "betpawa", "snapshots": [snapshot(1 << 53, 2.0)]}).to_string(), "invalid_snapshot"),
        (json!({"source": "pinnacle", "snapshots": [snapshot(1, 9.0)]}).to_string(), "unknown_source"),
        // One bad snapshot after good ones: the good ones are not applied either.
        (json!({"source": "betpawa", "snapshots": [snapshot(1, 9.0), snapshot(2, 9.0), bad_odds]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [snapshot(1, 9.0), no_name]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [markets]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [outcomes]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [long_id]}).to_string(), "invalid_snapshot"),
        (json!({"source": "betpawa", "snapshots": [control]}).to_string(), "invalid_snapshot"),
    ];
    for (body, code) in cases {
        let (status, reply) = server.post_raw(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert_eq!(reply["error"]["code"], code, "{body} -> {reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
    }

    assert_eq!(server.get("/api/events").await.1, events_before);
    assert_eq!(server.get("/api/events/1/odds").await.1, odds_before);
    assert_eq!(client.until_pong().await, Vec::<Value>::new());
    server.ingest_ok("betpawa", &[2], 2.0).await;
    assert_eq!(client.recv().await["data"]["event_ids"], json!([2]));

    // The edges themselves are accepted, and served back as written in UTC.
    let largest = (1u64 << 53) - 1;
    let mut edge = snapshot(largest, 2.0);
    edge["captured_at"] = json!("0000-01-01T00:00:00+00:00");
    edge["markets"] = json!(vec![edge["markets"][0].clone(); 1_000]);
    edge["markets"][0]["market_id"] = json!("m".repeat(200));
    edge["markets"][0]["outcomes"] = json!(vec![json!({"name": "1", "odds": 2.0}); 100]);
    let (status, reply) = server
        .ingest(&json!({"source": "betpawa", "snapshots": [edge]}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let (_, odds) = server.get(&format!("/api/events/{largest}/odds")).await;
    assert_eq!(odds["betpawa"]["captured_at"], "0000-01-01T00:00:00.000Z");
    assert_eq!(odds["event_id"], largest);
}

/// A scraper whose clock runs fast does not freeze its odds: a `captured_at` more than
/// `--max-clock-skew` ahead is taken as now (and counted), so the next correct snapshot is
/// applied, not stale.
#[tokio::test]
async fn a_captured_at_far_ahead_is_taken_as_now() {
    let server = TestServer::start().await;
    let mut ahead = snapshot(5, 2.0);
    ahead["captured_at"] = json!("9999-12-31T23:59:59.999Z");
    let (status, reply) = server
        .ingest(&json!({"source": "betpawa", "snapshots": [ahead]}))
        .await;
    assert_eq!(
        (status, reply["changed"].clone()),
        (200, json!(1)),
        "{reply}"
    );
    let (_, odds) = server.get("/api/events/5/odds").await;
    let stored = oddsbus::Timestamp::parse(odds["betpawa"]["captured_at"].as_str().unwrap());
    assert!(stored.unwrap() <= oddsbus::Timestamp::now(), "{odds}");

    let reply = server.ingest_ok("betpawa", &[5], 2.5).await;
    assert_eq!(reply, json!({"accepted": 1, "changed": 1, "stale": 0}));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("oddsbus_captured_at_clamped_total 1\n"),
        "{metrics}"
    );
}

/// A snapshot older than the stored one for its event and source is not applied and not
/// notified; the reply counts it.
#[tokio::test]
async fn older_snapshots_are_stale_and_change_nothing() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let dated = |id: u64, price: f64, time: &str| {
        let mut snapshot = snapshot(id, price);
        snapshot["captured_at"] = json!(time);
        snapshot
    };
    let body = |snapshots: Vec<Value>| json!({"source": "sportybet", "snapshots": snapshots});
    let (_, reply) = server
        .ingest(&body(vec![dated(5, 2.0, "2026-11-21T10:00:00Z")]))
        .await;
    assert_eq!(reply, json!({"accepted": 1, "changed": 1, "stale": 0}));
    assert_eq!(client.recv().await["data"]["event_ids"], json!([5]));
    let (_, before) = server.get("/api/events/5/odds").await;

    let old = dated(5, 9.0, "2020-01-01T00:00:00Z");
    let (status, reply) = server
        .ingest(&body(vec![old, dated(6, 2.0, "2026-11-21T10:00:00Z")]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply, json!({"accepted": 1, "changed": 1, "stale": 1}));
    assert_eq!(
        client.recv().await["data"]["event_ids"],
        json!([6]),
        "5 not notified"
    );
    assert_eq!(server.get("/api/events/5/odds").await.1, before);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    let server = TestServer::with(|c| c.max_body_bytes = 2_000).await;
    let snapshots: Vec<Value> = (0..50).map(|id| snapshot(id, 2.0)).collect();
    let body = json!({"source": "betpawa", "snapshots": snapshots}).to_string();
    assert!(body.len() > 2_000);

    let (status, reply) = server.post_raw(body.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(reply["error"]["code"], "payload_too_large");

    // Chunked, so the server only learns the size while reading.
    let chunks: Vec<Result<String, std::io::Error>> = body
        .as_bytes()
        .chunks(500)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, reply) = server.post_raw(stream).await;
    assert_eq!(status, 413);
    assert_eq!(reply["error"]["code"], "payload_too_large");

    assert_eq!(server.get("/api/events").await.1, json!({"events": []}));
}

#[tokio::test]
async fn too_many_snapshots_in_one_request_get_400() {
    let server = TestServer::with(|c| c.max_snapshots_per_request = 3).await;
    let snapshots: Vec<Value> = (0..4).map(|id| snapshot(id, 2.0)).collect();
    let (status, reply) = server
        .ingest(&json!({"source": "betpawa", "snapshots": snapshots}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["code"], "too_many_snapshots");
}

#[tokio::test]
async fn configured_competitors_are_the_accepted_sources() {
    let server = TestServer::with(|c| c.competitors = vec!["pinnacle".into()]).await;
    server.ingest_ok("pinnacle", &[1], 2.0).await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    let (status, reply) = server
        .ingest(&json!({"source": "sportybet", "snapshots": [snapshot(1, 2.0)]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["code"], "unknown_source");
}

#[tokio::test]
async fn an_empty_snapshot_list_is_accepted_and_notifies_nothing() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let (status, reply) = server
        .ingest(&json!({"source": "betpawa", "snapshots": []}))
        .await;
    assert_eq!(
        (status, reply),
        (200, json!({"accepted": 0, "changed": 0, "stale": 0}))
    );
    assert_eq!(client.until_pong().await, Vec::<Value>::new());
}

#[tokio::test]
async fn health_stats_and_unknown_routes_answer_in_json() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(
        server.stats().await,
        json!({"active_connections": 0, "topics": {"alerts": 0, "odds_changes": 0, "odds_updates": 0, "scrape_progress": 0}})
    );
    let (status, body) = server.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    let response = reqwest::get(server.url("/api/odds")).await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

/// Every JSON reply, success or error, is one line ending in a newline, so a shell prompt
/// after `curl` starts on a line of its own.
#[tokio::test]
async fn json_replies_end_with_a_newline() {
    let server = TestServer::start().await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    for path in [
        "/healthz",
        "/api/events",
        "/api/events/1/odds",
        "/api/events/9/odds",
        "/nope",
    ] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let text = response.text().await.unwrap();
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{path}: {text:?}"
        );
    }
}

/// The cache is bounded: past `--max-events` the event updated longest ago goes, an event
/// without an update for `--event-ttl` goes, and both then read 404; `/metrics` counts them.
#[tokio::test]
async fn the_cache_evicts_by_capacity_and_by_age() {
    let server = TestServer::with(|c| c.max_events = 2).await;
    server.ingest_ok("betpawa", &[1, 2], 2.0).await;
    server.ingest_ok("sportybet", &[1], 2.0).await; // 1 is now the most recently updated
    server.ingest_ok("betpawa", &[3], 2.0).await;
    assert_eq!(server.get("/api/events/2/odds").await.0, 404);
    assert_eq!(server.get("/api/events/1/odds").await.0, 200);
    let ids: Vec<u64> = server.get("/api/events").await.1["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3]);
    let metrics = server.metrics().await;
    assert!(metrics.contains("oddsbus_cache_events 2\n"), "{metrics}");
    let capacity = r#"oddsbus_cache_evictions_total{reason="capacity"} 1"#;
    assert!(metrics.contains(capacity), "{metrics}");

    // Long enough that the first read comes before it, however busy the machine is.
    let server = TestServer::with(|c| c.event_ttl = std::time::Duration::from_secs(1)).await;
    server.ingest_ok("betpawa", &[7], 2.0).await;
    assert_eq!(server.get("/api/events/7/odds").await.0, 200);
    common::eventually("dropped with no write", || async {
        server.get("/api/events/7/odds").await.0 == 404
    })
    .await;
    let ttl = r#"oddsbus_cache_evictions_total{reason="ttl"} 1"#;
    assert!(server.metrics().await.contains(ttl));
}

/// `GET /api/events` pages with `?limit=&after=`; without them the reply is as it was.
#[tokio::test]
async fn the_event_list_pages_on_request() {
    let server = TestServer::start().await;
    server.ingest_ok("betpawa", &[5, 3, 1, 4, 2], 2.0).await;
    let ids = |body: &Value| -> Vec<u64> {
        let events = body["events"].as_array().unwrap();
        events
            .iter()
            .map(|e| e["event_id"].as_u64().unwrap())
            .collect()
    };
    let (_, all) = server.get("/api/events").await;
    assert_eq!(ids(&all), [1, 2, 3, 4, 5]);
    assert!(all.get("next_after").is_none(), "{all}");

    let (_, first) = server.get("/api/events?limit=2").await;
    assert_eq!((ids(&first), &first["next_after"]), (vec![1, 2], &json!(2)));
    let (_, second) = server.get("/api/events?limit=2&after=2").await;
    assert_eq!(
        (ids(&second), &second["next_after"]),
        (vec![3, 4], &json!(4))
    );
    let (_, last) = server.get("/api/events?limit=2&after=4").await;
    assert_eq!(ids(&last), [5]);
    assert!(last.get("next_after").is_none(), "{last}");

    for bad in ["limit=0", "limit=many", "after=-1", "limit=10001"] {
        let (status, body) = server.get(&format!("/api/events?{bad}")).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_query")),
            "{bad}"
        );
    }
}

/// The board loads only its own scripts, styles and images, talks only to its own origin,
/// and no other site may frame it or learn its address (which may carry `#token=`).
#[tokio::test]
async fn the_board_is_served_with_security_headers() {
    let server = TestServer::start().await;
    for (path, kind) in [("/", "text/html"), ("/app.js", "text/javascript")] {
        let response = server.get_ok(path, kind).await;
        let headers = response.headers();
        let policy = headers["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(rule), "{path}: {policy}");
        }
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
}

/// A retry with the same `Idempotency-Key` (its reply lost, say) is answered what the first
/// ingest stored, marked `Idempotent-Replayed`, and applies nothing; a key is per source.
#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_applies_nothing() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let post = |key: &'static str, source: &'static str, price: f64| {
        let body = json!({"source": source, "snapshots": [snapshot(1, price)]});
        server
            .http
            .post(server.url("/api/odds"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = post("run-42", "betpawa", 2.0).await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    assert_eq!(first, json!({"accepted": 1, "changed": 1, "stale": 0}));
    assert_eq!(client.recv().await["data"]["event_ids"], json!([1]));

    let again = post("run-42", "betpawa", 9.0).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let odds = server.get("/api/events/1/odds").await.1;
    assert_eq!(odds["betpawa"]["markets"][0]["outcomes"][0]["odds"], 2.0);
    assert_eq!(
        client.until_pong().await,
        Vec::<Value>::new(),
        "nothing announced"
    );

    let other = post("run-42", "sportybet", 2.0).await.unwrap();
    assert!(
        other.headers().get("idempotent-replayed").is_none(),
        "per source"
    );
    let bad = server
        .http
        .post(server.url("/api/odds"))
        .header("idempotency-key", "has space")
        .body(json!({"source": "betpawa", "snapshots": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_header"
    );
}
