//! The ingest side: every request of the run, over `--inflight` keep-alive connections,
//! unpaced or paced (open loop).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use crate::readers::Shared;
use crate::{Args, FIRST_ID};

/// What the ingest side did.
pub struct IngestReport {
    pub requests: u64,
    pub failures: u64,
    /// Paced requests sent more than 2 ms after they were due.
    pub late: u64,
    pub first_sent_ns: u64,
    pub last_answered_ns: u64,
}

/// Sends every ingest request over `inflight` keep-alive connections.
pub async fn ingest_all(args: Args, shared: Arc<Shared>) -> Result<IngestReport, String> {
    let requests = args.events.div_ceil(args.batch.max(1));
    // A price no earlier run used, so every snapshot is a change even on a warm server.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let price = 1.5 + (nonce % 997) as f64 / 1000.0;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..requests)
            .map(|r| {
                let first = r * args.batch;
                let last = (first + args.batch).min(args.events);
                let snapshots: Vec<_> = (first..last)
                    .map(|offset| {
                        json!({"event_id": FIRST_ID + offset, "markets": [{
                            "market_id": "1x2", "name": "1X2",
                            "outcomes": [{"name": "1", "odds": price}, {"name": "X", "odds": 3.2}, {"name": "2", "odds": 3.5}]
                        }]})
                    })
                    .collect();
                Bytes::from(json!({"source": args.source, "snapshots": snapshots}).to_string())
            })
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let first_sent = Arc::new(AtomicU64::new(u64::MAX));
    let last_answered = Arc::new(AtomicU64::new(0));
    let pace = args
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut workers = Vec::new();
    for _ in 0..args.inflight.max(1) {
        let stream = TcpStream::connect(args.server)
            .await
            .map_err(|e| format!("ingest connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (mut sender, connection) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("ingest handshake: {e}"))?;
        tokio::spawn(connection);
        let (args, shared, bodies) = (args.clone(), shared.clone(), bodies.clone());
        let (next, failures, late) = (next.clone(), failures.clone(), late.clone());
        let (first_sent, last_answered) = (first_sent.clone(), last_answered.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= requests {
                    return;
                }
                if let Some(pace) = pace {
                    let due = start + pace.mul_f64(r as f64);
                    tokio::time::sleep_until(due).await;
                    if due.elapsed() > Duration::from_millis(2) {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let stamp = shared.now_ns();
                let first = r * args.batch;
                let last = (first + args.batch).min(args.events);
                for offset in first..last {
                    shared.sent_at[offset as usize].store(stamp, Ordering::Release);
                }
                first_sent.fetch_min(shared.now_ns(), Ordering::Relaxed);
                let request = hyper::Request::post("/api/odds")
                    .header("host", args.server.to_string())
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[r as usize].clone()));
                let ok = match request {
                    Ok(request) => match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let _ = response.into_body().collect().await;
                            status.is_success()
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                let answered = shared.now_ns();
                last_answered.fetch_max(answered, Ordering::Relaxed);
                let _ = shared
                    .ingest_latency
                    .lock()
                    .record((answered.saturating_sub(stamp) / 1_000).max(1));
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())?;
    }
    Ok(IngestReport {
        requests,
        failures: failures.load(Ordering::Relaxed),
        late: late.load(Ordering::Relaxed),
        first_sent_ns: first_sent.load(Ordering::Relaxed),
        last_answered_ns: last_answered.load(Ordering::Relaxed),
    })
}
