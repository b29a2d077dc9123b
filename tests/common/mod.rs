//! Shared test helpers: a real oddsbus on an ephemeral port, and real clients for it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod postgres;
pub mod redis;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use oddsbus::{Broker, Config, Market, Outcome, Server, Snapshot, Timestamp};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The epoch and offset a reply's `positions` give `topic`.
pub fn position(reply: &Value, topic: &str) -> (String, u64) {
    let position = &reply["positions"][topic];
    let epoch = position["epoch"].as_str().expect("an epoch").to_owned();
    (epoch, position["offset"].as_u64().expect("an offset"))
}

/// Polls `check` until it holds, failing after [`WAIT`]: for what the server does in its own
/// time (a connection registering, a node following the log, a slot taken).
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free TCP port for a server a test starts itself (redis-server, postgres). It lies
/// below the kernel's ephemeral range (32768 and up), so that no outgoing connection and no
/// other test's listener on port 0 takes it between this check and the start, nor while that
/// server restarts on it. Two tests may still pick the same one: the caller checks that the
/// server it started is the one answering.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_768);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// How long a test watches for a message it expects not to arrive.
pub const QUIET: Duration = Duration::from_millis(200);

/// The embedded defaults with periodic scrapes off, so that only what a test does happens.
pub fn config() -> Config {
    Config {
        scrape_interval: Duration::ZERO,
        ..Config::default()
    }
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub broker: Broker,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), String>>>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// Starts a server with the embedded defaults, less periodic scrapes.
    pub async fn start() -> TestServer {
        TestServer::with_config(config()).await
    }

    /// Starts a server with the test defaults ([`config`]) changed by `change`, e.g.
    /// `TestServer::with(|c| c.max_connections = 2)`.
    pub async fn with(change: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = config();
        change(&mut config);
        TestServer::with_config(config).await
    }

    /// Starts a server with `config` (its `listen` is ignored: the port is ephemeral).
    pub async fn with_config(config: Config) -> TestServer {
        TestServer::with_server(Server::new(config)).await
    }

    /// Starts a server built by the test (e.g. with its own scrape source).
    pub async fn with_server(server: Server) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = server.broker().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(listener, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            broker,
            shutdown: Some(tx),
            handle: Some(handle),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects a WebSocket client to `/api/ws{query}` (query includes its `?`).
    pub async fn ws(&self, query: &str) -> WsClient {
        let url = format!("ws://{}/api/ws{}", self.addr, query);
        let (stream, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(response.status(), 101);
        WsClient { stream }
    }

    /// Connects and consumes the `connection_ack`, returning it too.
    pub async fn ws_acked(&self, query: &str) -> (WsClient, Value) {
        let mut client = self.ws(query).await;
        let ack = client.recv().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        (client, ack)
    }

    /// GETs `path`, checks for 200 and a content type starting with `content_type`.
    pub async fn get_ok(&self, path: &str, content_type: &str) -> reqwest::Response {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let got = response.headers()["content-type"].to_str().unwrap();
        assert!(got.starts_with(content_type), "{path}: {got}");
        response
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self
            .get_ok("/metrics", "application/openmetrics-text")
            .await;
        response.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// POSTs `body` (as raw bytes) to `/api/odds`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/api/odds"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn ingest(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string()).await
    }

    /// POSTs `body` to `/api/odds?wait=persisted`.
    pub async fn ingest_persisted(&self, body: &Value) -> (u16, Value) {
        let url = self.url("/api/odds?wait=persisted");
        let response = self.http.post(url).json(body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Ingests one snapshot per id, all from `source`, and checks the reply is 200.
    pub async fn ingest_ok(&self, source: &str, ids: &[u64], price: f64) -> Value {
        let snapshots: Vec<Value> = ids.iter().map(|&id| snapshot(id, price)).collect();
        let (status, reply) = self
            .ingest(&json!({"source": source, "snapshots": snapshots}))
            .await;
        assert_eq!(status, 200, "{reply}");
        reply
    }

    pub async fn stats(&self) -> Value {
        self.get("/api/ws/stats").await.1
    }

    /// Polls the stats until `check` holds (connections register and leave asynchronously).
    pub async fn wait_for_stats(&self, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats never matched: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Publishes `frames` `odds_update` messages of 2,000 ids each (about 14 KB) straight onto
    /// the topic channel, as the dispatcher would: enough bytes to fill any client's socket
    /// buffers.
    pub fn publish_bulky(&self, frames: u64) {
        use oddsbus::{encode, OddsUpdate, ServerMessage};
        let ids: Vec<u64> = (1_000_000..1_002_000).collect();
        for _ in 0..frames {
            let update = |offset| {
                encode(&ServerMessage::OddsUpdate {
                    data: OddsUpdate {
                        event_ids: &ids,
                        source: "betpawa",
                        count: ids.len(),
                    },
                    offset,
                })
            };
            self.broker
                .manager
                .publish(oddsbus::Topic::OddsUpdates, update);
        }
    }

    /// Triggers shutdown and waits for the server to finish it.
    pub async fn stop(mut self) {
        self.shutdown.take().map(|tx| tx.send(()));
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(WAIT, handle)
                .await
                .expect("server did not shut down in time")
                .unwrap()
                .expect("the server refused to start");
        }
    }
}

/// Starts the built `oddsbus` binary on an ephemeral port with JSON logs at `log_filter`, and
/// waits for its `server.listening` line. Returns the process, its address and the rest of
/// its log lines (read them, or the binary blocks once the pipe is full).
pub fn spawn_binary(
    args: &[&str],
    log_filter: &str,
) -> (
    std::process::Child,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oddsbus"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env("ODDSBUS_LOG", log_filter)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the oddsbus binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("binary exited before listening")
            .expect("log line");
        let log: Value = serde_json::from_str(&line).expect("log lines are JSON");
        if log["event"] == "server.listening" {
            break log["addr"].as_str().expect("addr").to_owned();
        }
    };
    (child, addr, lines)
}

/// Runs the built `oddsbus` binary with `args` and logs off until it exits (within
/// [`WAIT`]): for starts it must refuse. Returns its exit status and what it wrote to stderr.
pub async fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_oddsbus"))
            .args(args)
            .env("ODDSBUS_LOG", "off")
            .output()
    });
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("the binary exits at once")
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// A process the test started (a node run as a binary), killed if the test fails first.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `--auth-secret` of the tests that turn tokens on: 32 bytes, the shortest allowed.
pub const SECRET: &str = "a-test-secret-of-thirty-two-byte";

