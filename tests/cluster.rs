//! Several nodes on one Redis (`--redis`): the tests start their own `redis-server` on a free
//! port and real nodes in-process, and talk to them over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::position;
use common::redis::{node, read_odds, RedisServer};
use common::{eventually, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn a_change_on_one_node_reaches_every_node_with_the_same_offsets_and_reads_agree() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let query = "?topics=odds_updates,odds_changes";
    let (mut on_a, ack_a) = a.ws_acked(query).await;
    let (mut on_b, ack_b) = b.ws_acked(query).await;
    assert_eq!(
        position(&ack_a, "odds_updates"),
        position(&ack_b, "odds_updates"),
        "one epoch, one log"
    );

    a.ingest_ok("betpawa", &[1, 2], 1.5).await;
    // Read your writes: the node that answered 200 shows the write at once.
    let (status, odds) = read_odds(&a, 1).await;
    assert_eq!(status, 200, "{odds}");
    b.ingest_ok("sportybet", &[2], 2.5).await;

    let mut offsets = Vec::new();
    for client in [&mut on_a, &mut on_b] {
        // Two topics, each in its own order (the contract orders each topic, not the two).
        let mut messages = Vec::new();
        for _ in 0..4 {
            messages.push(client.recv().await);
        }
        let of = |kind: &str| -> Vec<Value> {
            messages
                .iter()
                .filter(|m| m["type"] == kind)
                .cloned()
                .collect()
        };
        let (updates, changes) = (of("odds_update"), of("odds_change"));
        assert_eq!((updates.len(), changes.len()), (2, 2), "{messages:?}");
        assert_eq!(updates[0]["data"]["event_ids"], json!([1, 2]));
        assert_eq!(updates[0]["data"]["source"], "betpawa");
        assert_eq!(changes[0]["data"]["snapshots"][1]["event_id"], 2);
        assert_eq!(updates[1]["data"]["event_ids"], json!([2]));
        assert_eq!(updates[1]["offset"], changes[1]["offset"]);
        let offsets_here: Vec<Value> = updates
            .iter()
            .chain(&changes)
            .map(|m| m["offset"].clone())
            .collect();
        offsets.push(offsets_here);
        client.ping_pong().await; // nothing else: every change once
    }
    assert_eq!(
        offsets[0], offsets[1],
        "every node publishes under the same offsets"
    );

    for event_id in [1, 2] {
        let (from_a, from_b) = (read_odds(&a, event_id).await, read_odds(&b, event_id).await);
        assert_eq!(from_a, from_b, "reads agree, snapshot ids included");
    }
    let (_, odds) = read_odds(&b, 2).await;
    assert!(
        odds["betpawa"]["snapshot_id"].as_u64()
            < odds["competitors"]["sportybet"]["snapshot_id"].as_u64()
    );

    // A refresh (same odds, read later) reaches every cache too, and announces nothing.
    // Later than the first (to the millisecond a time is written with), not in the future.
    let at = oddsbus::Timestamp::now()
        .plus(Duration::from_millis(10))
        .to_string();
    let later = json!({"source": "betpawa", "snapshots": [
        {"event_id": 1, "captured_at": at, "markets": common::snapshot(1, 1.5)["markets"]}
    ]});
    let (status, reply) = a.ingest(&later).await;
    assert_eq!(
        (status, reply),
        (200, json!({"accepted": 1, "changed": 0, "stale": 0}))
    );
    eventually("the refresh reaches b", || async {
        read_odds(&b, 1).await.1["betpawa"]["captured_at"]
            == read_odds(&a, 1).await.1["betpawa"]["captured_at"]
            && read_odds(&a, 1).await.1["betpawa"]["captured_at"] == at.as_str()
    })
    .await;
    assert_eq!(read_odds(&a, 1).await, read_odds(&b, 1).await);
    on_b.ping_pong().await;
}

#[tokio::test]
async fn a_client_recovers_on_another_node_with_exactly_what_it_missed() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut client, ack) = a.ws_acked("?topics=odds_updates").await;
    let (epoch, _) = position(&ack, "odds_updates");
    a.ingest_ok("betpawa", &[1], 2.0).await;
    let seen = client.recv_type("odds_update").await["offset"]
        .as_u64()
        .unwrap();
    drop(client);

    a.ingest_ok("betpawa", &[2, 3], 2.0).await;
    b.ingest_ok("bet9ja", &[4], 2.0).await;
    let since = format!("?topics=odds_updates&since=odds_updates:{epoch}:{seen}");
    // Give b time to follow both: a recovery asks for what the node has published.
    eventually("b has followed", || async {
        b.get("/api/events/4/odds").await.0 == 200
    })
    .await;
    let (mut client, ack) = b.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_updates"]));
    let missed = client.until_pong().await;
    let ids: Vec<Value> = missed
        .iter()
        .map(|m| m["data"]["event_ids"].clone())
        .collect();
    assert_eq!(ids, [json!([2, 3]), json!([4])], "no gap, no duplicate");
}

