//! CORS as browsers use it, over real HTTP: an origin `--allowed-origins` names (or the
//! broker's own) may read every route from its pages and is answered preflights; any other
//! origin gets no CORS headers, its reads are served as before and its writes refused.

mod common;

use common::TestServer;
use reqwest::header::{HeaderMap, ORIGIN};
use reqwest::Method;
use serde_json::json;

const ALLOWED: &str = "http://localhost:5173";
const OTHER: &str = "https://elsewhere.example";

async fn server() -> TestServer {
    let server = TestServer::with(|c| c.allowed_origins = vec![ALLOWED.into()]).await;
    server.ingest_ok("betpawa", &[7], 2.0).await;
    server
}

/// A request from a page at `origin`: its status and headers.
async fn from(server: &TestServer, method: Method, path: &str, origin: &str) -> (u16, HeaderMap) {
    let response = server
        .http
        .request(method, server.url(path))
        .header(ORIGIN, origin)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

const READS: [&str; 9] = [
    "/api/events",
    "/api/events/odds?ids=7",
    "/api/events/7/odds",
    "/api/ws/stats",
    "/healthz",
    "/oddsbus-client.js",
    "/oddsbus-client.d.ts",
    "/metrics",
    "/api/moves",
];

#[tokio::test]
async fn an_allowed_origin_reads_every_route_and_sees_the_etag() {
    let server = server().await;
    for path in READS {
        let (status, headers) = from(&server, Method::GET, path, ALLOWED).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(ALLOWED),
            "{path}"
        );
        let vary = header(&headers, "vary").unwrap_or_default();
        assert!(
            vary.to_ascii_lowercase().contains("origin"),
            "{path}: {vary}"
        );
    }
    let (_, headers) = from(&server, Method::GET, "/api/events/7/odds", ALLOWED).await;
    assert!(header(&headers, "etag").is_some());
    assert_eq!(
        header(&headers, "access-control-expose-headers").map(str::to_ascii_lowercase),
        Some("etag".into())
    );
    // The broker's own pages: their origin is the host they were served from.
    let own = format!("http://{}", server.addr);
    let (_, headers) = from(&server, Method::GET, "/api/events", &own).await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(own.as_str())
    );
}

#[tokio::test]
async fn a_preflight_is_answered_204_with_the_methods_and_headers() {
    let server = server().await;
    for path in ["/api/events/odds?ids=7", "/api/odds", "/api/scrape/stream"] {
        let response = server
            .http
            .request(Method::OPTIONS, server.url(path))
            .header(ORIGIN, ALLOWED)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, if-none-match",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204, "{path}");
        let headers = response.headers();
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            Some(ALLOWED)
        );
        let methods = header(headers, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("GET") && methods.contains("POST"),
            "{methods}"
        );
        let allowed = header(headers, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        for name in ["authorization", "content-type", "if-none-match"] {
            assert!(allowed.contains(name), "{allowed}");
        }
    }
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_its_reads_answer_and_its_writes_are_refused() {
    let server = server().await;
    for path in READS {
        let (status, headers) = from(&server, Method::GET, path, OTHER).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            None,
            "{path}"
        );
    }
    let response = server
        .http
        .request(Method::OPTIONS, server.url("/api/events"))
        .header(ORIGIN, OTHER)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        None
    );
    let write = server
        .http
        .post(server.url("/api/odds"))
        .header(ORIGIN, OTHER)
        .json(&json!({"source": "betpawa", "snapshots": [common::snapshot(8, 2.0)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status().as_u16(), 403);
    assert_eq!(header(write.headers(), "access-control-allow-origin"), None);
    let body: serde_json::Value = write.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden_origin", "{body}");
    // Without `Origin` (curl, a backend) nothing changes.
    assert_eq!(server.get("/api/events/7/odds").await.0, 200);
}
