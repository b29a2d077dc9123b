//! Several nodes on one Redis (`--redis`): the tests start their own `redis-server` on a free
//! port and real nodes in-process, and talk to them over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{TestServer, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn node(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::with(move |c| c.redis = Some(url)).await
}

/// The epoch and offset `reply` gives `topic`.
fn position(reply: &Value, topic: &str) -> (String, u64) {
    let position = &reply["positions"][topic];
    let epoch = position["epoch"].as_str().expect("an epoch").to_owned();
    (epoch, position["offset"].as_u64().expect("an offset"))
}

/// Polls `check` until it holds, failing after [`WAIT`].
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn snapshot_ids(server: &TestServer, event_id: u64) -> (u16, Value) {
    let (status, body) = server.get(&format!("/api/events/{event_id}/odds")).await;
    (status, body)
}

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
    let (status, odds) = snapshot_ids(&a, 1).await;
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
        let (from_a, from_b) = (
            snapshot_ids(&a, event_id).await,
            snapshot_ids(&b, event_id).await,
        );
        assert_eq!(from_a, from_b, "reads agree, snapshot ids included");
    }
    let (_, odds) = snapshot_ids(&b, 2).await;
    assert!(
        odds["betpawa"]["snapshot_id"].as_u64()
            < odds["competitors"]["sportybet"]["snapshot_id"].as_u64()
    );

    // A refresh (same odds, read later) reaches every cache too, and announces nothing.
    let later = json!({"source": "betpawa", "snapshots": [
        {"event_id": 1, "captured_at": "2030-01-01T00:00:00.000Z", "markets": common::snapshot(1, 1.5)["markets"]}
    ]});
    let (status, reply) = a.ingest(&later).await;
    assert_eq!(
        (status, reply),
        (200, json!({"accepted": 1, "changed": 0, "stale": 0}))
    );
    eventually("the refresh reaches b", || async {
        snapshot_ids(&b, 1).await.1["betpawa"]["captured_at"] == "2030-01-01T00:00:00.000Z"
    })
    .await;
    assert_eq!(snapshot_ids(&a, 1).await, snapshot_ids(&b, 1).await);
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
            snapshot_ids(&a, event_id).await,
            snapshot_ids(&late, event_id).await
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
    let started = Instant::now();
    let response = a
        .http
        .post(a.url("/api/odds"))
        .json(&json!({"source": "betpawa", "snapshots": [common::snapshot(99, 2.0)]}))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "backplane_unavailable", "{body}");

    eventually("degraded", || async { a.get("/healthz").await.0 == 503 }).await;
    assert!(
        frozen.elapsed() < Duration::from_millis(2500),
        "{:?}",
        frozen.elapsed()
    );
    let (_, health) = b.get("/healthz").await;
    assert_eq!(health["status"], "degraded", "{health}");
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
    assert_eq!(snapshot_ids(&a, 5).await, snapshot_ids(&b, 5).await);
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

#[tokio::test]
async fn a_node_that_fell_behind_the_log_reloads_and_its_clients_resync() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = TestServer::with(move |c| {
        c.redis = Some(url);
        c.history_size = 10;
    })
    .await;
    let args = [
        "--redis",
        &redis.url(),
        "--scrape-interval",
        "0",
        "--history-size",
        "10",
    ];
    let (child, address, _logs) = common::spawn_binary(&args, "info");
    let behind = common::KillOnDrop(child);
    let url = format!("ws://{address}/api/ws?topics=odds_updates");
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    client.next().await.unwrap().unwrap(); // connection_ack

    let pid = behind.0.id().to_string();
    let signal = |which: &str| {
        let status = std::process::Command::new("kill")
            .args([which, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    // Far more entries than the log keeps (it trims whole blocks of 100 entries).
    for event_id in 0..300 {
        a.ingest_ok("betpawa", &[event_id], 2.0).await;
    }
    signal("-CONT");
    let resync = loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let message: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        if message["type"] == "resync" {
            break message;
        }
    };
    assert_eq!(resync["topic"], "odds_updates");
    let http = reqwest::Client::new();
    let (_, events) = (
        0,
        http.get(format!("http://{address}/api/events"))
            .send()
            .await
            .unwrap(),
    );
    let events: Value = events.json().await.unwrap();
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(300),
        "the whole state reloaded"
    );
}

#[tokio::test]
async fn event_details_reach_every_node_and_a_late_one() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let mut snapshot = common::snapshot(3, 2.0);
    snapshot["event"] = json!({"name": "Inter v Milan", "competition": "Italy: Serie A"});
    let (status, _) = a
        .ingest(&json!({"source": "bet9ja", "snapshots": [snapshot]}))
        .await;
    assert_eq!(status, 200);
    let expected = json!({"name": "Inter v Milan", "competition": "Italy: Serie A"});
    eventually("b has the details", || async {
        b.get("/api/events/3/odds").await.1["event"] == expected
    })
    .await;
    let late = node(&redis).await;
    assert_eq!(
        late.get("/api/events").await.1["events"][0]["event"],
        expected
    );
    assert_eq!(
        snapshot_ids(&a, 3).await,
        snapshot_ids(&late, 3).await,
        "reads agree"
    );
}

/// Redis forgets what nobody updated for `--event-ttl`, as every node's cache does, so its
/// memory is bounded too: a node joining later does not load it.
#[tokio::test]
async fn redis_forgets_events_nobody_updated_for_the_ttl() {
    let redis = RedisServer::start();
    let short = |c: &mut oddsbus::Config| {
        c.redis = Some(redis.url());
        c.event_ttl = Duration::from_secs(1);
    };
    let a = TestServer::with(short).await;
    let mut old = common::snapshot(1, 2.0);
    old["event"] = json!({"name": "Old v Gone"});
    assert_eq!(
        a.ingest(&json!({"source": "betpawa", "snapshots": [old]}))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    a.ingest_ok("sportybet", &[2], 2.0).await; // an append trims what is older than the TTL
    let late = TestServer::with(short).await;
    let (_, events) = late.get("/api/events").await;
    let ids: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event_id"])
        .collect();
    assert_eq!(ids, [&json!(2)], "{events}");
}

/// A late node reads the log's history a page at a time: more entries than one page.
#[tokio::test]
async fn a_late_node_loads_a_long_history_page_by_page() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let (_, ack) = a.ws_acked("?topics=odds_updates").await;
    let (epoch, start) = position(&ack, "odds_updates");
    for event_id in 0..600 {
        a.ingest_ok("betpawa", &[event_id], 2.0).await;
    }
    let late = node(&redis).await;
    let since = format!("?topics=odds_updates&since=odds_updates:{epoch}:{start}");
    let (mut client, ack) = late.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_updates"]));
    let missed = client.until_pong().await;
    let ids: Vec<u64> = missed
        .iter()
        .map(|m| m["data"]["event_ids"][0].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..600).collect::<Vec<u64>>());
}
