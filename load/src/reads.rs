//! Large-read mode (`--large-readers N`): is the server still responsive while clients pull
//! the whole event list in a loop? It puts `--events` events (three sources, three markets
//! each), starts N clients reading `GET /api/events` back to back, and meanwhile times
//! `GET /healthz` and a WebSocket `ping` every 20 ms, each on a connection of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::http::{connect, get, seed, Client};
use crate::readers::histogram;
use crate::Args;

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
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
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
