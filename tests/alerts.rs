//! The odds analysis through the real server: alerts on the `alerts` topic and in
//! `GET /api/alerts`, recovery with `since`, surebets, fair prices, and the simulated market
//! raising every kind by itself.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestServer, WAIT};
use serde_json::{json, Value};

/// A 1X2 snapshot of `event_id`.
fn one_x_two(event_id: u64, odds: [f64; 3]) -> Value {
    json!({
        "event_id": event_id,
        "markets": [{
            "market_id": "1x2", "name": "1X2", "line": null,
            "outcomes": [
                {"name": "1", "odds": odds[0]},
                {"name": "X", "odds": odds[1]},
                {"name": "2", "odds": odds[2]}
            ]
        }]
    })
}

/// Posts `source`'s 1X2 prices of `event_id` and waits until the analysis has taken them in
/// (it reads only the latest waiting snapshot of an event and source: one posted right after
/// would take this one's place).
async fn post_taken(server: &TestServer, source: &str, event_id: u64, odds: [f64; 3]) {
    let body = json!({"source": source, "snapshots": [one_x_two(event_id, odds)]});
    assert_eq!(server.ingest(&body).await.0, 200);
    let path = format!("/api/events/{event_id}/fair");
    common::eventually("the analysis took the snapshot in", || async {
        let (status, fair) = server.get(&path).await;
        let price = &fair["markets"][0]["outcomes"][0]["prices"][source]["odds"];
        status == 200 && price.as_f64() == Some(odds[0])
    })
    .await;
}

/// The next `odds_alert` on `client`, skipping other messages.
async fn next_alert(client: &mut common::WsClient) -> Value {
    client.recv_type("odds_alert").await
}

#[tokio::test]
async fn a_price_change_is_pushed_on_alerts_kept_for_the_reads_and_recovered_with_since() {
    let server = TestServer::start().await;
    let (mut client, ack) = server.ws_acked("?topics=alerts").await;
    assert_eq!(ack["topics"], json!(["alerts"]));
    let (epoch, start) = common::position(&ack, "alerts");

    post_taken(&server, "sportybet", 101, [2.10, 3.40, 3.20]).await;
    post_taken(&server, "sportybet", 101, [2.35, 3.40, 3.20]).await;
    let alert = next_alert(&mut client).await;
    assert_eq!(alert["offset"], start + 1);
    let data = &alert["data"];
    for (field, value) in [
        ("kind", json!("price_change")),
        ("severity", json!("elevated")),
        ("event_id", json!(101)),
        ("source", json!("sportybet")),
        ("market_id", json!("1x2")),
        ("line", Value::Null),
        ("outcome", json!("1")),
        ("from", json!(2.1)),
        ("to", json!(2.35)),
        ("change_pct", json!(11.9)),
    ] {
        assert_eq!(data[field], value, "{field}: {alert}");
    }
    assert!(data["at"].as_str().unwrap().ends_with('Z'));

    // The same alert in the reads, newest first, and filtered.
    let (status, read) = server.get("/api/alerts").await;
    assert_eq!(status, 200);
    assert_eq!(read["count"], 1);
    assert_eq!(read["alerts"][0], *data);
    let (_, none) = server.get("/api/alerts?kind=surebet,availability").await;
    assert_eq!(none["count"], 0);
    let (_, one) = server
        .get("/api/alerts?severity=elevated&minutes=5&limit=1")
        .await;
    assert_eq!(one["count"], 1);
    for bad in [
        "minutes=0",
        "minutes=1441",
        "limit=1001",
        "kind=nope",
        "severity=high",
    ] {
        let (status, body) = server.get(&format!("/api/alerts?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_query", "{bad}");
    }

    // A client that saw nothing of the epoch recovers the alert.
    let since = format!("?topics=alerts&since=alerts:{epoch}:{start}");
    let (mut back, ack) = server.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["alerts"]));
    assert_eq!(next_alert(&mut back).await["data"], *data);

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"oddsbus_alerts_total{kind="price_change"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"oddsbus_alerts_suppressed_total{kind="surebet"} 0"#));
}

