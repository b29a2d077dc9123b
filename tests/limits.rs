//! Configurable limits and the reply each gives when hit, over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::{SseClient, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn connections_over_the_limit_get_503_before_the_upgrade() {
    let server = TestServer::with(|c| c.max_connections = 2).await;
    let (first, _) = server.ws_acked("").await;
    let (_second, _) = server.ws_acked("").await;

    let url = format!("ws://{}/api/ws", server.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }

    // A slot frees up when a connection ends, however it ends.
    drop(first);
    server
        .wait_for_stats(|s| s["active_connections"] == 1)
        .await;
    let (_third, ack) = server.ws_acked("").await;
    assert_eq!(ack["type"], "connection_ack");
}

#[tokio::test]
async fn a_client_over_its_message_rate_is_told_then_closed_with_1008_if_it_goes_on() {
    let server = TestServer::with(|c| {
        c.client_rate = 1.0;
        c.client_burst = 3;
    })
    .await;
    let (mut client, _) = server.ws_acked("").await;
    let (mut neighbour, _) = server.ws_acked("").await;
    for _ in 0..3 {
        client.ping_pong().await;
    }
    client.send_json(json!({"type": "ping"})).await;
    let refusal = client.recv().await;
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["code"], "rate_limited");

    // Ignoring the refusals: a burst's worth more ends the connection.
    for _ in 0..4 {
        client.send_json(json!({"type": "ping"})).await;
    }
    assert_eq!(client.recv_close().await, Some(CloseCode::Policy));

    // Nobody else was affected.
    neighbour.ping_pong().await;
    server
        .wait_for_stats(|s| s["active_connections"] == 1)
        .await;
}

#[tokio::test]
async fn a_client_within_its_rate_is_never_refused() {
    let server = TestServer::with(|c| {
        c.client_rate = 50.0;
        c.client_burst = 5;
    })
    .await;
    let (mut client, _) = server.ws_acked("").await;
    for _ in 0..20 {
        client.ping_pong().await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn subscriptions_beyond_the_topic_limit_are_refused_and_change_nothing() {
    let server = TestServer::with(|c| c.max_topics_per_connection = 1).await;
    let (mut client, ack) = server.ws_acked("?topics=odds_updates").await;
    assert_eq!(ack["topics"], json!(["odds_updates"]));
    client
        .send_json(json!({"type": "subscribe", "topics": ["scrape_progress"]}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "too_many_topics");
    client
        .send_json(json!({"type": "subscribe", "topics": []}))
        .await;
    assert_eq!(client.recv().await["topics"], json!(["odds_updates"]));

    // Naming more topics than the limit is refused before the upgrade.
    let (status, body) = server.get("/api/ws?topics=").await;
    assert_eq!(status, 426, "a plain GET is not an upgrade: {body}");
    let url = format!(
        "ws://{}/api/ws?topics=odds_updates,scrape_progress",
        server.addr
    );
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }

    // Every topic (no `topics` in the query) gets as many as fit, and says so after the ack.
    let (mut client, ack) = server.ws_acked("").await;
    assert_eq!(ack["topics"], json!(["odds_updates"]));
    let notice = client.recv().await;
    assert_eq!(notice["code"], "too_many_topics", "{notice}");
    assert_eq!(client.until_pong().await, Vec::<Value>::new());
}

/// The status, error code and `Retry-After` of a refused `GET path`.
async fn refusal(server: &TestServer, path: &str) -> (u16, Value, Option<String>) {
    let response = reqwest::get(server.url(path)).await.unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        response.json::<Value>().await.unwrap()["error"]["code"].clone(),
        retry,
    )
}

/// Scrape streams are bounded, and so are the runs they start; joining a running run does
/// not count as starting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_streams_and_the_runs_they_start_are_bounded() {
    let server = TestServer::with(|c| {
        c.max_sse_streams = 1;
        c.max_scrapes_per_minute = 1;
        c.sim_events = 50;
        c.sim_latency_ms = 50;
    })
    .await;
    let mut first = SseClient::open(&server, "/api/scrape/stream").await;
    assert_eq!(first.next().await.unwrap()["phase"], "started");
    let busy = refusal(&server, "/api/scrape/stream").await;
    assert_eq!(busy, (503, json!("too_many_streams"), Some("1".into())));
    assert_eq!(first.collect().await.last().unwrap()["phase"], "completed");

    // The stream's slot is free again, but this minute's one start is spent.
    let (status, code, retry) = refusal(&server, "/api/scrape/stream").await;
    assert_eq!((status, code), (429, json!("too_many_scrapes")));
    assert!(retry.is_some());
}

/// A body that trickles in is cut off at `--request-timeout` with 408, freeing its ingest
/// slot; while it holds the only slot (`--max-ingests 1`), another ingest gets 503.
#[tokio::test]
async fn slow_bodies_time_out_and_ingests_are_bounded() {
    let server = TestServer::with(|c| {
        c.max_ingests = 1;
        c.request_timeout = Duration::from_millis(600);
    })
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /api/odds HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"so";
    slow.write_all(head.as_bytes()).await.unwrap();
    common::eventually("the slow body holds the ingest slot", || async {
        server.broker.slots.ingests.available_permits() == 0
    })
    .await;

    let (status, reply) = server
        .ingest(&json!({"source": "betpawa", "snapshots": []}))
        .await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (503, &json!("too_many_ingests"))
    );

    let started = Instant::now();
    let mut answer = String::new();
    let read = slow.read_to_string(&mut answer);
    tokio::time::timeout(common::WAIT, read)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cut off at the deadline"
    );
    server.ingest_ok("betpawa", &[1], 2.0).await;
}

/// Headers that never finish are cut off too, and open HTTP connections are bounded: at
/// `--max-http-connections` a new one is closed at once, and WebSockets still connect as soon
/// as the idle ones time out.
#[tokio::test]
async fn idle_and_excess_http_connections_are_closed() {
    // Long enough that the idle ones still hold their slots when the excess one arrives,
    // however busy the machine is.
    let server = TestServer::with(|c| {
        c.max_http_connections = 2;
        c.request_timeout = Duration::from_secs(2);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        idle.push(stream);
    }
    common::eventually("both idle connections hold a slot", || async {
        server.broker.slots.http_connections.available_permits() == 0
    })
    .await;
    let mut excess = TcpStream::connect(server.addr).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(common::WAIT, excess.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");

    for mut stream in idle {
        let read = tokio::time::timeout(common::WAIT, stream.read(&mut buffer)).await;
        assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "cut off: {read:?}");
    }
    let (_client, ack) = server.ws_acked("").await;
    assert_eq!(ack["type"], "connection_ack");
    // The excess one was refused on arrival, not cut off at the timeout.
    let metrics = server.metrics().await;
    let refused = "oddsbus_http_connections_refused_total 1\n";
    assert!(metrics.contains(refused), "{metrics}");
}
