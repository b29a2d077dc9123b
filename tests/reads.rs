//! The cache-first reads as bytes on the wire: exactly the contract's encoding, and the
//! `ETag` / `If-None-Match` validators (docs/PROTOCOL.md, "Cache-first reads").

mod common;

use common::TestServer;
use reqwest::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use serde_json::{json, Value};

/// The contract's example snapshot, with every optional field given.
const INGEST: &str = r#"{"source":"betpawa","snapshots":[{"event_id":101,"bookmaker_id":9001,"captured_at":"2026-11-22T01:07:00.495+01:00","markets":[{"market_id":"1x2","name":"1X2","line":null,"outcomes":[{"name":"1","odds":2.10},{"name":"X","odds":3.20},{"name":"2","odds":3.50}]},{"market_id":"ou","name":"Over/Under \"2.5\"","line":2.5,"outcomes":[{"name":"Over","odds":1.0},{"name":"Under","odds":1.9e1}]}]}]}"#;

/// What every read serves of it: times in UTC with milliseconds, numbers as serde_json
/// writes them, fields in the contract's order, strings escaped.
const STORED: &str = r#"{"snapshot_id":1,"event_id":101,"bookmaker_id":9001,"captured_at":"2026-11-22T00:07:00.495Z","markets":[{"market_id":"1x2","name":"1X2","line":null,"outcomes":[{"name":"1","odds":2.1},{"name":"X","odds":3.2},{"name":"2","odds":3.5}]},{"market_id":"ou","name":"Over/Under \"2.5\"","line":2.5,"outcomes":[{"name":"Over","odds":1.0},{"name":"Under","odds":19.0}]}]}"#;

async fn text(server: &TestServer, path: &str) -> String {
    let response = server.get_ok(path, "application/json").await;
    response.text().await.unwrap()
}

#[tokio::test]
async fn reads_are_the_contracts_bytes() {
    let server = TestServer::start().await;
    assert_eq!(server.post_raw(INGEST).await.0, 200);
    let competitor = r#"{"source":"sportybet","snapshots":[{"event_id":101,"captured_at":"2026-11-22T00:08:00Z","markets":[]}]}"#;
    assert_eq!(server.post_raw(competitor).await.0, 200);
    let sportybet = r#"{"snapshot_id":2,"event_id":101,"bookmaker_id":null,"captured_at":"2026-11-22T00:08:00.000Z","markets":[]}"#;
    let one = format!(
        r#"{{"event_id":101,"betpawa":{STORED},"competitors":{{"sportybet":{sportybet}}}}}"#
    );
    assert_eq!(
        text(&server, "/api/events/101/odds").await,
        format!("{one}\n")
    );
    assert_eq!(
        text(&server, "/api/events/odds?ids=7,101,101").await,
        format!("{{\"events\":[{one}]}}\n")
    );
    let list = text(&server, "/api/events").await;
    let prefix = r#"{"events":[{"event_id":101,"sources":["betpawa","sportybet"],"updated_at":""#;
    assert!(
        list.starts_with(prefix) && list.ends_with("Z\"}]}\n"),
        "{list}"
    );
}

/// `(status, ETag, body)` of a GET with an optional `If-None-Match`.
async fn get(server: &TestServer, path: &str, tag: Option<&str>) -> (u16, String, String) {
    let mut request = server.http.get(server.url(path));
    if let Some(tag) = tag {
        request = request.header(IF_NONE_MATCH, tag);
    }
    let response = request.send().await.unwrap();
    let headers = response.headers();
    assert_eq!(headers[CACHE_CONTROL], "no-cache", "{path}");
    let etag = headers[ETAG].to_str().unwrap().to_owned();
    let status = response.status().as_u16();
    (status, etag, response.text().await.unwrap())
}