#[tokio::test]
async fn alerts_is_not_a_default_topic_and_a_token_must_allow_it() {
    let server = TestServer::start().await;
    let (_, ack) = server.ws_acked("").await;
    assert_eq!(ack["topics"], json!(["odds_updates", "scrape_progress"]));

    let secret = "0123456789abcdef0123456789abcdef";
    let server = TestServer::with(|c| c.auth_secret = Some(secret.into())).await;
    let token = common::token(json!({"topics": ["odds_updates"]}), secret);
    let url = format!("ws://{}/api/ws?topics=alerts&token={token}", server.addr);
    let refused = tokio_tungstenite::connect_async(url).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("a token without `alerts` was let in");
    };
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_disagreement_a_pulled_market_and_a_surebet_come_and_go() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=alerts").await;

    // The home bookmaker shortens the home win, a competitor lengthens it.
    post_taken(&server, "betpawa", 7, [2.00, 3.40, 3.20]).await;
    post_taken(&server, "sportybet", 7, [2.00, 3.40, 3.20]).await;
    post_taken(&server, "betpawa", 7, [1.95, 3.40, 3.20]).await;
    post_taken(&server, "sportybet", 7, [2.06, 3.40, 3.20]).await;
    let alert = next_alert(&mut client).await;
    assert_eq!(alert["data"]["kind"], "direction_disagreement", "{alert}");
    let moves = &alert["data"]["moves"];
    assert_eq!(
        moves[0],
        json!({"source": "betpawa", "from": 2.0, "to": 1.95, "change_pct": -2.5})
    );
    assert_eq!(
        moves[1],
        json!({"source": "sportybet", "from": 2.0, "to": 2.06, "change_pct": 3.0})
    );

    // bet9ja prices the draw long enough for a sure bet: 1/2.06 + 1/6 + 1/3.2 = 0.9646.
    post_taken(&server, "bet9ja", 7, [1.90, 6.00, 3.00]).await;
    let alert = next_alert(&mut client).await;
    let data = &alert["data"];
    assert_eq!(
        (&data["kind"], &data["state"]),
        (&json!("surebet"), &json!("open")),
        "{alert}"
    );
    assert_eq!(data["profit_pct"], 3.67);
    let legs: Vec<(&str, &str)> = data["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["outcome"].as_str().unwrap(),
                l["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        legs,
        [("1", "sportybet"), ("X", "bet9ja"), ("2", "betpawa")]
    );
    assert_eq!(data["severity"], "critical", "the home bookmaker is a leg");
    let (_, surebets) = server.get("/api/surebets").await;
    assert_eq!(surebets["count"], 1);
    assert_eq!(surebets["surebets"][0]["event_id"], 7);
    assert_eq!(surebets["surebets"][0]["profit_pct"], 3.67);

    let (_, fair) = server.get("/api/events/7/fair").await;
    let market = &fair["markets"][0];
    assert_eq!(market["market_id"], "1x2");
    assert_eq!(
        market["outcomes"][1]["best"],
        json!({"source": "bet9ja", "odds": 6.0})
    );
    assert_eq!(market["outcomes"][0]["prices"]["betpawa"]["opening"], 2.0);
    assert!(market["margins"]["betpawa"].as_f64().unwrap() > 0.0);
    assert!(market["outcomes"][0]["betpawa_edge"].is_number());

    // The bulk read says the same of each event it knows, and leaves out the others.
    let (status, many) = server.get("/api/events/fair?ids=999,7").await;
    assert_eq!(status, 200);
    assert_eq!(many["events"], json!([fair]));
    let (status, body) = server.get("/api/events/fair?ids=7,x").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_event_id"))
    );
    let ids: Vec<String> = (0..501).map(|id| id.to_string()).collect();
    let (status, body) = server
        .get(&format!("/api/events/fair?ids={}", ids.join(",")))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("too_many_ids"))
    );

    // bet9ja pulls its 1X2: pulled, and the sure bet closes with it.
    let body = json!({"source": "bet9ja", "snapshots": [{"event_id": 7, "markets": []}]});
    assert_eq!(server.ingest(&body).await.0, 200);
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        let data = next_alert(&mut client).await["data"].clone();
        seen.insert((data["kind"].to_string(), data["state"].to_string()));
    }
    let expected: BTreeSet<(String, String)> = [
        (r#""availability""#.into(), r#""pulled""#.into()),
        (r#""surebet""#.into(), r#""closed""#.into()),
    ]
    .into();
    assert_eq!(seen, expected);
    let (_, surebets) = server.get("/api/surebets").await;
    assert_eq!(surebets["count"], 0);

    // Back: returned, and the sure bet opens again after the cooldown only.
    post_taken(&server, "bet9ja", 7, [1.90, 6.00, 3.00]).await;
    let alert = next_alert(&mut client).await;
    assert_eq!(alert["data"]["state"], "returned", "{alert}");
    client.ping_pong().await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"oddsbus_alerts_suppressed_total{kind="surebet"} 1"#),
        "{metrics}"
    );

    let (status, body) = server.get("/api/events/999/fair").await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = server.get("/api/events/x/fair").await;
    assert_eq!(status, 400);
}

/// An event the cache drops closes its open sure bet on the feed: no feed keeps showing a
/// sure bet on an event nobody holds any more.
#[tokio::test]
async fn a_dropped_event_closes_its_open_surebet() {
    let server = TestServer::with(|c| c.max_events = 1).await;
    let (mut client, _) = server.ws_acked("?topics=alerts").await;
    post_taken(&server, "sportybet", 7, [2.06, 3.40, 3.20]).await;
    post_taken(&server, "bet9ja", 7, [1.90, 6.00, 3.00]).await;
    let open = next_alert(&mut client).await["data"].clone();
    assert_eq!(
        (&open["kind"], &open["state"]),
        (&json!("surebet"), &json!("open"))
    );

    // A second event takes the cache's only place.
    server.ingest_ok("betpawa", &[8], 2.0).await;
    let closed = next_alert(&mut client).await["data"].clone();
    assert_eq!(closed["state"], "closed", "{closed}");
    for field in [
        "kind",
        "event_id",
        "market_id",
        "legs",
        "profit_pct",
        "severity",
    ] {
        assert_eq!(closed[field], open[field], "{field}");
    }
    assert!(closed.get("source").is_none(), "{closed}");
    let (_, surebets) = server.get("/api/surebets").await;
    assert_eq!(surebets["count"], 0);
}

#[tokio::test]
async fn the_simulated_market_raises_every_kind_by_itself() {
    let server = TestServer::with(|c| {
        c.scrape_interval = Duration::from_millis(50);
        c.sim_events = 40;
        c.sim_change_fraction = 0.5;
        c.sim_latency_ms = 0;
    })
    .await;
    let kinds = [
        "price_change",
        "direction_disagreement",
        "availability",
        "surebet",
    ];
    let deadline = tokio::time::Instant::now() + 6 * WAIT;
    loop {
        let (_, read) = server.get("/api/alerts?limit=1000").await;
        let seen: BTreeSet<&str> = read["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["kind"].as_str())
            .collect();
        if kinds.iter().all(|k| seen.contains(k)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
