//! In-process benches of the hot path: encoding, the dispatcher's merge, and the whole
//! cache put -> bridge -> dispatcher -> topic channel -> N subscribers path.
//!
//! Run with `cargo bench --bench fanout`; reports are curves over subscriber counts.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oddsbus::{bus_channel, create_cache_update_bridge, run_dispatcher, BusEvent, Coalescing};
use oddsbus::{encode, OddsUpdate, ServerMessage};
use oddsbus::{
    ConnectionManager, Delivery, Market, OddsCache, Outcome, Snapshot, Timestamp, Topic,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const SUBSCRIBERS: [usize; 4] = [1, 10, 100, 1_000];

fn snapshot(price: f64) -> Snapshot {
    Snapshot {
        bookmaker_id: None,
        captured_at: Timestamp::now(),
        markets: vec![Market {
            market_id: "1x2".into(),
            name: "1X2".into(),
            line: None,
            outcomes: ["1", "X", "2"]
                .iter()
                .map(|name| Outcome {
                    name: (*name).into(),
                    odds: price,
                })
                .collect(),
        }],
        event: None,
    }
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_odds_update");
    for ids in [1usize, 10, 100, 1_000] {
        let event_ids: Vec<u64> = (1_000_000..1_000_000 + ids as u64).collect();
        group.throughput(Throughput::Elements(ids as u64));
        group.bench_with_input(BenchmarkId::new("ids", ids), &event_ids, |b, event_ids| {
            b.iter(|| {
                encode(&ServerMessage::OddsUpdate {
                    data: OddsUpdate {
                        event_ids: black_box(event_ids),
                        source: "sportybet",
                        count: event_ids.len(),
                    },
                    offset: 1,
                })
            })
        });
    }
    group.finish();
}

/// The dispatcher draining a backlog of single-id changes from 3 sources.
fn coalescing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("dispatcher_backlog");
    let sources: [Arc<str>; 3] = ["betpawa".into(), "sportybet".into(), "bet9ja".into()];
    // A stored snapshot as the simulated market writes them, for the `odds_change`s.
    const SNAPSHOT: &[u8] = br#"{"snapshot_id":123456,"event_id":100001,"bookmaker_id":5000001,"captured_at":"2026-11-22T00:07:00.495Z","markets":[{"market_id":"1x2","name":"1X2","line":null,"outcomes":[{"name":"1","odds":2.1},{"name":"X","odds":3.2},{"name":"2","odds":3.5}]},{"market_id":"ou_2.5","name":"Over/Under 2.5","line":2.5,"outcomes":[{"name":"Over","odds":1.85},{"name":"Under","odds":1.95}]},{"market_id":"btts","name":"Both teams to score","line":null,"outcomes":[{"name":"Yes","odds":1.7},{"name":"No","odds":2.05}]}]}"#;
    for backlog in [100usize, 1_000, 10_000] {
        group.throughput(Throughput::Elements(backlog as u64));
        let merged = Coalescing::PerSource {
            window: Duration::ZERO,
        };
        for (name, mode) in [("merged", merged), ("one_per_put", Coalescing::Off)] {
            group.bench_with_input(BenchmarkId::new(name, backlog), &backlog, |b, &backlog| {
                let manager = ConnectionManager::new();
                let mut subscriber = manager.register();
                subscriber.join(Topic::OddsUpdates, None);
                // The log's offsets go on across iterations, as the manager's logs do.
                let mut offset = 0;
                b.iter_batched(
                    || {
                        let (tx, rx) = bus_channel();
                        for i in 0..backlog {
                            offset += 1;
                            let _ = tx.send(BusEvent::OddsChanged {
                                event_ids: vec![i as u64],
                                snapshots: vec![bytes::Bytes::from_static(SNAPSHOT)],
                                source: sources[i % 3].clone(),
                                offsets: vec![offset],
                            });
                        }
                        rx
                    },
                    |rx| {
                        let stop = CancellationToken::new();
                        stop.cancel(); // drain what is queued, then return
                        runtime.block_on(run_dispatcher(rx, manager.clone(), mode, 64 << 10, stop));
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

#[derive(Deserialize)]
struct Counted {
    data: CountOnly,
}

#[derive(Deserialize)]
struct CountOnly {
    count: u64,
}

/// Puts into a real cache with the real bridge and dispatcher, received by N subscriber
/// tasks that read each frame's `count`; measures event ids delivered per second.
fn inprocess_fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let puts_per_iter = 100u64;
    let mut group = c.benchmark_group("inprocess_fanout");
    group.measurement_time(Duration::from_secs(5));
    for &n in &SUBSCRIBERS {
        let rig = runtime.block_on(Rig::start(n));
        group.throughput(Throughput::Elements(puts_per_iter * n as u64));
        for batch in [false, true] {
            let case = if batch { "batch_put" } else { "single_puts" };
            group.bench_function(BenchmarkId::new(case, n), |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let rig = &rig;
                    async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            rig.round(puts_per_iter, batch).await;
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

struct Rig {
    cache: OddsCache,
    delivered: Arc<AtomicU64>,
    subscribers: u64,
    price: AtomicU64,
    stop: CancellationToken,
}

impl Rig {
    async fn start(subscribers: usize) -> Rig {
        let cache = OddsCache::new();
        let manager = ConnectionManager::new();
        let (tx, rx) = bus_channel();
        create_cache_update_bridge(&cache, tx);
        let stop = CancellationToken::new();
        tokio::spawn(run_dispatcher(
            rx,
            manager.clone(),
            // No pacing window: rounds follow each other back to back, which the broker would
            // treat as sustained load and pace. This bench measures the path itself; pacing is
            // measured end to end by the loopback bench and the load tool.
            Coalescing::PerSource {
                window: Duration::ZERO,
            },
            64 << 10,
            stop.clone(),
        ));
        let delivered = Arc::new(AtomicU64::new(0));
        for _ in 0..subscribers {
            let mut subscriber = manager.register();
            subscriber.join(Topic::OddsUpdates, None);
            let delivered = delivered.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let delivery = tokio::select! {
                        d = subscriber.recv() => d,
                        () = stop.cancelled() => return,
                    };
                    if let Delivery::Frame(frame) = delivery {
                        let counted: Counted = serde_json::from_str(frame.as_str()).unwrap();
                        delivered.fetch_add(counted.data.count, Ordering::Relaxed);
                    }
                }
            });
        }
        Rig {
            cache,
            delivered,
            subscribers: subscribers as u64,
            price: AtomicU64::new(0),
            stop,
        }
    }

    /// `puts` changed snapshots, then waits until every subscriber has every id.
    async fn round(&self, puts: u64, batch: bool) {
        let target = self.delivered.load(Ordering::Relaxed) + puts * self.subscribers;
        let step = self.price.fetch_add(1, Ordering::Relaxed);
        let price = 1.5 + (step % 1000) as f64 / 1000.0;
        if batch {
            let snapshots = (0..puts).map(|id| (id, snapshot(price))).collect();
            self.cache.put_batch("sportybet", snapshots);
        } else {
            for id in 0..puts {
                self.cache
                    .put_competitor_snapshot(id, "sportybet", snapshot(price));
            }
        }
        while self.delivered.load(Ordering::Relaxed) < target {
            tokio::task::yield_now().await;
        }
    }
}

criterion_group!(benches, encoding, coalescing, inprocess_fanout);
criterion_main!(benches);
