//! `oddsbus-load`: a load generator for any running oddsbus.
//!
//! It connects N WebSocket subscribers to `odds_updates` (spread over several 127.0.0.x
//! source addresses, so tens of thousands fit in the ephemeral port range), ingests M distinct
//! changes through `POST /api/odds`, and reports deliveries/s (event ids received, summed over
//! clients), frames/s, latency from ingest request sent to receipt, lost ids and connect time.
//! Its last line is one JSON object. With `--connect` it only holds N idle subscribed
//! connections, to read the server's memory per connection.
//!
//! Unpaced (no `--rate`), K requests are kept in flight and each is sent as soon as a previous
//! one is answered: that measures throughput. Paced (`--rate R`), request i is due at i/R
//! seconds, whether or not earlier ones were answered (open loop), on a pool of K
//! connections: that measures latency, from the moment each request is sent. A request that
//! leaves more than 2 ms after it was due (every connection of the pool was busy, so the
//! server is falling behind) is counted as late: a run with late requests understates latency
//! and needs a larger `--inflight`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Event ids used by the load tool start here, far from the simulated market's.
const FIRST_ID: u64 = 1_000_000_000;

#[derive(Debug, Clone, Parser)]
#[command(name = "oddsbus-load", about = "Load generator for oddsbus fan-out")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8000")]
    server: SocketAddr,
    /// WebSocket subscribers to connect.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Distinct event ids to ingest (each is one changed snapshot).
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Snapshots per ingest request.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Ingest requests in flight at once (one HTTP connection each).
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Paced mode: ingest requests per second (open loop). Without it: as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Source name to ingest as.
    #[arg(long, default_value = "betpawa")]
    source: String,
    /// Local addresses 127.0.0.1..=127.0.0.N to spread subscribers over.
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,
    /// Subscribers whose every receipt is timed (all of them count deliveries).
    #[arg(long, default_value_t = 100)]
    latency_clients: usize,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Only connect the subscribers and hold them idle (to measure memory per connection).
    #[arg(long)]
    connect: bool,
    /// With `--connect`: seconds to hold the connections (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    hold: u64,
}

