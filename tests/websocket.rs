//! `GET /api/ws`, rule by rule, over real sockets (docs/PROTOCOL.md, "WebSocket").

mod common;

use common::{snapshot, TestServer};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn is_rfc3339_utc_millis(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() == "2026-11-21T22:03:00.123Z".len()
        && text.ends_with('Z')
        && oddsbus::Timestamp::parse(text).is_ok()
}

/// Acceptance scenario (a): requested topics are acknowledged first, sorted; ping gets pong.
#[tokio::test]
async fn ack_comes_first_with_the_sorted_topics_and_ping_gets_pong() {
    let server = TestServer::start().await;
    let mut client = server.ws("?topics=scrape_progress,odds_updates").await;

    let ack = client.recv().await;
    assert_eq!(ack["type"], "connection_ack");
    assert_eq!(ack["topics"], json!(["odds_updates", "scrape_progress"]));
    let id = ack["connection_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert!(is_rfc3339_utc_millis(&ack["timestamp"]), "{ack}");

    client.send_json(json!({"type": "ping"})).await;
    let pong = client.recv().await;
    assert_eq!(pong["type"], "pong");
    assert!(is_rfc3339_utc_millis(&pong["timestamp"]), "{pong}");
}

#[tokio::test]
async fn absent_or_empty_topics_subscribe_to_every_topic() {
    let server = TestServer::start().await;
    for query in ["", "?topics=", "?other=1"] {
        let (_client, ack) = server.ws_acked(query).await;
        assert_eq!(
            ack["topics"],
            json!(["odds_updates", "scrape_progress"]),
            "{query}"
        );
    }
}

#[tokio::test]
async fn unknown_topic_in_query_is_not_subscribed_and_reported_after_the_ack() {
    let server = TestServer::start().await;
    let mut client = server.ws("?topics=odds_updates,bogus").await;
    let ack = client.recv().await;
    assert_eq!(ack["type"], "connection_ack");
    assert_eq!(ack["topics"], json!(["odds_updates"]));
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "unknown_topic");
    assert!(
        error["message"].as_str().unwrap().contains("bogus"),
        "{error}"
    );
    assert!(is_rfc3339_utc_millis(&error["timestamp"]));

    let stats = server.stats().await;
    assert_eq!(stats["topics"]["odds_updates"], 1);
    assert_eq!(stats["topics"]["scrape_progress"], 0);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_reply_with_the_whole_set_after_the_change() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;

    client
        .send_json(json!({"type": "subscribe", "topics": ["scrape_progress"]}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["topics"], json!(["odds_updates", "scrape_progress"]));
    assert!(is_rfc3339_utc_millis(&reply["timestamp"]));

    client
        .send_json(json!({"type": "unsubscribe", "topics": ["odds_updates"]}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "unsubscribed");
    assert_eq!(reply["topics"], json!(["scrape_progress"]));

    // Unsubscribing from something not subscribed, and an empty list, are no-ops that
    // still answer with the set.
    client
        .send_json(json!({"type": "unsubscribe", "topics": ["odds_updates"]}))
        .await;
    assert_eq!(client.recv().await["topics"], json!(["scrape_progress"]));
    client
        .send_json(json!({"type": "subscribe", "topics": []}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["topics"], json!(["scrape_progress"]));

    let stats = server.stats().await;
    assert_eq!(
        stats["topics"],
        json!({"alerts": 0, "odds_changes": 0, "odds_updates": 0, "scrape_progress": 1})
    );
}

#[tokio::test]
async fn subscribe_with_an_unknown_topic_applies_the_valid_ones_and_reports_the_rest() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=scrape_progress").await;
    client
        .send_json(json!({"type": "subscribe", "topics": ["nope", "odds_updates"]}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["topics"], json!(["odds_updates", "scrape_progress"]));
    let error = client.recv().await;
    assert_eq!(error["code"], "unknown_topic");
    assert!(error["message"].as_str().unwrap().contains("nope"));
}

/// Every bad input of the contract's table gets its code, and the connection keeps working.
#[tokio::test]
async fn each_bad_input_gets_its_error_code_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let (mut bystander, _) = server.ws_acked("?topics=odds_updates").await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let cases: &[(&str, &str)] = &[
        ("not json", "invalid_json"),
        ("{\"type\":", "invalid_json"),
        ("{}", "unknown_type"),
        (r#"{"type":42}"#, "unknown_type"),
        ("[]", "unknown_type"),
        (r#""x""#, "unknown_type"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"subscribe"}"#, "invalid_message"),
        (
            r#"{"type":"subscribe","topics":"odds_updates"}"#,
            "invalid_message",
        ),
        (
            r#"{"type":"unsubscribe","topics":[1,2]}"#,
            "invalid_message",
        ),
        (r#"{"type":"unsubscribe","topics":null}"#, "invalid_message"),
    ];
    for (input, code) in cases {
        client.send_text(input).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "error", "{input}");
        assert_eq!(error["code"], *code, "{input} -> {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    client
        .stream
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let error = client.recv().await;
    assert_eq!(error["code"], "unsupported_frame");

    // Still subscribed, still answering, nothing else changed.
    client.ping_pong().await;
    server.ingest_ok("betpawa", &[5], 2.0).await;
    let update = client.recv().await;
    assert_eq!(update["type"], "odds_update");
    assert_eq!(update["data"]["event_ids"], json!([5]));

    // The other client saw none of it: just the update.
    assert_eq!(bystander.recv().await["data"]["event_ids"], json!([5]));
    assert_eq!(bystander.until_pong().await, Vec::<Value>::new());
    assert_eq!(server.stats().await["active_connections"], 2);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_others_carry_on() {
    let server = TestServer::with(|c| c.max_frame_bytes = 1024).await;
    let (mut bystander, _) = server.ws_acked("?topics=odds_updates").await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;

    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2048));
    client.send_text(&big).await;
    assert_eq!(client.recv_close().await, Some(CloseCode::Size));

    bystander.ping_pong().await;
    server
        .wait_for_stats(|s| s["active_connections"] == 1)
        .await;
}

#[tokio::test]
async fn a_client_receives_only_the_topics_it_is_subscribed_to() {
    let server = TestServer::start().await;
    let (mut progress_only, _) = server.ws_acked("?topics=scrape_progress").await;
    let (mut odds, _) = server.ws_acked("?topics=odds_updates").await;

    server.ingest_ok("betpawa", &[1, 2], 2.0).await;
    assert_eq!(odds.recv().await["type"], "odds_update");
    // The update is published by now; the progress-only client must have nothing before
    // the answer to its ping.
    assert_eq!(progress_only.until_pong().await, Vec::<Value>::new());
    progress_only.expect_silence().await;
}

#[tokio::test]
async fn after_unsubscribing_updates_stop_and_after_resubscribing_they_resume() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let (mut witness, _) = server.ws_acked("?topics=odds_updates").await;

    client
        .send_json(json!({"type": "unsubscribe", "topics": ["odds_updates"]}))
        .await;
    assert_eq!(client.recv().await["type"], "unsubscribed");
    server.ingest_ok("sportybet", &[10], 2.0).await;
    assert_eq!(witness.recv().await["data"]["event_ids"], json!([10]));
    assert_eq!(client.until_pong().await, Vec::<Value>::new());

    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_updates"]}))
        .await;
    assert_eq!(client.recv().await["type"], "subscribed");
    server.ingest_ok("sportybet", &[11], 2.0).await;
    let update = client.recv().await;
    assert_eq!(update["data"]["event_ids"], json!([11]));
    assert_eq!(update["data"]["source"], "sportybet");
}

/// Reads `published` topic messages (or their `resync` counts) from a client that had
/// stopped reading; returns (messages received, missed), checking offsets rise by one
/// across each `resync`'s gap.
async fn read_behind(slow: &mut common::WsClient, published: u64) -> (u64, u64) {
    let (mut received, mut missed, mut last) = (0u64, 0u64, 0u64);
    while received + missed < published {
        let message = slow.recv().await;
        match message["type"].as_str().unwrap() {
            "odds_update" => {
                let offset = message["offset"].as_u64().unwrap();
                assert_eq!(
                    offset,
                    last + 1,
                    "offsets in order, none skipped unannounced"
                );
                last = offset;
                received += 1;
            }
            "resync" => {
                assert_eq!(message["topic"], "odds_updates");
                let n = message["missed"].as_u64().unwrap();
                assert!(n > 0);
                missed += n;
                last += n;
            }
            other => panic!("unexpected {other}"),
        }
    }
    (received, missed)
}

/// A client that stops reading falls behind its topic channel (1,024 messages), and, once it
/// reads again, catches up from the topic's history: every message, in order, no `resync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_catches_up_from_the_history() {
    use oddsbus::TOPIC_CAPACITY;

    // 56 MiB published: within what a subscriber may lag here.
    let server = TestServer::with(|c| c.max_lag_bytes = 64 << 20).await;
    let (mut slow, _) = server.ws_acked("?topics=odds_updates").await;
    // Large frames fill the socket buffers quickly, so the connection task blocks on its
    // write and the topic channel overflows behind it.
    let published = 4 * TOPIC_CAPACITY as u64;
    server.publish_bulky(published);
    assert_eq!(read_behind(&mut slow, published).await, (published, 0));
    assert_eq!(slow.until_pong().await, Vec::<Value>::new());
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains("oddsbus_messages_replayed_total 0"),
        "{metrics}"
    );
}

/// A client that falls behind further than the history reaches is told how much it missed,
/// and every published message is either received or counted as missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_the_history_gets_resync_with_the_missed_count() {
    use oddsbus::TOPIC_CAPACITY;

    let server = TestServer::with(|c| c.history_size = 100).await;
    let (mut slow, _) = server.ws_acked("?topics=odds_updates").await;
    let published = 4 * TOPIC_CAPACITY as u64;
    server.publish_bulky(published);
    let (received, missed) = read_behind(&mut slow, published).await;
    assert!(missed > 0, "the client never fell behind the history");
    assert_eq!(received + missed, published);
    assert_eq!(slow.until_pong().await, Vec::<Value>::new());
}

/// A client more than `--max-lag-bytes` behind skips to the latest message and is told how
/// many it missed; one that falls that far behind again within `--stuck-timeout` reads slower
/// than the topic is published, and is closed with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_further_behind_than_its_lag_bytes_is_resynced_then_closed() {
    use oddsbus::TOPIC_CAPACITY;

    let server = TestServer::with(|c| c.max_lag_bytes = 1 << 20).await;
    let (mut slow, _) = server.ws_acked("?topics=odds_updates").await;
    // 14 MiB while the client reads nothing: far more than the sockets hold.
    server.publish_bulky(TOPIC_CAPACITY as u64);
    loop {
        let message = slow.recv().await;
        if message["type"] == "resync" {
            assert!(message["missed"].as_u64().unwrap() > 0, "{message}");
            break;
        }
    }
    // It stops reading again: the next time it is that far behind, it is closed (if it was
    // not already, for falling behind twice in the first burst).
    server.publish_bulky(TOPIC_CAPACITY as u64);
    assert_eq!(slow.recv_close().await, Some(CloseCode::Policy));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"oddsbus_lag_limit_total{action="resync"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"oddsbus_lag_limit_total{action="close"} 1"#),
        "{metrics}"
    );
}

