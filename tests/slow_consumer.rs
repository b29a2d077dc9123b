//! The slow-consumer scenario, end to end against the built binary so that its memory can be
//! read from `/proc`: one client that never reads and 50 that do, while 100,000 event updates
//! are ingested over HTTP.
//!
//! What must hold: every reader receives every updated event id, exactly once and in order;
//! the stuck client is resynced or closed (1008) rather than buffered for; and the server's
//! peak RSS stays within [`RSS_GROWTH_BOUND`] of what it used before the updates began.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const READERS: usize = 50;
const EVENTS: u64 = 100_000;
const PER_REQUEST: u64 = 100;
/// Large ids make every notification about 17 bytes on the wire.
const FIRST_ID: u64 = 1_000_000_000_000_000;

/// The most the server's peak RSS may grow while the updates run. Each client is sent about
/// 2 MB of frames, 100 MB over all 51; what the server may hold for them is the topic ring
/// (1,024 frames shared by all) plus a 64 KiB write buffer per connection, about 5 MB, and
/// the ingest bodies in flight.
const RSS_GROWTH_BOUND: u64 = 16 * 1024 * 1024;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        let (child, addr, lines) = common::spawn_binary(
            &[
                "--scrape-interval",
                "0",
                "--stuck-timeout",
                "1",
                "--send-buffer-bytes",
                "65536",
                // The topic logs are full after the first round of ingests, so that the
                // second one replaces their frames rather than grows them: the growth
                // measured is the clients'. (Each log's memory is bounded by this flag.)
                "--history-bytes",
                "4194304",
                // The updates move a price by 20%: no alert, so that the growth measured is
                // the clients', not the analysis's recent alerts.
                "--alert-thresholds",
                "50,75,100",
            ],
            "warn,oddsbus::server=info",
        );
        // Keep draining the logs so the broker never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Broker { child, addr }
    }

    /// `VmRSS` or `VmHWM` (peak) of the broker process, in bytes.
    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"));
        kib * 1024
    }

    /// Resets `VmHWM` to the current RSS, so that the peak measures only what follows.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("/proc/<pid>/clear_refs");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `odds_updates` and reads the ack. `recv_buffer` shrinks the socket's receive
/// buffer, as on a phone with a slow link.
async fn subscribe(addr: &str, recv_buffer: Option<u32>) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    }
    let stream = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    let url = format!("ws://{addr}/api/ws?topics=odds_updates");
    let (mut ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    let ack = ws.next().await.expect("ack").expect("ack");
    assert!(ack.to_text().expect("text").contains("connection_ack"));
    ws
}

/// Reads `odds_update` ids until all `EVENTS` arrived; a `resync` or the end of the
/// connection fails the reader. The connection is handed back open.
async fn read_every_id(mut ws: Ws) -> (Vec<u64>, Ws) {
    let mut ids = Vec::with_capacity(EVENTS as usize);
    while ids.len() < EVENTS as usize {
        let message = match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(message))) => message,
            other => panic!("reader ended after {} ids: {other:?}", ids.len()),
        };
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).expect("JSON frame");
        match value["type"].as_str() {
            Some("odds_update") => ids.extend(
                value["data"]["event_ids"]
                    .as_array()
                    .expect("event_ids")
                    .iter()
                    .map(|id| id.as_u64().expect("u64 id")),
            ),
            other => panic!("a reader got {other:?}: {value}"),
        }
    }
    (ids, ws)
}

fn body(first: u64, price: f64) -> Value {
    let snapshots: Vec<Value> = (first..first + PER_REQUEST)
        .map(|id| common::snapshot(id, price))
        .collect();
    json!({ "source": "betpawa", "snapshots": snapshots })
}

/// Puts every event once at `price`, one request of `PER_REQUEST` events at a time.
async fn ingest_all(http: &reqwest::Client, addr: &str, price: f64) {
    for first in (FIRST_ID..FIRST_ID + EVENTS).step_by(PER_REQUEST as usize) {
        let reply = http
            .post(format!("http://{addr}/api/odds"))
            .json(&body(first, price))
            .send()
            .await
            .expect("ingest");
        let status = reply.status();
        assert_eq!(status, 200, "{}", reply.text().await.unwrap_or_default());
    }
}