#[tokio::test]
async fn each_read_has_a_weak_etag_and_answers_304_while_the_odds_are_the_same() {
    let server = TestServer::start().await;
    server.ingest_ok("betpawa", &[1, 2], 2.0).await;
    for path in [
        "/api/events/1/odds",
        "/api/events/odds?ids=1,2",
        "/api/events",
        "/api/events?limit=1",
    ] {
        let (status, etag, body) = get(&server, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            etag.starts_with("W/\"") && etag.ends_with('"'),
            "{path}: {etag}"
        );
        assert!(body.ends_with('\n'));

        let (status, again, body) = get(&server, path, Some(&etag)).await;
        assert_eq!((status, &again, body.as_str()), (304, &etag, ""), "{path}");
        // Any of a list, the strong form of the same tag, and `*` match too.
        let listed = format!("\"nope\", {}", etag.trim_start_matches("W/"));
        for tags in [listed.as_str(), "*"] {
            assert_eq!(
                get(&server, path, Some(tags)).await.0,
                304,
                "{path}: {tags}"
            );
        }
        assert_eq!(get(&server, path, Some("W/\"0\"")).await.0, 200, "{path}");
    }

    // The same odds read again (a refresh) keep the tags; new odds change them.
    let (_, single, _) = get(&server, "/api/events/1/odds", None).await;
    let (_, bulk, _) = get(&server, "/api/events/odds?ids=1,2", None).await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    assert_eq!(
        get(&server, "/api/events/1/odds", Some(&single)).await.0,
        304
    );
    server.ingest_ok("betpawa", &[2], 2.5).await;
    assert_eq!(
        get(&server, "/api/events/1/odds", Some(&single)).await.0,
        304
    );
    let (status, changed, body) = get(&server, "/api/events/odds?ids=1,2", Some(&bulk)).await;
    assert_eq!(status, 200);
    assert_ne!(changed, bulk);
    assert!(body.contains("2.5"), "{body}");
    // A source more is a change too.
    server.ingest_ok("bet9ja", &[1], 2.0).await;
    assert_eq!(
        get(&server, "/api/events/1/odds", Some(&single)).await.0,
        200
    );
}

#[tokio::test]
async fn an_unknown_event_is_404_whatever_the_validator() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/api/events/9/odds"))
        .header(IF_NONE_MATCH, "*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// A snapshot may say what the match is; reads serve the latest details given for the event,
/// and bad details are refused whole as `invalid_snapshot`.
#[tokio::test]
async fn event_details_are_served_by_every_read_and_checked_on_ingest() {
    let server = TestServer::start().await;
    let with = |details: Value| {
        let mut snapshot = common::snapshot(7, 2.0);
        snapshot["event"] = details;
        json!({"source": "betpawa", "snapshots": [snapshot]})
    };
    let arsenal = json!({"name": "Arsenal v Chelsea", "competition": "England: Premier League", "kickoff": "2026-12-05T15:00:00Z"});
    assert_eq!(server.ingest(&with(arsenal)).await.0, 200);
    let expected = json!({"name": "Arsenal v Chelsea", "competition": "England: Premier League", "kickoff": "2026-12-05T15:00:00.000Z"});
    let (_, list) = server.get("/api/events").await;
    assert_eq!(list["events"][0]["event"], expected);
    let (_, one) = server.get("/api/events/7/odds").await;
    assert_eq!(one["event"], expected);
    let (_, many) = server.get("/api/events/odds?ids=7").await;
    assert_eq!(many["events"][0]["event"], expected);
    let (_, before, _) = get(&server, "/api/events/7/odds", None).await;

    // The latest details win, and the validator follows them.
    let renamed = json!({"name": "Arsenal FC v Chelsea FC"});
    assert_eq!(server.ingest(&with(renamed.clone())).await.0, 200);
    assert_eq!(server.get("/api/events/7/odds").await.1["event"], renamed);
    let (_, after, _) = get(&server, "/api/events/7/odds", None).await;
    assert_ne!(before, after, "a new ETag");

    for bad in [
        json!("Arsenal v Chelsea"),
        json!({"name": ""}),
        json!({"name": 5}),
        json!({"competition": "x".repeat(201)}),
        json!({"name": "tab\there"}),
        json!({"kickoff": "tomorrow"}),
        json!({"kickoff": "+10000-01-01T00:00:00Z"}),
    ] {
        let (status, reply) = server.ingest(&with(bad.clone())).await;
        assert_eq!(
            (status, &reply["error"]["code"]),
            (400, &json!("invalid_snapshot")),
            "{bad}: {reply}"
        );
    }
    assert_eq!(
        server.get("/api/events/7/odds").await.1["event"],
        renamed,
        "nothing applied"
    );
    // Without details, an event has no `event` field (v1 replies are unchanged).
    server.ingest_ok("betpawa", &[8], 2.0).await;
    assert!(server
        .get("/api/events/8/odds")
        .await
        .1
        .get("event")
        .is_none());
}
