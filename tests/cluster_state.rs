//! What a cluster keeps in Redis, and how nodes load it: the whole state and the history
//! when they join, again when they fell behind, event details, and the state's age bound.
//! Each test starts its own `redis-server` on a free port.

mod common;

use std::time::Duration;

use common::eventually;
use common::redis::{node, read_odds, RedisServer};
use common::{position, TestServer, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};

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
        read_odds(&a, 3).await,
        read_odds(&late, 3).await,
        "reads agree"
    );
}

/// Details follow the same rules as on a single node: a request that names an event twice
/// keeps the first one's details when the second has none, and a stale snapshot's details
/// are not applied, on any node, nor for a node that joins later.
#[tokio::test]
async fn details_come_only_with_applied_snapshots_as_on_a_single_node() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let named = json!({"name": "Inter v Milan"});
    let mut first = common::snapshot(4, 2.0);
    first["event"] = named.clone();
    first["captured_at"] = json!("2026-12-01T10:00:00Z");
    let mut second = common::snapshot(4, 2.5);
    second["captured_at"] = json!("2026-12-01T10:01:00Z");
    let body = json!({"source": "bet9ja", "snapshots": [first, second]});
    assert_eq!(a.ingest(&body).await.0, 200);
    assert_eq!(a.get("/api/events/4/odds").await.1["event"], named);

    let mut stale = common::snapshot(4, 3.0);
    stale["event"] = json!({"name": "Stale v Name"});
    stale["captured_at"] = json!("2026-12-01T09:00:00Z");
    let (_, reply) = a
        .ingest(&json!({"source": "bet9ja", "snapshots": [stale]}))
        .await;
    assert_eq!(reply["stale"], 1, "{reply}");
    let late = node(&redis).await;
    for server in [&a, &late] {
        assert_eq!(server.get("/api/events/4/odds").await.1["event"], named);
    }
}

/// Redis holds no more than a node does: at most `--max-events` events in its state, the
/// events written longest ago leaving first, and at most `--history-bytes` of log.
#[tokio::test]
async fn redis_keeps_the_events_and_log_bytes_a_node_would() {
    let redis = RedisServer::start();
    let url = redis.url();
    let small = TestServer::with(move |c| {
        c.redis = Some(url);
        c.max_events = 5;
        c.history_bytes = 4096;
    })
    .await;
    for event_id in 0..20 {
        small.ingest_ok("betpawa", &[event_id], 2.0).await;
    }
    small.ingest_ok("sportybet", &[19], 2.0).await;
    assert_eq!(redis.integer("HLEN oddsbus:state:betpawa"), 5);
    assert_eq!(redis.integer("ZCARD oddsbus:recent"), 5);
    assert_eq!(
        redis.integer("HEXISTS oddsbus:state:betpawa 19"),
        1,
        "the latest stay"
    );
    let entries = redis.integer("XLEN oddsbus:log");
    let bytes = redis.integer("HGET oddsbus:meta bytes");
    assert!(entries < 21, "{entries} entries");
    assert!(bytes <= 4096 + 1024, "{bytes} bytes in the log");
}

/// The limits that trim the shared log and state are the first node's: a node started with
/// another one refuses to join (exit 2, naming the flag) and changes nothing; the first node
/// carries on.
#[tokio::test]
async fn a_node_with_other_limits_refuses_to_join() {
    let redis = RedisServer::start();
    let first = node(&redis).await;
    first.ingest_ok("betpawa", &[1], 2.0).await;
    let (entries, limits) = (
        redis.integer("XLEN oddsbus:log"),
        redis.integer("HSTRLEN oddsbus:meta limits"),
    );
    for (flag, value) in [("--history-size", "10"), ("--max-events", "5")] {
        let url = redis.url();
        let args = ["--listen", "127.0.0.1:0", "--redis", &url, flag, value];
        let (code, stderr) = common::run_binary(&args).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{flag} is {value} on this node")),
            "{stderr}"
        );
    }
    assert_eq!(
        redis.integer("XLEN oddsbus:log"),
        entries,
        "nothing written"
    );
    assert_eq!(redis.integer("HSTRLEN oddsbus:meta limits"), limits);
    first.ingest_ok("betpawa", &[2], 2.0).await;
    eventually("the first node serves", || async {
        first.get("/healthz").await.0 == 200
    })
    .await;
}

/// A node that meets limits other than its own in Redis (one that joined after Redis lost
/// them, with other flags, set them first) writes nothing: 503, and the state is untouched.
#[tokio::test]
async fn a_write_under_limits_not_the_clusters_is_refused_whole() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    a.ingest_ok("betpawa", &[1], 2.0).await;
    let other = r#"HSET oddsbus:meta limits "--history-size=10 --history-ttl=300""#;
    assert_eq!(redis.integer(other), 0, "the field was there");
    let (status, reply) = a
        .ingest(&json!({"source": "betpawa", "snapshots": [common::snapshot(2, 2.0)]}))
        .await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "backplane_unavailable", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--history-size=10"));
    assert_eq!(redis.integer("HLEN oddsbus:state:betpawa"), 1);
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

/// A late node reads the log's history a page at a time: more entries than one page. It
/// merges them as the node that followed them live did: the same messages, the same offsets.
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
    let mut published = Vec::new();
    for on in [&a, &late] {
        let (mut client, ack) = on.ws_acked(&since).await;
        assert_eq!(ack["recovered"], json!(["odds_updates"]));
        published.push(every_id(&mut client, 600).await);
    }
    let ids: Vec<u64> = published[1]
        .iter()
        .flat_map(|m| m["data"]["event_ids"].as_array().unwrap().clone())
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..600).collect::<Vec<u64>>());
    assert_eq!(published[0], published[1], "the same messages on both");
}

/// The `odds_update`s `client` receives until they named `count` ids (the last group of a
/// flood is published once nothing came after it for a window).
async fn every_id(client: &mut common::WsClient, count: usize) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut seen = 0;
    while seen < count {
        let mut message = client.recv_type("odds_update").await;
        seen += message["data"]["event_ids"].as_array().unwrap().len();
        message["timestamp"].take(); // when this node sent it
        messages.push(message);
    }
    messages
}
