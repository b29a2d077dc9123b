//! What a cluster member's ingest reply promises, over real sockets and a real Redis: a 503
//! means nothing was applied, whenever Redis wakes up, and a retry with the same
//! `Idempotency-Key` on any node applies nothing twice.

mod common;

use std::time::Duration;

use common::eventually;
use common::redis::{node, RedisServer};
use common::{snapshot, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// POSTs `body` to `server`'s ingest, with `key` as its `Idempotency-Key` if any.
async fn post(server: &TestServer, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = server.http.post(server.url("/api/odds")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Redis frozen while a 10,000-snapshot ingest waits, and woken at different moments. The
/// reply tells the truth: 200, applied; 503 `backplane_unavailable`, not applied;
/// 503 `outcome_unknown` (sent, no answer), either, and a retry with the same
/// `Idempotency-Key` then applies it exactly once. Every applied ingest is announced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_tells_what_was_applied_whenever_redis_wakes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let trials = [300u64, 1100, 1300, 1600, 2500, 5000];
    // Counts every id announced on b, read as they come, until the last trial's marker.
    let last_marker = (trials.len() as u64 - 1) * 100_000 + 50_000;
    let (mut watcher, _) = b.ws_acked("?topics=odds_updates").await;
    let announced = tokio::spawn(async move {
        let mut announced = std::collections::HashMap::<u64, usize>::new();
        // No deadline per message: a trial keeps Redis frozen for seconds.
        while !announced.contains_key(&last_marker) {
            let text = match watcher.stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("the watcher's connection ended: {other:?}"),
            };
            let update: Value = serde_json::from_str(&text).unwrap();
            let ids = update["data"]["event_ids"].as_array().into_iter().flatten();
            for id in ids {
                *announced.entry(id.as_u64().unwrap()).or_default() += 1;
            }
        }
        announced
    });
    let mut applied_firsts = Vec::new();
    for (trial, thaw_after) in trials.into_iter().enumerate() {
        let first = trial as u64 * 100_000;
        let snapshots: Vec<Value> = (first..first + 10_000)
            .map(|id| snapshot(id, 2.0))
            .collect();
        let body = json!({"source": "betpawa", "snapshots": snapshots});
        let key = format!("trial-{trial}");
        eventually("healthy", || async {
            a.get("/healthz").await.0 == 200 && b.get("/healthz").await.0 == 200
        })
        .await;
        redis.freeze();
        let request = {
            let (http, url, body, key) = (
                a.http.clone(),
                a.url("/api/odds"),
                body.clone(),
                key.clone(),
            );
            tokio::spawn(async move {
                let request = http.post(url).header("idempotency-key", key).json(&body);
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            })
        };
        tokio::time::sleep(Duration::from_millis(thaw_after)).await;
        redis.thaw();
        let (status, reply) = request.await.unwrap();
        let code = reply["error"]["code"].as_str().unwrap_or("").to_owned();
        if code == "outcome_unknown" {
            // Retried as the contract says, until Redis answers.
            eventually("the retry gets through", || async {
                post(&a, &body, Some(&key)).await.status() == 200
            })
            .await;
        }
        // Once b has an ingest made after it, b has it too if it was applied at all.
        let marker = first + 50_000;
        eventually("an ingest gets through", || async {
            let body = json!({"source": "sportybet", "snapshots": [snapshot(marker, 2.0)]});
            post(&a, &body, None).await.status() == 200
        })
        .await;
        eventually("b follows", || async {
            b.get(&format!("/api/events/{marker}/odds")).await.0 == 200
        })
        .await;
        let applied = b.get(&format!("/api/events/{first}/odds")).await.0 == 200;
        let expected = match (status, code.as_str()) {
            (200, _) | (503, "outcome_unknown") => true,
            (503, "backplane_unavailable") => false,
            other => panic!("woken after {thaw_after} ms: {other:?} {reply}"),
        };
        assert_eq!(
            applied, expected,
            "woken after {thaw_after} ms: {status} {reply}"
        );
        if applied {
            applied_firsts.push(first);
        }
    }
    // Every applied id announced once: nothing applied twice.
    let announced = tokio::time::timeout(common::WAIT, announced).await;
    let announced = announced.expect("the last marker is announced").unwrap();
    for first in applied_firsts {
        assert_eq!(announced.get(&first), Some(&1), "event {first}");
    }
}

/// A retry on another node, with the same key, is answered what the first stored and
/// applies nothing.
#[tokio::test]
async fn a_retry_on_another_node_with_the_same_idempotency_key_applies_nothing() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let first = post(
        &a,
        &json!({"source": "betpawa", "snapshots": [snapshot(7, 2.0)]}),
        Some("k-1"),
    )
    .await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    assert_eq!(first, json!({"accepted": 1, "changed": 1, "stale": 0}));

    let again = post(
        &b,
        &json!({"source": "betpawa", "snapshots": [snapshot(7, 9.0)]}),
        Some("k-1"),
    )
    .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // Reads agree that the retry changed nothing, once b has caught up with a's write.
    for node in [&a, &b] {
        eventually("the first write is read", || async {
            node.get("/api/events/7/odds").await.1["betpawa"]["markets"][0]["outcomes"][0]["odds"]
                == 2.0
        })
        .await;
    }
}
