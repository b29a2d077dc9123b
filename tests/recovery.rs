//! Positions and recovery (docs/PROTOCOL.md, "v1.1"), rule by rule, over real sockets.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{position, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn topic_messages_carry_offsets_and_replies_carry_positions() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.ws_acked("?topics=odds_updates").await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    watcher.recv_ids(&[1]).await; // published before the client below connects
    let (mut client, ack) = server.ws_acked("").await;
    let (epoch, offset) = position(&ack, "odds_updates");
    assert!(epoch
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert!(!epoch.is_empty());
    assert!(ack["positions"]["scrape_progress"].is_object());
    assert_eq!(ack["recovered"], json!([]));

    server.ingest_ok("betpawa", &[2], 2.0).await;
    server.ingest_ok("betpawa", &[3], 2.0).await;
    let first = client.recv_type("odds_update").await;
    let second = client.recv_type("odds_update").await;
    assert_eq!(
        first["offset"],
        offset + 1,
        "the position joins the first message exactly"
    );
    assert!(second["offset"].as_u64() > first["offset"].as_u64());

    // Subscribing again answers with what this connection was given.
    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_updates"]}))
        .await;
    let reply = client.recv_type("subscribed").await;
    assert_eq!(position(&reply, "odds_updates"), (epoch, offset + 2));
    assert!(
        reply["positions"].get("scrape_progress").is_none(),
        "only topics named"
    );
    assert_eq!(reply["recovered"], json!([]));
}

/// A single node numbers as a cluster does: each change takes one offset of the node's log,
/// `odds_updates` and `odds_changes` share them, and a message takes its first change's.
#[tokio::test]
async fn each_change_takes_one_offset_of_the_log_the_topics_share() {
    let server = TestServer::start().await;
    let (mut updates, ack) = server.ws_acked("?topics=odds_updates").await;
    let (mut changes, changes_ack) = server.ws_acked("?topics=odds_changes").await;
    let (epoch, start) = position(&ack, "odds_updates");
    assert_eq!(position(&changes_ack, "odds_changes"), (epoch, start));

    server.ingest_ok("betpawa", &[1, 2, 3], 2.0).await;
    assert_eq!(updates.recv_type("odds_update").await["offset"], start + 1);
    assert_eq!(changes.recv_type("odds_change").await["offset"], start + 1);
    server.ingest_ok("sportybet", &[4], 2.0).await;
    let update = updates.recv_type("odds_update").await;
    assert_eq!(update["offset"], start + 4, "three changes before it");
    assert_eq!(update["data"]["event_ids"], json!([4]));
    assert_eq!(changes.recv_type("odds_change").await["offset"], start + 4);
}

#[tokio::test]
async fn a_client_that_reconnects_with_since_gets_exactly_what_it_missed() {
    let server = TestServer::start().await;
    let (mut client, ack) = server.ws_acked("?topics=odds_updates").await;
    let (epoch, _) = position(&ack, "odds_updates");
    server.ingest_ok("betpawa", &[1], 2.0).await;
    let seen = client.recv_type("odds_update").await["offset"]
        .as_u64()
        .unwrap();
    drop(client);

    server.ingest_ok("betpawa", &[2], 2.0).await;
    server.ingest_ok("sportybet", &[3], 2.0).await;
    let since = format!("?topics=odds_updates&since=odds_updates:{epoch}:{seen}");
    let (mut client, ack) = server.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_updates"]));
    assert_eq!(position(&ack, "odds_updates"), (epoch, seen));
    let missed: Vec<Value> = client.until_pong().await;
    let ids: Vec<&Value> = missed.iter().map(|m| &m["data"]["event_ids"][0]).collect();
    assert_eq!(ids, [&json!(2), &json!(3)]);
    assert_eq!(missed[0]["offset"], seen + 1);
    assert_eq!(missed[1]["offset"], seen + 2);
}

