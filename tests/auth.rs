//! Access control with `--auth-secret` and `--allowed-origins`, over real sockets.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{snapshot, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const SECRET: &str = "test-secret";

/// A token for `claims` (with an `exp` ten minutes ahead unless given), signed with HS256.
fn token(claims: Value, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = claims;
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now + 600);
    }
    signed("HS256", &claims, secret)
}

/// A JSON Web Token written out by hand (RFC 7519), so the server is checked against the
/// format rather than against the library it uses: the header names `alg`, the signature is
/// always HMAC-SHA256 of `header.payload`.
fn signed(alg: &str, claims: &Value, secret: &str) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let input = format!(
        "{}.{}",
        part(&json!({"alg": alg, "typ": "JWT"})),
        part(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

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
    let refused = r#"oddsbus_connections_refused_total{reason="forbidden"} 1"#;
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