/// A token for `claims` (with an `exp` ten minutes ahead unless given), signed with HS256.
pub fn token(claims: Value, secret: &str) -> String {
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
pub fn signed(alg: &str, claims: &Value, secret: &str) -> String {
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

/// The same snapshot as [`snapshot`], typed, for puts straight into the cache.
pub fn odds(price: f64) -> Snapshot {
    let outcome = |name: &str, odds: f64| Outcome {
        name: name.into(),
        odds,
    };
    Snapshot {
        bookmaker_id: None,
        captured_at: Timestamp::now(),
        markets: vec![Market {
            market_id: "1x2".into(),
            name: "1X2".into(),
            line: None,
            outcomes: vec![outcome("1", price), outcome("X", 3.2), outcome("2", 3.5)],
        }],
        event: None,
    }
}

/// An odds snapshot in the ingest shape, with a 1X2 market priced from `price`.
pub fn snapshot(event_id: u64, price: f64) -> Value {
    json!({
        "event_id": event_id,
        "markets": [{
            "market_id": "1x2", "name": "1X2", "line": null,
            "outcomes": [
                {"name": "1", "odds": price},
                {"name": "X", "odds": 3.2},
                {"name": "2", "odds": 3.5}
            ]
        }]
    })
}

/// A snapshot of `event_id` in the ingest shape with `markets` markets (`market 0`, ...) of
/// `outcomes` outcomes each (`outcome 0`, ...), all at 2.0: a large one, for bounds.
pub fn wide_snapshot(event_id: u64, markets: usize, outcomes: usize) -> Value {
    let outcomes: Vec<Value> = (0..outcomes)
        .map(|i| json!({"name": format!("outcome {i}"), "odds": 2.0}))
        .collect();
    let markets: Vec<Value> = (0..markets)
        .map(|m| json!({"market_id": format!("market {m}"), "name": "M", "outcomes": outcomes}))
        .collect();
    json!({"event_id": event_id, "markets": markets})
}

/// A WebSocket client speaking JSON text frames.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next message, which must be a JSON text frame arriving within [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).unwrap()
    }

    /// The next message's text, which must arrive within [`WAIT`].
    /// The server's heartbeat pings (every 20 s by default, so in any test a busy machine
    /// makes long) are answered by tungstenite and skipped.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
                Err(_) => panic!("no message within {WAIT:?}"),
            }
        }
    }

    /// The next message whose `type` is `kind`, skipping others (e.g. periodic traffic).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Reads `odds_update` messages until every one of `ids` has been named, and returns the
    /// offset of the last: the topic's position once the dispatcher has published what the
    /// ingests of `ids` changed (an ingest answers before that).
    pub async fn recv_ids(&mut self, ids: &[u64]) -> u64 {
        let mut missing: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        loop {
            let update = self.recv_type("odds_update").await;
            for id in update["data"]["event_ids"].as_array().expect("event_ids") {
                missing.remove(&id.as_u64().expect("an id"));
            }
            if missing.is_empty() {
                return update["offset"].as_u64().expect("an offset");
            }
        }
    }

    /// Sends a ping and asserts that the very next message is its pong: the connection is
    /// alive, answering, and had nothing else queued.
    pub async fn ping_pong(&mut self) {
        self.send_json(json!({"type": "ping"})).await;
        let reply = self.recv().await;
        assert_eq!(reply["type"], "pong", "{reply}");
    }

    /// Sends a ping and returns every message that arrives before the pong: since the
    /// connection answers in order, this is everything the server had sent before it.
    pub async fn until_pong(&mut self) -> Vec<Value> {
        self.send_json(json!({"type": "ping"})).await;
        let mut before = Vec::new();
        loop {
            let message = self.recv().await;
            if message["type"] == "pong" {
                return before;
            }
            before.push(message);
        }
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.stream.next()).await {
            panic!("expected silence, got {message:?}");
        }
    }

    /// Reads until the server closes, returning the close code (control frames skipped).
    pub async fn recv_close(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(WAIT, self.stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => panic!("socket error before close: {error}"),
                Ok(None) => return None,
                Err(_) => panic!("no close within {WAIT:?}"),
            }
        }
    }
}

