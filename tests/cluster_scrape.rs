//! Scrape runs on a cluster: one run at a time across the nodes, its progress on every node,
//! periodic runs once per interval for the whole cluster, and a run whose node died ended
//! `failed` once its lease expires. Each test starts its own `redis-server`.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{phases, SseClient, TestServer};
use oddsbus::Config;
use serde_json::Value;

async fn node(redis: &RedisServer, change: impl FnOnce(&mut Config)) -> TestServer {
    let url = redis.url();
    TestServer::with(move |c| {
        c.redis = Some(url);
        c.sim_events = 40;
        c.sim_latency_ms = 20;
        change(c);
    })
    .await
}

#[tokio::test]
async fn a_stream_on_any_node_joins_the_one_run_and_every_node_publishes_it() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        node(&redis, |_| {}).await,
        node(&redis, |_| {}).await,
        node(&redis, |_| {}).await,
    );
    let (mut watcher, _) = c.ws_acked("?topics=scrape_progress").await;

    let mut first = SseClient::open(&a, "/api/scrape/stream").await;
    let started = first.next().await.expect("a step");
    let run_id = started["run_id"].clone();
    // Started on a; b and c see it through the log and join it instead of starting one.
    let second = SseClient::open(&b, "/api/scrape/stream").await;
    let rest_of_first = first.collect().await;
    let from_second = second.collect().await;
    assert_eq!(
        rest_of_first.last().unwrap()["phase"],
        "completed",
        "{rest_of_first:?}"
    );
    assert!(
        from_second.iter().all(|step| step["run_id"] == run_id),
        "one run: {from_second:?}"
    );
    assert_eq!(from_second.last().unwrap()["phase"], "completed");

    let mut on_c = vec![watcher.recv_type("scrape_progress").await];
    while on_c.last().unwrap()["data"]["phase"] != "completed" {
        on_c.push(watcher.recv_type("scrape_progress").await);
    }
    let steps: Vec<Value> = on_c.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(
        phases(&steps),
        phases(&[vec![started], rest_of_first].concat())
    );
    let (_, events_a) = a.get("/api/events").await;
    let (_, events_c) = c.get("/api/events").await;
    assert_eq!(events_a["events"].as_array().map(Vec::len), Some(40));
    let ids = |events: &Value| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sources"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&events_a),
        ids(&events_c),
        "every node stored the run's odds"
    );
}

#[tokio::test]
async fn periodic_runs_start_once_per_interval_for_the_whole_cluster() {
    let redis = RedisServer::start();
    let every = |c: &mut Config| {
        c.scrape_interval = Duration::from_millis(600);
        c.sim_latency_ms = 1;
    };
    let a = node(&redis, every).await;
    let (mut watcher, _) = a.ws_acked("?topics=scrape_progress").await;
    let _b = node(&redis, every).await;
    let _c = node(&redis, every).await;
    let watched = Instant::now();
    let mut open: Option<Value> = None;
    let mut runs = 0;
    while watched.elapsed() < Duration::from_millis(3000) || runs < 3 {
        let step = watcher.recv_type("scrape_progress").await["data"].clone();
        match step["phase"].as_str() {
            Some("started") => {
                assert!(open.is_none(), "two runs at once: {open:?} and {step}");
                open = Some(step["run_id"].clone());
                runs += 1;
            }
            // The run node a started as it came up may be under way before the watch began:
            // its end is seen without its start.
            Some("completed" | "failed") if step["platform"].is_null() && runs == 0 => {}
            Some("completed" | "failed") if step["platform"].is_null() => {
                assert_eq!(open.take(), Some(step["run_id"].clone()));
            }
            _ => {}
        }
    }
    // At most one run per 600 ms period (and one more for the period the watch began in);
    // three nodes ticking would start three times as many if each ran its own.
    let elapsed = watched.elapsed();
    let periods = (elapsed.as_millis() / 600) as usize;
    assert!(runs <= periods + 2, "{runs} runs in {elapsed:?}");
}

#[tokio::test]
async fn a_run_whose_node_was_killed_ends_failed_when_its_lease_expires() {
    let redis = RedisServer::start();
    let a = node(&redis, |_| {}).await;
    let (mut watcher, _) = a.ws_acked("?topics=scrape_progress").await;
    let args = [
        "--redis",
        &redis.url(),
        "--scrape-interval",
        "0",
        "--sim-latency-ms",
        "5000",
    ];
    let (child, address, _logs) = common::spawn_binary(&args, "info");
    let mut child = common::KillOnDrop(child);
    // Start a long run on the binary node.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{address}/api/scrape/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let started = watcher.recv_type("scrape_progress").await["data"].clone();
    assert_eq!(started["phase"], "started");
    let killed = Instant::now();
    child.0.kill().unwrap();
    let _ = child.0.wait();

    let mut follower = SseClient::open(&a, "/api/scrape/stream").await;
    let mut last = follower
        .next()
        .await
        .expect("the run is joined, not a new one");
    while let Some(step) = follower.next().await {
        last = step;
    }
    assert_eq!(last["run_id"], started["run_id"]);
    assert_eq!(last["phase"], "failed", "{last}");
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "{:?}",
        killed.elapsed()
    );
    // The lease is gone: a new run starts, on the surviving node.
    let next = SseClient::open(&a, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_ne!(next[0]["run_id"], started["run_id"]);
    assert_eq!(next.last().unwrap()["phase"], "completed");
}
