//! Soak: connection churn (polite closes and abrupt drops) plus continuous updates, then the
//! registry must be empty, no connection task left, and memory back near where it started.
//!
//! Bounded by `ODDSBUS_SOAK_SECS` (default 10 s, so `make test` stays quick); `make soak`
//! runs it for minutes. Figures are printed and recorded in RELIABILITY.md.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::StreamExt;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_and_updates_leave_nothing_behind() {
    let seconds: u64 = std::env::var("ODDSBUS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let server = TestServer::start().await;
    let tasks_before = server.broker.fanout.metrics().num_alive_tasks();

    // Warm up once so allocator pools exist before the baseline is read.
    let warm: Vec<_> = futures_util::future::join_all((0..50).map(|_| server.ws_acked(""))).await;
    drop(warm);
    server
        .wait_for_stats(|s| s["active_connections"] == 0)
        .await;
    let rss_start = rss_kib();

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let updates = {
        let url = server.url("/api/odds");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut round = 0u64;
            while Instant::now() < deadline {
                round += 1;
                let snapshots: Vec<_> = (0..10)
                    .map(|i| common::snapshot(i, 1.5 + (round % 100) as f64 / 100.0))
                    .collect();
                let body = serde_json::json!({"source": "betpawa", "snapshots": snapshots});
                let status = http.post(&url).json(&body).send().await.unwrap().status();
                assert_eq!(status, 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            round
        })
    };

    let mut connections = 0u64;
    while Instant::now() < deadline {
        let clients = futures_util::future::join_all((0..20).map(|_| server.ws_acked(""))).await;
        connections += clients.len() as u64;
        for (i, (mut client, _)) in clients.into_iter().enumerate() {
            // Read whatever has arrived, briefly, then leave politely or just vanish.
            let _ = tokio::time::timeout(Duration::from_millis(5), client.stream.next()).await;
            if i % 2 == 0 {
                let _ = client.stream.close(None).await;
            }
        }
    }
    let rounds = updates.await.unwrap();

    let stats = server
        .wait_for_stats(|s| s["active_connections"] == 0)
        .await;
    assert_eq!(
        stats["topics"],
        serde_json::json!({"alerts": 0, "odds_changes": 0, "odds_updates": 0, "scrape_progress": 0})
    );
    let settle = Instant::now() + Duration::from_secs(5);
    while server.broker.fanout.metrics().num_alive_tasks() > tasks_before && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tasks_after = server.broker.fanout.metrics().num_alive_tasks();
    let rss_end = rss_kib();
    println!(
        "soak: {seconds} s, {connections} connections opened and closed, {rounds} ingests; \
         fan-out tasks {tasks_before} -> {tasks_after}; RSS {rss_start} KiB -> {rss_end} KiB"
    );
    assert_eq!(
        tasks_after, tasks_before,
        "a connection task was left behind"
    );
    assert!(
        rss_end < rss_start + 64 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