async fn stats(http: &reqwest::Client, addr: &str) -> Value {
    http.get(format!("http://{addr}/api/ws/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stuck_client_and_fifty_readers_over_100k_updates() {
    let broker = Broker::start();
    let addr = broker.addr.clone();
    let http = reqwest::Client::new();

    // The cache holds every event before the clients arrive, so the updates below replace
    // snapshots rather than grow the cache, and RSS growth is what the clients cost. An
    // ingest answers before its update is published: a watcher reads them all, so that none
    // reaches the readers below.
    let watcher = tokio::spawn(read_every_id(subscribe(&addr, None).await));
    ingest_all(&http, &addr, 2.0).await;
    let (first_round, watcher) = watcher.await.expect("watcher task");
    assert_eq!(first_round.last(), Some(&(FIRST_ID + EVENTS - 1)));
    drop(watcher);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&http, &addr).await["active_connections"] != 0 {
        assert!(Instant::now() < deadline, "the watcher never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The workers behind the cache (the price history, the analysis) hold every event too,
    // so what they keep is counted before the baseline, not in the growth.
    let held = [
        format!("oddsbus_price_history_points {}\n", 3 * EVENTS),
        format!("oddsbus_analysis_events {EVENTS}\n"),
    ];
    common::eventually("the workers behind the cache took every event", || async {
        let metrics = http.get(format!("http://{addr}/metrics")).send().await;
        let text = match metrics {
            Ok(reply) => reply.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        held.iter().all(|line| text.contains(line.as_str()))
    })
    .await;

    let stuck = subscribe(&addr, Some(4096)).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(tokio::spawn(read_every_id(subscribe(&addr, None).await)));
    }
    assert_eq!(stats(&http, &addr).await["active_connections"], READERS + 1);
    broker.reset_peak();
    let baseline = broker.memory("VmRSS");

    let started = Instant::now();
    // 2.4 and the other two prices add up to more than 1: no surebet either.
    ingest_all(&http, &addr, 2.4).await;
    let expected: Vec<u64> = (FIRST_ID..FIRST_ID + EVENTS).collect();
    let mut open = Vec::new();
    for reader in readers {
        let (ids, ws) = reader.await.expect("reader task");
        open.push(ws);
        assert_eq!(ids.len(), expected.len());
        if let Some(at) = ids
            .iter()
            .zip(&expected)
            .position(|(got, want)| got != want)
        {
            let around = &ids[at.saturating_sub(3)..(at + 5).min(ids.len())];
            panic!("a reader missed, repeated or reordered ids: at {at}, {around:?}");
        }
    }
    let elapsed = started.elapsed();

    // The stuck client is closed once its writes stall for the stuck timeout (1 s); the
    // readers stay.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats(&http, &addr).await["active_connections"] != READERS as u64 {
        assert!(
            Instant::now() < deadline,
            "the stuck client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = broker.memory("VmHWM");

    // Reading now, it finds the frames that fit in the socket buffers, perhaps a resync,
    // and then the end of the connection: a 1008 close frame if there was room for it.
    let (mut stuck, mut resynced, mut received) = (stuck, false, 0usize);
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), stuck.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                received += text.len();
                resynced |= text.contains(r#""type":"resync""#);
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| f.code),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => break None,
            Err(_) => panic!("the stuck client's connection never ended"),
        }
    };
    assert!(matches!(close, None | Some(CloseCode::Policy)), "{close:?}");

    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(r#"oddsbus_connections_closed_total{reason="too_slow"} 1"#),
        "{metrics}"
    );

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{EVENTS} updates to {READERS} readers in {elapsed:.2?}; stuck client got {received} bytes \
         (resync: {resynced}, close: {close:?}); server RSS {:.1} MiB before, peak {:.1} MiB",
        mib(baseline),
        mib(peak),
    );
    assert!(
        peak <= baseline + RSS_GROWTH_BOUND,
        "peak RSS {:.1} MiB is more than {:.0} MiB over the {:.1} MiB before the updates",
        mib(peak),
        mib(RSS_GROWTH_BOUND),
        mib(baseline)
    );
}
