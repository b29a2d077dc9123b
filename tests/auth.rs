//! Access control with `--auth-secret` and `--allowed-origins`, over real sockets.

mod common;

use common::{signed, snapshot, token, SseClient, TestServer, SECRET};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Error as WsError;

async fn secured() -> TestServer {
    TestServer::with(|c| {
        c.auth_secret = Some(SECRET.into());
        c.allowed_origins = vec!["https://board.example".into()];
    })
    .await
}

/// The HTTP status a WebSocket handshake to `path` gets, with `headers`.
async fn handshake_status(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
        request
            .headers_mut()
            .insert(name.unwrap(), value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn websockets_need_a_valid_token_before_the_upgrade() {
    let server = secured().await;
    let good = token(json!({"sub": "board"}), SECRET);
    let expired = token(json!({"exp": 1_000_000}), SECRET);
    let forged = token(json!({}), "another-secret");
    let later = json!({"exp": 4_000_000_000u64});
    let other_algorithm = signed("HS512", &later, SECRET);
    let unsigned = format!(
        "{}.",
        signed("none", &later, SECRET).rsplit_once('.').unwrap().0
    );

    assert_eq!(handshake_status(&server, "/api/ws", &[]).await, 401);
    assert_eq!(
        handshake_status(&server, &format!("/api/ws?token={expired}"), &[]).await,
        401
    );
    assert_eq!(
        handshake_status(&server, &format!("/api/ws?token={forged}"), &[]).await,
        401
    );
    assert_eq!(
        handshake_status(&server, "/api/ws?token=garbage", &[]).await,
        401
    );
    for refused in [&other_algorithm, &unsigned] {
        let path = format!("/api/ws?token={refused}");
        assert_eq!(
            handshake_status(&server, &path, &[]).await,
            401,
            "{refused}"
        );
    }
    assert_eq!(
        handshake_status(&server, &format!("/api/ws?token={good}"), &[]).await,
        101
    );
    let bearer = format!("Bearer {good}");
    assert_eq!(
        handshake_status(&server, "/api/ws", &[("authorization", &bearer)]).await,
        101
    );
}

#[tokio::test]
async fn topic_claims_restrict_what_a_connection_may_subscribe_to() {
    let server = secured().await;
    let progress_only = token(json!({"topics": ["scrape_progress"]}), SECRET);

    // By default, every topic the token allows.
    let (mut client, ack) = server.ws_acked(&format!("?token={progress_only}")).await;
    assert_eq!(ack["topics"], json!(["scrape_progress"]));
    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_updates"]}))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["topics"], json!(["scrape_progress"]), "unchanged");
    assert_eq!(client.recv().await["code"], "forbidden");

    // Asking for a forbidden topic by name is refused before the upgrade.
    let path = format!("/api/ws?topics=odds_updates&token={progress_only}");
    assert_eq!(handshake_status(&server, &path, &[]).await, 403);
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused() {
    let server = secured().await;
    let path = format!("/api/ws?token={}", token(json!({}), SECRET));
    assert_eq!(
        handshake_status(&server, &path, &[("origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(
        handshake_status(&server, &path, &[("origin", "https://board.example")]).await,
        101
    );
    assert_eq!(
        handshake_status(&server, &path, &[]).await,
        101,
        "not a browser"
    );

    // Operators see refusals by reason.
    let metrics = server.metrics().await;
    let refused = r#"oddsbus_connections_refused_total{reason="forbidden_origin"} 1"#;
    assert!(metrics.contains(refused), "{metrics}");
}

#[tokio::test]
async fn ingest_needs_a_bearer_token_with_the_ingest_claim() {
    let server = secured().await;
    let body = json!({"source": "betpawa", "snapshots": [snapshot(1, 2.0)]});
    let post = |authorization: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(server.url("/api/odds"))
            .json(&body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };

    let response = post(None).await.unwrap();
    assert_eq!(response.status(), 401);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "unauthorized");

    let reader = token(json!({"sub": "board"}), SECRET);
    let response = post(Some(format!("Bearer {reader}"))).await.unwrap();
    assert_eq!(response.status(), 403);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "forbidden");
    assert_eq!(server.get("/api/events").await.1, json!({"events": []}));

    let scraper = token(json!({"sub": "scraper", "ingest": true}), SECRET);
    let response = post(Some(format!("Bearer {scraper}"))).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// A token is refused before its `nbf` as after its `exp`.
#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let server = secured().await;
    let early = token(
        json!({"nbf": 4_000_000_000u64, "exp": 4_000_000_600u64}),
        SECRET,
    );
    let path = format!("/api/ws?token={early}");
    assert_eq!(handshake_status(&server, &path, &[]).await, 401);
}

/// The status and error code of `GET /api/scrape/stream` with `token`, when refused.
async fn scrape_refusal(server: &TestServer, token: Option<&str>) -> (u16, Value) {
    let path = match token {
        Some(token) => format!("/api/scrape/stream?token={token}"),
        None => "/api/scrape/stream".to_owned(),
    };
    let response = reqwest::get(server.url(&path)).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json::<Value>().await.unwrap()["error"]["code"].clone(),
    )
}

/// With tokens on, starting a scrape run needs the `scrape` claim and following one needs
/// `scrape_progress`; a token without the claim may still join a run that is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_runs_need_the_scrape_claim_to_start_and_the_topic_to_follow() {
    let server = TestServer::with(|c| {
        c.auth_secret = Some(SECRET.into());
        c.sim_latency_ms = 50;
    })
    .await;
    let odds_only = token(json!({"topics": ["odds_updates"], "scrape": true}), SECRET);
    let reader = token(json!({"sub": "board"}), SECRET);
    let operator = token(json!({"sub": "operator", "scrape": true}), SECRET);

    let refused = [
        (None, 401, "unauthorized"),
        (Some(odds_only.as_str()), 403, "forbidden"),
        (Some(reader.as_str()), 403, "forbidden"),
    ];
    for (token, status, code) in refused {
        assert_eq!(
            scrape_refusal(&server, token).await,
            (status, json!(code)),
            "{token:?}"
        );
    }
    assert!(server.broker.cache.is_empty(), "no run started");

    let path = format!("/api/scrape/stream?token={operator}");
    let mut started = SseClient::open(&server, &path).await;
    assert_eq!(started.next().await.unwrap()["phase"], "started");
    // The run is running: a reader joins it, from its first step.
    let joined = SseClient::open(&server, &format!("/api/scrape/stream?token={reader}")).await;
    let steps = joined.collect().await;
    assert_eq!(steps.first().unwrap()["phase"], "started");
    assert_eq!(steps.last().unwrap()["phase"], "completed");
}

/// A page on another site cannot make a browser write odds, start scrapes or open a
/// WebSocket, with tokens off; the broker's own pages, listed origins and non-browser
/// clients can.
#[tokio::test]
async fn requests_from_other_sites_pages_are_refused() {
    let server =
        TestServer::with(|c| c.allowed_origins = vec!["https://board.example".into()]).await;
    let own = format!("http://{}", server.addr);
    let body = json!({"source": "betpawa", "snapshots": [snapshot(1, 2.0)]}).to_string();
    let post = |origin: Option<&str>| {
        let mut request = reqwest::Client::new()
            .post(server.url("/api/odds"))
            .header("content-type", "text/plain")
            .body(body.clone());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let evil = post(Some("https://evil.example")).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert_eq!(
        evil.json::<Value>().await.unwrap()["error"]["code"],
        "forbidden_origin"
    );
    assert!(server.broker.cache.is_empty(), "nothing written");
    for origin in [None, Some(own.as_str()), Some("https://board.example")] {
        assert_eq!(post(origin).await.unwrap().status(), 200, "{origin:?}");
    }

    let scrape = reqwest::Client::new()
        .get(server.url("/api/scrape/stream"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 403);
    let ws = [("origin", "https://evil.example")];
    assert_eq!(handshake_status(&server, "/api/ws", &ws).await, 403);
    let ws = [("origin", own.as_str())];
    assert_eq!(handshake_status(&server, "/api/ws", &ws).await, 101);
}

/// A connection lasts as long as its token: at its `exp` (plus the 5 s leeway) it is closed
/// with 1008, and the reason says why.
#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let server = secured().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Expired 4 s ago: still within the leeway, for about a second more.
    let short = token(json!({"exp": now - 4}), SECRET);
    let (mut client, _) = server.ws_acked(&format!("?token={short}")).await;
    let long = token(json!({}), SECRET);
    let (mut other, _) = server.ws_acked(&format!("?token={long}")).await;
    assert_eq!(client.recv_close().await, Some(CloseCode::Policy));
    other.ping_pong().await;
    let closed = r#"oddsbus_connections_closed_total{reason="token_expired"} 1"#;
    common::eventually("counted by its reason", || async {
        server.metrics().await.contains(closed)
    })
    .await;
}

/// The members' list names the nodes' addresses: with tokens on, it needs one.
#[tokio::test]
async fn the_cluster_members_need_a_token() {
    let server = secured().await;
    assert_eq!(server.get("/api/cluster").await.0, 401);
    let response = server
        .http
        .get(server.url("/api/cluster"))
        .bearer_auth(token(json!({}), SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A browser that cannot set headers offers its token as a subprotocol, so no URL carries
/// it: `oddsbus.bearer` plus `oddsbus.token.JWT`, answered with `oddsbus.bearer`.
#[tokio::test]
async fn a_token_offered_as_a_subprotocol_admits_the_websocket() {
    let server = secured().await;
    let good = token(json!({"sub": "board"}), SECRET);
    let offer = |token: &str| {
        let mut request = format!("ws://{}/api/ws", server.addr)
            .into_client_request()
            .unwrap();
        let protocols = format!("oddsbus.bearer, oddsbus.token.{token}");
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let (_, response) = offer(&good).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "oddsbus.bearer"
    );
    let forged = token(json!({}), "another-secret");
    match offer(&forged).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let token_only = format!("oddsbus.token.{good}");
    assert_eq!(
        handshake_status(
            &server,
            "/api/ws",
            &[("sec-websocket-protocol", &token_only)]
        )
        .await,
        401,
        "the token counts only with oddsbus.bearer offered"
    );
}
