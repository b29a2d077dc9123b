//! Large-read mode (`--large-readers N`): is the server still responsive while clients pull
//! the whole event list in a loop? It puts `--events` events (three sources, three markets
//! each), starts N clients reading `GET /api/events` back to back, and meanwhile times
//! `GET /healthz` and a WebSocket `ping` every 20 ms, each on a connection of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::readers::histogram;
use crate::{Args, FIRST_ID};

/// How often each probe asks.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Runs the mode and prints its report, the last line one JSON object.
pub async fn run(args: &Args, readers: usize) -> Result<(), String> {
    seed(args).await?;
    println!("put {} events from 3 sources", args.events);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let mut client = connect(args).await?;
        let (stop, reads, bytes) = (stop.clone(), reads.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(body) = get(&mut client, "/api/events").await else {
                    return;
                };
                reads.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(body, Ordering::Relaxed);
            }
        }));
    }
    let health = Arc::new(Mutex::new(histogram()));
    let ping = Arc::new(Mutex::new(histogram()));
    tasks.push(tokio::spawn(probe_health(
        connect(args).await?,
        stop.clone(),
        health.clone(),
    )));
    tasks.push(tokio::spawn(probe_ping(
        args.server,
        stop.clone(),
        ping.clone(),
    )));

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let (health, ping) = (health.lock(), ping.lock());
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let reads = reads.load(Ordering::Relaxed);
    let megabytes = bytes.load(Ordering::Relaxed) as f64 / 1e6;
    println!(
        "{readers} readers: {reads} reads of GET /api/events in {secs:.1} s ({:.1}/s, {:.0} MB/s)",
        reads as f64 / secs,
        megabytes / secs
    );
    for (name, h) in [("GET /healthz", &*health), ("WebSocket ping", &*ping)] {
        println!(
            "{name}: {} probes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    let summary = |h: &hdrhistogram::Histogram<u64>| json!({"probes": h.len(), "p50": ms(h, 0.5), "p99": ms(h, 0.99), "max": h.max() as f64 / 1000.0});
    println!(
        "{}",
        json!({
            "mode": "large_reads", "events": args.events, "readers": readers, "seconds": secs,
            "reads": reads, "reads_per_sec": reads as f64 / secs, "megabytes": megabytes,
            "healthz_ms": summary(&health), "ping_ms": summary(&ping),
        })
    );
    Ok(())
}

/// Puts `--events` events, as three sources with three markets each, 5,000 per request.
async fn seed(args: &Args) -> Result<(), String> {
    let mut client = connect(args).await?;
    let market = |id: &str, outcomes: &[&str]| {
        let outcomes: Vec<_> = outcomes
            .iter()
            .map(|name| json!({"name": name, "odds": 1.9}))
            .collect();
        json!({"market_id": id, "name": id, "outcomes": outcomes})
    };
    let markets = json!([
        market("1x2", &["1", "X", "2"]),
        market("ou_2.5", &["Over", "Under"]),
        market("btts", &["Yes", "No"]),
    ]);
    for source in ["betpawa", "sportybet", "bet9ja"] {
        for first in (0..args.events).step_by(5_000) {
            let last = (first + 5_000).min(args.events);
            let snapshots: Vec<_> = (first..last)
                .map(|i| json!({"event_id": FIRST_ID + i, "markets": markets}))
                .collect();
            let body = json!({"source": source, "snapshots": snapshots}).to_string();
            let request = hyper::Request::post("/api/odds")
                .header("host", args.server.to_string())
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let response = client
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("seeding failed: {}", response.status()));
            }
            let _ = response.into_body().collect().await;
        }
    }
    Ok(())
}

type Client = SendRequest<Full<Bytes>>;

async fn connect(args: &Args) -> Result<Client, String> {
    let stream = TcpStream::connect(args.server)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// GETs `path` and returns the body's length.
async fn get(client: &mut Client, path: &str) -> Result<u64, String> {
    let request = hyper::Request::get(path)
        .header("host", "oddsbus")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.to_bytes().len() as u64)
}

async fn probe_health(
    mut client: Client,
    stop: Arc<AtomicBool>,
    latencies: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        if get(&mut client, "/healthz").await.is_err() {
            return;
        }
        let _ = latencies
            .lock()
            .record(asked.elapsed().as_micros().max(1) as u64);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

async fn probe_ping(
    server: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    latencies: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
) {
    let url = format!("ws://{server}/api/ws?topics=scrape_progress");
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        if socket
            .send(Message::text(r#"{"type":"ping"}"#))
            .await
            .is_err()
        {
            return;
        }
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) if text.contains("\"pong\"") => break,
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
        let _ = latencies
            .lock()
            .record(asked.elapsed().as_micros().max(1) as u64);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