type Socket = WebSocketStream<TcpStream>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(error) = run(args).await {
        eprintln!("oddsbus-load: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let before = args.server_pid.map(ProcessStats::read).transpose()?;
    let connect_started = Instant::now();
    let sockets = connect_all(&args).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    println!(
        "connected {} subscribers in {connect_secs:.2} s",
        sockets.len()
    );

    if args.connect {
        return hold(&args, sockets, before, connect_secs).await;
    }

    let shared = Arc::new(Shared::new(&args));
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| tokio::spawn(read(socket, shared.clone(), i < args.latency_clients)))
        .collect();

    let cpu_before = args.server_pid.map(ProcessStats::read).transpose()?;
    // Ingest runs on a thread and runtime of its own, so that the readers' work never delays
    // a send (which would understate the server's latency and throughput).
    let ingest = {
        let (args, shared) = (args.clone(), shared.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(ingest_all(args, shared))
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    while shared.done.load(Ordering::Acquire) < args.clients {
        if tokio::time::Instant::now() >= deadline {
            println!("timed out waiting for deliveries");
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ingest = tokio::task::spawn_blocking(move || ingest.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the ingest thread panicked".to_owned())??;
    let cpu_after = args.server_pid.map(ProcessStats::read).transpose()?;
    for reader in &readers {
        reader.abort();
    }
    report(&args, &shared, &ingest, connect_secs, cpu_before, cpu_after);
    Ok(())
}

/// Connects every subscriber and waits for each `connection_ack`.
async fn connect_all(args: &Args) -> Result<Vec<Socket>, String> {
    let url = format!("ws://{}/api/ws?topics=odds_updates", args.server);
    let results = futures_util::stream::iter(0..args.clients)
        .map(|i| {
            let url = url.clone();
            let local = Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(args.source_addrs.max(1))) as u8,
            );
            async move {
                // A server out of file descriptors leaves connections in its backlog: give up
                // instead of waiting forever.
                tokio::time::timeout(
                    Duration::from_secs(10),
                    connect_one(&url, local, args.server),
                )
                .await
                .map_err(|_| format!("connect from {local} timed out after 10 s"))?
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

async fn connect_one(url: &str, local: Ipv4Addr, server: SocketAddr) -> Result<Socket, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(local), 0))
        .map_err(|e| format!("bind {local}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect {server} from {local}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains("connection_ack") => Ok(ws),
        other => Err(format!("expected connection_ack, got {other:?}")),
    }
}

/// State shared by the ingest and every reader.
struct Shared {
    started: Instant,
    events: u64,
    /// When each event id's request was sent (or due, when paced), ns since `started`.
    sent_at: Vec<AtomicU64>,
    /// Subscribers that have every id.
    done: AtomicUsize,
    /// Time the last subscriber completed, ns since `started`.
    last_delivery: AtomicU64,
    /// Time any subscriber last received one of our ids, ns since `started` (the end of a
    /// run in which some subscriber never completes, e.g. after a resync).
    last_receipt: AtomicU64,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    frames: AtomicU64,
    resync_missed: AtomicU64,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// Ingest request sent -> response read, in µs.
    ingest_latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    fn new(args: &Args) -> Shared {
        Shared {
            started: Instant::now(),
            events: args.events,
            sent_at: (0..args.events).map(|_| AtomicU64::new(u64::MAX)).collect(),
            done: AtomicUsize::new(0),
            last_delivery: AtomicU64::new(0),
            last_receipt: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            resync_missed: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            ingest_latency: Mutex::new(histogram()),
        }
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// A latency histogram in µs, from 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Reads one subscriber's frames, counting the load's event ids it receives.
async fn read(mut socket: Socket, shared: Arc<Shared>, timed: bool) {
    let mut seen = vec![0u64; (shared.events as usize).div_ceil(64)];
    let mut distinct = 0u64;
    let mut latencies = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let text = text.as_str();
        if !text.contains("\"odds_update\"") {
            if text.contains("\"resync\"") {
                let missed = number_after(text, "\"missed\":").unwrap_or(0);
                shared.resync_missed.fetch_add(missed, Ordering::Relaxed);
            }
            continue;
        }
        shared.frames.fetch_add(1, Ordering::Relaxed);
        let now = shared.now_ns();
        let mut fresh = 0;
        for id in event_ids(text) {
            let Some(offset) = id.checked_sub(FIRST_ID).filter(|o| *o < shared.events) else {
                continue; // not ours (e.g. the simulated market)
            };
            let (word, bit) = ((offset / 64) as usize, 1u64 << (offset % 64));
            if seen[word] & bit != 0 {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            seen[word] |= bit;
            fresh += 1;
            if timed {
                let sent = shared.sent_at[offset as usize].load(Ordering::Acquire);
                latencies.push(now.saturating_sub(sent) / 1_000);
            }
        }
        if timed && !latencies.is_empty() {
            let mut histogram = shared.latency.lock();
            for micros in latencies.drain(..) {
                let _ = histogram.record(micros.max(1));
            }
        }
        shared.deliveries.fetch_add(fresh, Ordering::Relaxed);
        if fresh > 0 {
            shared.last_receipt.fetch_max(now, Ordering::Relaxed);
        }
        distinct += fresh;
        if fresh > 0 && distinct == shared.events {
            shared.last_delivery.fetch_max(now, Ordering::AcqRel);
            shared.done.fetch_add(1, Ordering::AcqRel);
        }
    }
    let _ = socket.close(None).await;
}

/// The ids of an `odds_update` frame, read without a JSON parser (this tool must stay cheaper
/// than the server it measures).
fn event_ids(text: &str) -> impl Iterator<Item = u64> + '_ {
    let list = text
        .find("\"event_ids\":[")
        .map(|at| &text[at + 13..])
        .and_then(|rest| rest.find(']').map(|end| &rest[..end]))
        .unwrap_or("");
    list.split(',').filter_map(|n| n.trim().parse().ok())
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What the ingest side did.
struct IngestReport {
    requests: u64,
    failures: u64,
    /// Paced requests sent more than 2 ms after they were due.
    late: u64,
    first_sent_ns: u64,
    last_answered_ns: u64,
}

/// Sends every ingest request over `inflight` keep-alive connections.
async fn ingest_all(args: Args, shared: Arc<Shared>) -> Result<IngestReport, String> {
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

/// CPU time and resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
struct ProcessStats {
    cpu_secs: f64,
    rss_bytes: u64,
}

impl ProcessStats {
    fn read(pid: u32) -> Result<ProcessStats, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the ')'.
        let ticks = 100.0; // USER_HZ on Linux
        let cpu_secs = (field(11) + field(12)) as f64 / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(ProcessStats {
            cpu_secs,
            rss_bytes: rss_kib * 1024,
        })
    }
}

async fn hold(
    args: &Args,
    sockets: Vec<Socket>,
    before: Option<ProcessStats>,
    connect_secs: f64,
) -> Result<(), String> {
    // Let the server settle (connection tasks reach their idle state) before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = args.server_pid.map(ProcessStats::read).transpose()?;
    let per_connection = match (before, after) {
        (Some(b), Some(a)) => {
            Some(a.rss_bytes.saturating_sub(b.rss_bytes) as f64 / sockets.len().max(1) as f64)
        }
        _ => None,
    };
    if let (Some(b), Some(a), Some(per)) = (before, after, per_connection) {
        println!(
            "server RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes ({:.2} KiB) per idle connection",
            b.rss_bytes as f64 / 1048576.0,
            a.rss_bytes as f64 / 1048576.0,
            per,
            per / 1024.0
        );
    }
    println!(
        "{}",
        json!({
            "mode": "connect",
            "clients": sockets.len(),
            "connect_secs": connect_secs,
            "server_rss_before_bytes": before.map(|s| s.rss_bytes),
            "server_rss_after_bytes": after.map(|s| s.rss_bytes),
            "server_rss_per_connection_bytes": per_connection,
        })
    );
    if args.hold == 0 {
        let _ = tokio::signal::ctrl_c().await;
    } else {
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    drop(sockets);
    Ok(())
}

fn report(
    args: &Args,
    shared: &Shared,
    ingest: &IngestReport,
    connect_secs: f64,
    cpu_before: Option<ProcessStats>,
    cpu_after: Option<ProcessStats>,
) {
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    let frames = shared.frames.load(Ordering::Relaxed);
    let expected = args.events * args.clients as u64;
    let start = ingest.first_sent_ns;
    let end = shared
        .last_delivery
        .load(Ordering::Relaxed)
        .max(ingest.last_answered_ns);
    let secs = (end.saturating_sub(start)) as f64 / 1e9;
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let latency = shared.latency.lock();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let ns_per = |n: u64| server_cpu.filter(|_| n > 0).map(|cpu| cpu * 1e9 / n as f64);

    println!(
        "{} clients, {} events in batches of {} ({} requests, {} failed), {}",
        args.clients,
        args.events,
        args.batch,
        ingest.requests,
        ingest.failures,
        match args.rate {
            Some(rate) => format!("paced at {rate} requests/s ({} sent late)", ingest.late),
            None => format!("unpaced, {} in flight", args.inflight),
        }
    );
    println!(
        "delivered {deliveries} of {expected} event ids in {secs:.3} s: {:.0} deliveries/s, {:.0} frames/s ({frames} frames, {:.1} ids per frame)",
        per_sec(deliveries),
        per_sec(frames),
        deliveries as f64 / frames.max(1) as f64
    );
    println!(
        "latency (ingest sent -> received, {} timed clients): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        args.latency_clients.min(args.clients),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        latency.max() as f64 / 1000.0
    );
    let ingest_latency = shared.ingest_latency.lock();
    let ingest_ms = |q: f64| ingest_latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "ingest request -> response: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ingest_ms(0.5),
        ingest_ms(0.99),
        ingest_latency.max() as f64 / 1000.0
    );
    println!(
        "lost {}, duplicates {}, missed by resync {}; connect {connect_secs:.2} s",
        expected - deliveries.min(expected),
        shared.duplicates.load(Ordering::Relaxed),
        shared.resync_missed.load(Ordering::Relaxed)
    );
    if let Some(cpu) = server_cpu {
        println!(
            "server CPU {cpu:.2} s: {:.0} ns per frame, {:.1} ns per event id delivered",
            ns_per(frames).unwrap_or(0.0),
            ns_per(deliveries).unwrap_or(0.0)
        );
    }
    println!(
        "{}",
        json!({
            "mode": "fanout",
            "clients": args.clients,
            "events": args.events,
            "batch": args.batch,
            "inflight": args.inflight,
            "rate": args.rate,
            "requests": ingest.requests,
            "failed_requests": ingest.failures,
            "late_requests": ingest.late,
            "seconds": secs,
            "deliveries": deliveries,
            "deliveries_per_sec": per_sec(deliveries),
            "frames": frames,
            "frames_per_sec": per_sec(frames),
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0},
            "ingest_latency_ms": {"p50": ingest_ms(0.5), "p99": ingest_ms(0.99), "max": ingest_latency.max() as f64 / 1000.0},
            "lost": expected - deliveries.min(expected),
            "duplicates": shared.duplicates.load(Ordering::Relaxed),
            "resync_missed": shared.resync_missed.load(Ordering::Relaxed),
            "connect_secs": connect_secs,
            "server_cpu_secs": server_cpu,
            "server_cpu_ns_per_frame": ns_per(frames),
            "server_cpu_ns_per_id": ns_per(deliveries),
        })
    );
}
