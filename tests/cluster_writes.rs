//! What a cluster member's ingest reply promises, over real sockets and a real Redis: a 503
//! means nothing was applied, whenever Redis wakes up, and a retry with the same
//! `Idempotency-Key` on any node applies nothing twice.

mod common;

use std::time::Duration;

use common::eventually;
use common::redis::{node, RedisServer};
use common::{snapshot, TestServer};
use serde_json::{json, Value};

/// POSTs `body` to `server`'s ingest, with `key` as its `Idempotency-Key` if any.
async fn post(server: &TestServer, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = server.http.post(server.url("/api/odds")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Redis frozen while a 10,000-snapshot ingest waits, and woken at different moments: the
/// script either runs and is done before the node gives up (200), or refuses to start
/// (503, nothing applied). A reply of 503 for a write that was applied would make a client
/// that retries apply it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_means_nothing_was_applied_whenever_redis_wakes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut outcomes = Vec::new();
    for (trial, thaw_after) in [300u64, 1100, 1300, 1600, 2500, 5000]
        .into_iter()
        .enumerate()
    {
        let first = trial as u64 * 100_000;
        let snapshots: Vec<Value> = (first..first + 10_000)
            .map(|id| snapshot(id, 2.0))
            .collect();
        let body = json!({"source": "betpawa", "snapshots": snapshots});
        eventually("healthy", || async {
            a.get("/healthz").await.0 == 200 && b.get("/healthz").await.0 == 200
        })
        .await;
        redis.freeze();
        let request = {
            let (http, url) = (a.http.clone(), a.url("/api/odds"));
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status() })
        };
        tokio::time::sleep(Duration::from_millis(thaw_after)).await;
        redis.thaw();
        let status = request.await.unwrap().as_u16();
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
        assert_eq!(
            applied,
            status == 200,
            "woken after {thaw_after} ms: {status}, applied: {applied}"
        );
        outcomes.push(status);
    }
    assert!(
        outcomes.contains(&200) && outcomes.contains(&503),
        "{outcomes:?}"
    );
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