#[tokio::test]
async fn a_late_node_loads_the_cache_and_the_history_then_follows() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let (_, ack) = a.ws_acked("?topics=odds_updates").await;
    let (epoch, start) = position(&ack, "odds_updates");
    a.ingest_ok("betpawa", &[1, 2], 2.0).await;
    a.ingest_ok("sportybet", &[1], 3.0).await;

    let late = node(&redis).await;
    for event_id in [1, 2] {
        assert_eq!(
            read_odds(&a, event_id).await,
            read_odds(&late, event_id).await
        );
    }
    // It holds the log's history too: a client recovers there from before it started.
    let since = format!("?topics=odds_updates&since=odds_updates:{epoch}:{start}");
    let (mut client, ack) = late.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_updates"]));
    let missed = client.until_pong().await;
    assert_eq!(missed.len(), 2, "{missed:?}");
    a.ingest_ok("bet9ja", &[2], 4.0).await;
    assert_eq!(
        client.recv_type("odds_update").await["data"]["event_ids"],
        json!([2])
    );
}

#[tokio::test]
async fn a_frozen_redis_means_503_and_degraded_and_nothing_lost_or_applied_late() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut client, _) = b.ws_acked("?topics=odds_updates").await;
    a.ingest_ok("betpawa", &[1], 2.0).await;
    client.recv_type("odds_update").await;
    eventually("healthy", || async { a.get("/healthz").await.0 == 200 }).await;

    redis.freeze();
    let frozen = Instant::now();
    let response = a
        .http
        .post(a.url("/api/odds"))
        .json(&json!({"source": "betpawa", "snapshots": [common::snapshot(99, 2.0)]}))
        .send()
        .await
        .unwrap();
    // Answered at the append timeout (1.5 s), not held while Redis is frozen; the margin is
    // for a busy machine.
    assert!(
        frozen.elapsed() < Duration::from_secs(4),
        "{:?}",
        frozen.elapsed()
    );
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    // Sent, and no answer: the node cannot know whether Redis will run it.
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");

    eventually("degraded", || async { a.get("/healthz").await.0 == 503 }).await;
    // Within 2 s of its last heartbeat (members.rs), again with room for a busy machine.
    assert!(
        frozen.elapsed() < Duration::from_secs(5),
        "{:?}",
        frozen.elapsed()
    );
    // Every node sees it, each by its own heartbeat (b's may have come back later than a's).
    eventually("b degraded too", || async {
        b.get("/healthz").await.1["status"] == "degraded"
    })
    .await;
    assert_eq!(
        a.get("/api/events/1/odds").await.0,
        200,
        "reads serve the cache"
    );
    client.ping_pong().await; // the WebSocket stays open

    redis.thaw();
    eventually("healthy again", || async {
        a.get("/healthz").await.0 == 200 && b.get("/healthz").await.0 == 200
    })
    .await;
    a.ingest_ok("betpawa", &[2], 2.0).await;
    let update = client.recv_type("odds_update").await;
    assert_eq!(
        update["data"]["event_ids"],
        json!([2]),
        "the 503'd ingest never applied"
    );
    assert_eq!(b.get("/api/events/99/odds").await.0, 404);
    assert_eq!(a.get("/api/events/99/odds").await.0, 404);
}

#[tokio::test]
async fn redis_restarted_empty_means_a_new_epoch_resync_and_caches_that_converge() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let (mut client, ack) = b.ws_acked("?topics=odds_updates").await;
    let (old_epoch, _) = position(&ack, "odds_updates");
    a.ingest_ok("betpawa", &[1], 2.0).await;
    client.recv_type("odds_update").await;

    redis.restart_empty();
    let resync = client.recv_type("resync").await;
    assert_eq!(resync["topic"], "odds_updates");
    eventually("caches follow Redis, which lost event 1", || async {
        a.get("/api/events/1/odds").await.0 == 404 && b.get("/api/events/1/odds").await.0 == 404
    })
    .await;
    a.ingest_ok("betpawa", &[5], 2.0).await;
    let update = client.recv_type("odds_update").await;
    assert_eq!(update["data"]["event_ids"], json!([5]));
    let (_, ack) = a.ws_acked("?topics=odds_updates").await;
    let (new_epoch, _) = position(&ack, "odds_updates");
    assert_ne!(new_epoch, old_epoch);
    let (_, ack) = b.ws_acked("?topics=odds_updates").await;
    assert_eq!(
        position(&ack, "odds_updates").0,
        new_epoch,
        "every node in the new epoch"
    );
    assert_eq!(read_odds(&a, 5).await, read_odds(&b, 5).await);

    // The connection from the old epoch is told positions in the new one, and they recover.
    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_updates"]}))
        .await;
    let subscribed = client.recv_type("subscribed").await;
    let (epoch, offset) = position(&subscribed, "odds_updates");
    assert_eq!(epoch, new_epoch, "{subscribed}");
    a.ingest_ok("betpawa", &[6], 2.0).await;
    let since = format!("?topics=odds_updates&since=odds_updates:{epoch}:{offset}");
    let (mut again, ack) = b.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_updates"]), "{ack}");
    again.recv_ids(&[6]).await;
}