/// A Server-Sent Events client that yields each `data:` payload as JSON.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// The `id` of the last event read, as a browser keeps it for `Last-Event-ID`.
    pub last_id: Option<String>,
}

impl SseClient {
    /// Opens `path` and checks that it is an event stream.
    pub async fn open(server: &TestServer, path: &str) -> SseClient {
        SseClient::from(server.get_ok(path, "text/event-stream").await)
    }

    /// Reconnects to `path` as EventSource does, with `Last-Event-ID`; the response, which
    /// may be a stream (use `SseClient::from`) or 204.
    pub async fn resume(server: &TestServer, path: &str, last_id: &str) -> reqwest::Response {
        let request = server
            .http
            .get(server.url(path))
            .header("last-event-id", last_id);
        request.send().await.unwrap()
    }

    /// The stream of a response.
    pub fn from(response: reqwest::Response) -> SseClient {
        assert_eq!(response.status(), 200);
        SseClient {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            last_id: None,
        }
    }

    /// The next event's data, or `None` once the server ends the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let id = block.lines().find_map(|line| line.strip_prefix("id:"));
                if let Some(id) = id {
                    self.last_id = Some(id.trim().to_owned());
                }
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(serde_json::from_str(&data.join("\n")).unwrap());
            }
            match tokio::time::timeout(WAIT, self.body.next()).await {
                Ok(Some(chunk)) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                Ok(None) => return None,
                Err(_) => panic!("SSE stream silent for {WAIT:?}"),
            }
        }
    }

    /// Every remaining event until the server ends the stream.
    pub async fn collect(mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The phases of a list of progress objects, with their platforms, leaving out
/// `platform_progress` (how many there are depends on timing).
pub fn phases(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["phase"] != "platform_progress")
        .map(|e| match e["platform"].as_str() {
            Some(platform) => format!("{}:{platform}", e["phase"].as_str().unwrap()),
            None => e["phase"].as_str().unwrap().to_owned(),
        })
        .collect()
}
