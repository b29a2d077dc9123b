//! End to end over loopback: a real oddsbus on 127.0.0.1, N real WebSocket subscribers, odds
//! ingested through the real `POST /api/odds`; each iteration is timed until every subscriber
//! has every changed event id. Reported as event ids delivered per second over N.
//!
//! Run with `cargo bench --bench loopback`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;
use oddsbus::{Config, Server};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SUBSCRIBERS: [usize; 4] = [1, 10, 100, 1_000];

/// Changed events per iteration.
const EVENTS: u64 = 100;

struct Rig {
    /// Subscribers read on a runtime of their own, so that their work never delays the
    /// bench's ingest requests (which would measure the bench, not the broker).
    _readers: tokio::runtime::Runtime,
    url: String,
    http: reqwest::Client,
    delivered: Arc<AtomicU64>,
    subscribers: u64,
    round: AtomicU64,
    stop: CancellationToken,
}

impl Rig {
    fn start(runtime: &tokio::runtime::Runtime, subscribers: usize) -> Rig {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            scrape_interval: Duration::ZERO,
            log_filter: "off".into(),
            ..Config::default()
        };
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        runtime.spawn(Server::new(config).run(listener, shutdown));

        let readers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let delivered = Arc::new(AtomicU64::new(0));
        readers.block_on(async {
            for _ in 0..subscribers {
                let url = format!("ws://{addr}/api/ws?topics=odds_updates");
                let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                socket.next().await.unwrap().unwrap(); // connection_ack
                let delivered = delivered.clone();
                tokio::spawn(async move {
                    while let Some(Ok(message)) = socket.next().await {
                        if let Message::Text(text) = message {
                            delivered.fetch_add(count_ids(&text), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Rig {
            _readers: readers,
            url: format!("http://{addr}/api/odds"),
            http: reqwest::Client::new(),
            delivered,
            subscribers: subscribers as u64,
            round: AtomicU64::new(0),
            stop,
        }
    }

    /// Ingests `EVENTS` changed snapshots in requests of `batch`, then waits for every
    /// subscriber to have every id.
    async fn round(&self, batch: u64) {
        let target = self.delivered.load(Ordering::Relaxed) + EVENTS * self.subscribers;
        let round = self.round.fetch_add(1, Ordering::Relaxed);
        let price = 1.5 + (round % 1000) as f64 / 1000.0;
        for first in (0..EVENTS).step_by(batch as usize) {
            let snapshots: Vec<_> = (first..(first + batch).min(EVENTS))
                .map(|id| {
                    json!({"event_id": id, "markets": [{"market_id": "1x2", "name": "1X2",
                        "outcomes": [{"name": "1", "odds": price}]}]})
                })
                .collect();
            let body = json!({"source": "betpawa", "snapshots": snapshots});
            let response = self.http.post(&self.url).json(&body).send().await.unwrap();
            assert!(response.status().is_success());
        }
        while self.delivered.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
    }
}

/// Number of ids in an `odds_update` frame, without a JSON parser.
fn count_ids(text: &str) -> u64 {
    let Some(at) = text.find("\"count\":") else {
        return 0;
    };
    let rest = &text[at + 8..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap_or(0)
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("loopback_fanout");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for &n in &SUBSCRIBERS {
        let rig = Rig::start(&runtime, n);
        group.throughput(Throughput::Elements(EVENTS * n as u64));
        for batch in [1u64, 50] {
            group.bench_function(BenchmarkId::new(format!("batch_{batch}"), n), |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let rig = &rig;
                    async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            rig.round(batch).await;
                        }
                        started.elapsed()
                    }
                })
            });
        }
        rig.stop.cancel();
    }
    group.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