#[tokio::test]
async fn a_fresh_member_lists_its_redis_round_trips_at_zero() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let text = a.metrics().await;
    for series in [
        r#"oddsbus_redis_requests_total{op="ingest"}"#,
        r#"oddsbus_redis_errors_total{op="ingest"}"#,
        r#"oddsbus_redis_errors_total{op="follow"}"#,
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series} in\n{text}"
        );
    }
}

#[tokio::test]
async fn members_are_listed_and_a_killed_node_leaves_the_list() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let (child, address, _logs) =
        common::spawn_binary(&["--redis", &redis.url(), "--scrape-interval", "0"], "info");
    let mut child = common::KillOnDrop(child);
    let members = |cluster: &Value| -> Vec<String> {
        let list = cluster["members"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|m| m["address"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // Both, once each has been heard from (starting the binary blocks this test's runtime,
    // and with it node a's own heartbeats, for a moment).
    eventually("both listed", || async {
        let listed = members(&a.get("/api/cluster").await.1);
        listed.len() == 2 && listed.contains(&address)
    })
    .await;
    let (_, cluster) = a.get("/api/cluster").await;
    assert!(cluster["node"].is_string() && cluster["epoch"].is_string());
    child.0.kill().unwrap(); // SIGKILL: no goodbye
    let _ = child.0.wait();
    eventually("the killed node is gone", || async {
        members(&a.get("/api/cluster").await.1).len() == 1
    })
    .await;
    let metrics = a.metrics().await;
    assert!(metrics.contains("oddsbus_cluster_members 1"), "{metrics}");
}

/// A flood from two nodes and three sources: each member merges it into the same messages
/// under the same offsets (the groups are the log's, `append.lua`), and a client that left
/// mid-flood recovers on the other node with exactly the changes it had not been sent.
#[tokio::test]
async fn a_flood_is_merged_alike_on_every_node_and_recovers_exactly_on_another() {
    let redis = RedisServer::start();
    // A long window: beyond the burst of 4, one group a second, and the flood takes less.
    let window = |c: &mut oddsbus::Config| {
        c.redis = Some(redis.url());
        c.coalesce_window_ms = 1000;
    };
    let (a, b) = (
        TestServer::with(window).await,
        TestServer::with(window).await,
    );
    let query = "?topics=odds_updates";
    let (mut on_a, ack) = a.ws_acked(query).await;
    let (mut on_b, _) = b.ws_acked(query).await;
    let (mut leaving, _) = a.ws_acked(query).await;
    let (epoch, _) = position(&ack, "odds_updates");

    const EACH: u64 = 150;
    let started = Instant::now();
    let from_a = async {
        for id in 0..EACH {
            let source = if id % 2 == 0 { "betpawa" } else { "sportybet" };
            a.ingest_ok(source, &[id], 2.0).await;
        }
    };
    let from_b = async {
        for id in 0..EACH {
            b.ingest_ok("bet9ja", &[id], 2.0).await;
        }
    };
    let (_, _, first) = tokio::join!(from_a, from_b, async {
        // What the leaving client was sent before it left: the burst's first message.
        leaving.recv_type("odds_update").await
    });
    let elapsed = started.elapsed();
    drop(leaving);

    let every = |messages: &[Value]| -> Vec<(String, u64)> {
        messages
            .iter()
            .flat_map(|m| {
                let source = m["data"]["source"].as_str().unwrap().to_owned();
                let ids = m["data"]["event_ids"].as_array().unwrap().clone();
                ids.into_iter()
                    .map(move |id| (source.clone(), id.as_u64().unwrap()))
            })
            .collect()
    };
    let mut published = Vec::new();
    for client in [&mut on_a, &mut on_b] {
        let mut messages = Vec::new();
        while every(&messages).len() < 2 * EACH as usize {
            let mut message = client.recv_type("odds_update").await;
            message["timestamp"].take(); // when this node sent it
            messages.push(message);
        }
        published.push(messages);
    }
    assert_eq!(published[0], published[1], "the same messages on both");
    let mut changes = every(&published[0]);
    changes.sort();
    changes.dedup();
    assert_eq!(changes.len(), 2 * EACH as usize, "each change once");
    // Groups: 4 at once, then at most one per window the flood lasted, and the last.
    let groups = 4 + elapsed.as_secs() + 2;
    assert!(
        published[0].len() as u64 <= 3 * groups,
        "{} messages for {} groups at most",
        published[0].len(),
        groups
    );

    let seen = first["offset"].as_u64().unwrap();
    let since = format!("{query}&since=odds_updates:{epoch}:{seen}");
    let (mut back, ack) = b.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_updates"]));
    let mut missed = back.until_pong().await;
    for message in &mut missed {
        message["timestamp"].take();
    }
    assert_eq!(missed, published[0][1..], "exactly what it was not sent");
}
