//! The cache-update bridge and the dispatcher, observed through real WebSocket subscribers.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::{odds, TestServer};
use futures_util::StreamExt;
use oddsbus::Changes;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Acceptance scenario (b): one callback call per put with its source, a panicking callback
/// does not stop the others, and WebSocket subscribers receive the notifications.
#[tokio::test]
async fn callbacks_fire_per_put_survive_a_panic_and_reach_subscribers() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let cache = &server.broker.cache;

    cache.on_update(|_| panic!("a broken callback"));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    cache.on_update(move |changes: Changes<'_>| {
        let source = changes.source.to_owned();
        seen.lock()
            .unwrap()
            .push((changes.event_ids.to_vec(), source));
    });

    cache.put_betpawa_snapshot(100, 5100, odds(2.0));
    cache.put_competitor_snapshot(100, "sportybet", odds(2.1));

    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            (vec![100], "betpawa".to_owned()),
            (vec![100], "sportybet".to_owned())
        ]
    );
    let first = client.recv().await;
    let second = client.recv().await;
    assert_eq!(
        first["data"],
        json!({"event_ids": [100], "source": "betpawa", "count": 1})
    );
    assert_eq!(
        second["data"],
        json!({"event_ids": [100], "source": "sportybet", "count": 1})
    );
}

/// Puts made while the dispatcher cannot run (this test's single thread is busy making them)
/// are queued; the dispatcher then takes them all at once and sends one message per source.
#[tokio::test(flavor = "current_thread")]
async fn changes_queued_while_the_dispatcher_is_busy_arrive_merged_per_source() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;

    let puts = 1_000u64;
    let mut expected: Vec<(&str, Vec<u64>)> = vec![("betpawa", vec![]), ("sportybet", vec![])];
    for i in 0..puts {
        let (source, group) = if i % 2 == 0 {
            (0, "betpawa")
        } else {
            (1, "sportybet")
        };
        // Ids repeat (i % 300), each time with a new price, so every put is a change.
        let id = i % 300;
        server
            .broker
            .cache
            .put_competitor_snapshot(id, group, odds(1.5 + i as f64 / 100.0));
        if !expected[source].1.contains(&id) {
            expected[source].1.push(id);
        }
    }

    let mut messages = Vec::new();
    let mut received: Vec<(String, Vec<u64>)> = Vec::new();
    let total: usize = expected.iter().map(|(_, ids)| ids.len()).sum();
    let mut distinct_total = 0;
    while distinct_total < total {
        let message = client.recv().await;
        let data = &message["data"];
        let ids: Vec<u64> = serde_json::from_value(data["event_ids"].clone()).unwrap();
        assert_eq!(data["count"], ids.len());
        let distinct: HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "duplicate id within a message: {message}"
        );
        distinct_total += ids.len();
        received.push((data["source"].as_str().unwrap().to_owned(), ids));
        messages.push(message);
    }
    assert!(
        messages.len() < puts as usize,
        "{} messages for {puts} puts",
        messages.len()
    );
    // Everything was queued before the dispatcher ran: one message per source, ids in order
    // of first appearance.
    let expected: Vec<(String, Vec<u64>)> = expected
        .into_iter()
        .map(|(s, ids)| (s.to_owned(), ids))
        .collect();
    assert_eq!(received, expected);
    assert_eq!(client.until_pong().await, Vec::<Value>::new());
}

/// With coalescing off (the original design), every put is its own message.
#[tokio::test(flavor = "current_thread")]
async fn with_coalescing_off_every_put_is_its_own_message() {
    let server = TestServer::with(|c| c.no_coalesce = true).await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    for id in 0..50u64 {
        server
            .broker
            .cache
            .put_competitor_snapshot(id, "bet9ja", odds(2.0));
    }
    for id in 0..50u64 {
        let message = client.recv().await;
        assert_eq!(message["data"]["event_ids"], json!([id]));
    }
}

/// An idle dispatcher publishes a lone change at once rather than waiting for company.
#[tokio::test]
async fn a_single_change_on_an_idle_broker_is_sent_on_its_own() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    for id in [1u64, 2, 3] {
        server.ingest_ok("betpawa", &[id], 2.0).await;
        let message = client.recv().await;
        assert_eq!(message["data"]["event_ids"], json!([id]));
    }
}

/// However many ids a flood merges, no `odds_update` is larger than 64 KiB (clients whose
/// libraries refuse big frames stay connected), and every id still arrives, in order.
#[tokio::test]
async fn a_flood_is_split_into_frames_under_64_kib() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    let first = (1u64 << 53) - 20_000; // 16-digit ids, the longest there are
    let ids: Vec<u64> = (first..first + 20_000).collect();
    for batch in ids.chunks(10_000) {
        server.ingest_ok("betpawa", batch, 2.0).await;
    }
    let mut received = Vec::new();
    while received.len() < ids.len() {
        let frame = match tokio::time::timeout(common::WAIT, client.stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            other => panic!("expected a text frame, got {other:?}"),
        };
        assert!(frame.len() <= 64 * 1024, "a frame of {} bytes", frame.len());
        let update: Value = serde_json::from_str(&frame).unwrap();
        let event_ids = update["data"]["event_ids"].as_array().unwrap();
        received.extend(event_ids.iter().map(|id| id.as_u64().unwrap()));
    }
    assert_eq!(received, ids);
}