/// 200 concurrent clients each receive the same update; stats count them and return to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_all_receive_the_update_and_stats_return_to_zero() {
    let server = TestServer::start().await;
    let before = server.stats().await;
    assert_eq!(before["active_connections"], 0);

    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(server.ws_acked("?topics=odds_updates").await.0);
    }
    let stats = server.stats().await;
    assert_eq!(stats["active_connections"], 200);
    assert_eq!(
        stats["topics"],
        json!({"alerts": 0, "odds_changes": 0, "odds_updates": 200, "scrape_progress": 0})
    );

    server.ingest_ok("bet9ja", &[42, 43], 1.8).await;
    let receipts = futures_util::future::join_all(clients.iter_mut().map(|c| c.recv())).await;
    for update in &receipts {
        assert_eq!(update["type"], "odds_update");
        assert_eq!(
            update["data"],
            json!({"event_ids": [42, 43], "source": "bet9ja", "count": 2})
        );
    }

    // Half leave politely, half just drop their TCP connection.
    for (i, mut client) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            client.stream.close(None).await.unwrap();
        }
    }
    server.wait_for_stats(|s| s == &before).await;
}

#[tokio::test]
async fn get_without_upgrade_explains_that_this_is_a_websocket_endpoint() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/api/ws").await;
    assert_eq!(status, 426);
    assert_eq!(body["error"]["code"], "upgrade_required");
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_after_delivering_accepted_updates() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    // Put straight into the cache and stop at once: the update is queued, not yet sent.
    let body = json!({"source": "betpawa", "snapshots": [snapshot(77, 2.5)]});
    let (status, _) = server.ingest(&body).await;
    assert_eq!(status, 200);
    server.stop().await;

    let mut ids = Vec::new();
    loop {
        match tokio::time::timeout(
            common::WAIT,
            futures_util::StreamExt::next(&mut client.stream),
        )
        .await
        .expect("server went quiet without closing")
        {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                ids.push(message["data"]["event_ids"].clone());
            }
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.unwrap().code, CloseCode::Away);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, vec![json!([77])]);
}