#[tokio::test]
async fn since_that_cannot_be_honoured_subscribes_from_now_and_says_resync() {
    let server = TestServer::with(|c| c.history_size = 2).await;
    let (mut watcher, _) = server.ws_acked("?topics=odds_updates").await;
    for id in 1..=5 {
        server.ingest_ok("betpawa", &[id], 2.0).await;
    }
    // "Now" is once the dispatcher has published all five (an ingest answers before that).
    let top = watcher.recv_ids(&[1, 2, 3, 4, 5]).await;
    let (_, ack) = server.ws_acked("?topics=odds_updates").await;
    let (epoch, now) = position(&ack, "odds_updates");
    assert_eq!(now, top);

    for (since, missed) in [
        (format!("odds_updates:another:{top}"), 0),
        (format!("odds_updates:{epoch}:{}", top + 10), 0),
        (format!("odds_updates:{epoch}:1"), top - 1),
    ] {
        let (mut client, ack) = server
            .ws_acked(&format!("?topics=odds_updates&since={since}"))
            .await;
        assert_eq!(ack["recovered"], json!([]), "{since}");
        assert_eq!(position(&ack, "odds_updates").1, top, "{since}: from now");
        let resync = client.recv().await;
        assert_eq!(resync["type"], "resync", "{since}: {resync}");
        assert_eq!(resync["topic"], "odds_updates");
        assert_eq!(resync["missed"], missed, "{since}");
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"oddsbus_recoveries_total{outcome="too_old"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"oddsbus_recoveries_total{outcome="epoch"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_since_entries_are_errors_and_their_topics_subscribe_normally() {
    let server = TestServer::start().await;
    let (mut client, ack) = server
        .ws_acked("?topics=odds_updates&since=odds_updates:bad!epoch:1,scrape_progress:e:x")
        .await;
    assert_eq!(ack["topics"], json!(["odds_updates"]));
    assert_eq!(ack["recovered"], json!([]));
    for _ in 0..2 {
        assert_eq!(client.recv().await["code"], "invalid_message");
    }
    assert_eq!(client.until_pong().await, Vec::<Value>::new(), "no resync");
}

/// A `since` names each topic once: a longer one (30,000 entries once came back as 4 MB of
/// errors) is refused before the upgrade, and in a `subscribe` gets one error.
#[tokio::test]
async fn a_since_longer_than_one_entry_per_topic_is_refused_whole() {
    let server = TestServer::start().await;
    let many = vec!["odds_updates:e:x"; 3_500].join(","); // 60 KB
    let twice = "odds_updates:e:1,odds_updates:e:2".to_owned();
    let long = format!("odds_updates:{}:1", "e".repeat(600));
    for since in [many, twice, long] {
        let url = format!("ws://{}/api/ws?since={since}", server.addr);
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400);
                let body = response.body().as_deref().unwrap_or_default();
                let body: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(body["error"]["code"], "invalid_query", "{body}");
            }
            other => panic!("expected HTTP 400, got {other:?}"),
        }
    }

    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let since: serde_json::Map<String, Value> = (0..1_000)
        .map(|i| (format!("t{i}"), json!({"epoch": "e", "offset": 1})))
        .collect();
    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_updates"], "since": since}))
        .await;
    let replies = client.until_pong().await;
    let kinds: Vec<&Value> = replies.iter().map(|r| &r["type"]).collect();
    assert_eq!(
        kinds,
        [&json!("subscribed"), &json!("error")],
        "{replies:?}"
    );
    assert_eq!(replies[1]["code"], "invalid_message");
}

#[tokio::test]
async fn subscribe_with_since_recovers_on_an_open_connection() {
    let server = TestServer::start().await;
    let (mut client, ack) = server.ws_acked("?topics=scrape_progress").await;
    // One epoch for every topic; nothing published on odds_updates yet.
    let (epoch, start) = (position(&ack, "scrape_progress").0, 0);
    server.ingest_ok("betpawa", &[7], 2.0).await;
    server.ingest_ok("betpawa", &[8], 2.0).await;
    let since = json!({"odds_updates": {"epoch": epoch, "offset": start}});
    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_updates"], "since": since}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["recovered"], json!(["odds_updates"]));
    assert_eq!(position(&reply, "odds_updates").1, start);
    let replayed = client.until_pong().await;
    let ids: Vec<&Value> = replayed
        .iter()
        .map(|m| &m["data"]["event_ids"][0])
        .collect();
    assert_eq!(ids, [&json!(7), &json!(8)]);
}

/// The seam, under load: a poster never stops while a client reads for a while, drops, and
/// reconnects with `since`, again and again. Every id arrives exactly once (no gap, no
/// repeat), and every reconnection recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_under_a_poster_that_never_stops_loses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let (mut client, ack) = server.ws_acked("?topics=odds_updates").await;
    let (epoch, mut last) = position(&ack, "odds_updates");
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let poster = {
        let (stop, posted, url) = (stop.clone(), posted.clone(), server.url("/api/odds"));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<Value> = (id + 1..=id + 5)
                    .map(|i| common::snapshot(i, 2.0))
                    .collect();
                let body = json!({"source": "betpawa", "snapshots": ids});
                let response = http.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                id += 5;
                posted.store(id, Ordering::Relaxed);
            }
        })
    };

    let mut seen = HashSet::new();
    for round in 0..8 {
        for _ in 0..20 {
            let update = client.recv_type("odds_update").await;
            let offset = update["offset"].as_u64().unwrap();
            assert!(offset > last, "round {round}: offsets only grow");
            last = offset;
            for id in update["data"]["event_ids"].as_array().unwrap() {
                assert!(seen.insert(id.as_u64().unwrap()), "{id} twice");
            }
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let query = format!("?topics=odds_updates&since=odds_updates:{epoch}:{last}");
        let (next, ack) = server.ws_acked(&query).await;
        assert_eq!(ack["recovered"], json!(["odds_updates"]), "round {round}");
        client = next;
    }
    stop.store(true, Ordering::Relaxed);
    poster.await.unwrap();
    // Everything posted arrives (each within WAIT), then nothing more.
    let total = posted.load(Ordering::Relaxed);
    while (seen.len() as u64) < total {
        let update = client.recv_type("odds_update").await;
        let offset = update["offset"].as_u64().unwrap();
        assert!(offset > last);
        last = offset;
        for id in update["data"]["event_ids"].as_array().unwrap() {
            assert!(seen.insert(id.as_u64().unwrap()), "{id} twice");
        }
    }
    assert_eq!(
        seen,
        (1..=total).collect::<HashSet<u64>>(),
        "every id, exactly once"
    );
    assert_eq!(client.until_pong().await, Vec::<Value>::new());
}
