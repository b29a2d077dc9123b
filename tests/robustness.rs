//! Clients that stop reading or stop answering, over real sockets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A client that is connected but never reads (so never answers a ping) is dropped after the
/// heartbeat timeout; a client that reads keeps receiving pings and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_drop_a_client_that_never_answers_and_keep_one_that_does() {
    // A timeout long enough that a busy machine never delays a pong past it.
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_secs(1);
    })
    .await;
    let (mut alive, _) = server.ws_acked("?topics=odds_updates").await;
    let (_silent, _) = server.ws_acked("?topics=odds_updates").await;
    assert_eq!(server.stats().await["active_connections"], 2);

    // Reading lets tungstenite answer each ping with a pong.
    let pings = Arc::new(AtomicUsize::new(0));
    let seen = pings.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = alive.stream.next().await {
            if message.is_ping() {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    server
        .wait_for_stats(|s| s["active_connections"] == 1)
        .await;
    // The live one has outlived the timeout once; let it answer more pings, then check again.
    let answered = pings.load(Ordering::Relaxed);
    assert!(answered >= 2, "pinged every 100 ms: {answered}");
    common::eventually("more pings", || async {
        pings.load(Ordering::Relaxed) >= answered + 5
    })
    .await;
    assert_eq!(
        server.stats().await["active_connections"],
        1,
        "the live one stays"
    );
    reader.abort();
}

/// A client that stops reading fills its socket buffers; once a write has made no progress
/// for the stuck timeout it is closed with 1008, and a client that reads carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1008() {
    let server = TestServer::with(|c| c.stuck_timeout = Duration::from_millis(500)).await;
    let (mut stuck, _) = server.ws_acked("?topics=odds_updates").await;
    let (mut reader, _) = server.ws_acked("?topics=odds_updates").await;
    let draining = tokio::spawn(async move {
        while let Some(Ok(_)) = reader.stream.next().await {}
        reader
    });

    // About 56 MiB of frames: far more than loopback socket buffers hold.
    server.publish_bulky(4_096);
    server
        .wait_for_stats(|s| s["active_connections"] == 1)
        .await;

    // What the stuck client finds when it reads again: frames, then the end of the
    // connection, with a 1008 close frame if it fit in the buffers.
    let mut close = None;
    loop {
        match tokio::time::timeout(common::WAIT, stuck.stream.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => close = frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => break,
            Err(_) => panic!("the stuck client's connection never ended"),
        }
    }
    assert!(matches!(close, None | Some(CloseCode::Policy)), "{close:?}");

    // The one left is the reader, and the broker still answers newcomers.
    let stats = server.stats().await;
    assert_eq!(
        stats["topics"],
        json!({"alerts": 0, "odds_changes": 0, "odds_updates": 1, "scrape_progress": 0})
    );
    assert!(!draining.is_finished(), "the reader is still connected");
    draining.abort();
    let (mut fresh, _) = server.ws_acked("?topics=odds_updates").await;
    assert_eq!(fresh.until_pong().await, Vec::<Value>::new());
}

/// An ingest still arriving when shutdown starts is finished and answered 200, and its
/// notification reaches the subscriber before the 1001 close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_an_ingest_in_flight_and_delivers_it() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;

    // The body arrives in two parts; shutdown begins between them.
    let body = json!({"source": "betpawa", "snapshots": [common::snapshot(4242, 2.5)]}).to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let (first, second) = (first.to_owned(), second.to_owned());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let parts = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = rx.await;
            Ok(second)
        }),
    );
    let url = server.url("/api/odds");
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body(reqwest::Body::wrap_stream(parts))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    common::eventually("the ingest is being handled", || async {
        server.broker.slots.ingests.available_permits() < server.broker.config.max_ingests
    })
    .await;
    let shutdown = server.broker.shutdown.clone();
    let stopping = tokio::spawn(server.stop());
    shutdown.cancelled().await;
    let _ = tx.send(()); // the rest of the body, after shutdown began
    assert_eq!(request.await.unwrap().unwrap(), 200);

    let update = client.recv().await;
    assert_eq!(update["data"]["event_ids"], json!([4242]));
    assert_eq!(client.recv_close().await, Some(CloseCode::Away));
    stopping.await.unwrap();
}

/// Sends `count` pings without reading anything, so they sit unread in the server's socket.
async fn flood(client: &mut common::WsClient, count: usize) {
    for _ in 0..count {
        client
            .stream
            .feed(Message::text(r#"{"type":"ping"}"#))
            .await
            .unwrap();
    }
    client.stream.flush().await.unwrap();
}

/// Every close the server starts reaches a client that reads, even when the client had sent
/// far more than the server read: the server stops writing, reads until the client's close,
/// and only then drops the socket (a socket dropped with unread data sends a TCP reset,
/// which destroyed the close frame: 100 pings in a burst used to end in 1006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_the_server_starts_reaches_a_client_that_reads() {
    // 1008: a flood past the rate limit.
    let server = TestServer::with(|c| {
        c.client_rate = 1.0;
        c.client_burst = 40;
    })
    .await;
    for count in [81, 100, 300] {
        let (mut client, _) = server.ws_acked("").await;
        flood(&mut client, count).await;
        assert_eq!(
            client.recv_close().await,
            Some(CloseCode::Policy),
            "{count} pings"
        );
    }

    // 1009: a message over the limit, behind a burst the server had not read yet.
    let server = TestServer::with(|c| c.max_frame_bytes = 1024).await;
    let (mut client, _) = server.ws_acked("").await;
    flood(&mut client, 30).await;
    client
        .send_text(&format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(4096)
        ))
        .await;
    flood(&mut client, 30).await;
    assert_eq!(client.recv_close().await, Some(CloseCode::Size));

    // 1001: shutdown while the client has sent what the server will never read.
    let server = TestServer::with(|c| c.client_burst = 10_000).await;
    let (mut client, _) = server.ws_acked("").await;
    flood(&mut client, 300).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(client.recv_close().await, Some(CloseCode::Away));
    stopping.await.unwrap();
}
