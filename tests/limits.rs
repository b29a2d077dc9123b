//! Configurable limits and the reply each gives when hit, over real sockets.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};
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
