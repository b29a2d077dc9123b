//! `oddsbus-load`: a load generator for any running oddsbus.
//!
//! It connects N WebSocket subscribers to `odds_updates` (spread over several 127.0.0.x
//! source addresses, so tens of thousands fit in the ephemeral port range), ingests M distinct
//! changes through `POST /api/odds`, and reports deliveries/s (event ids received, summed over
//! clients), frames/s, latency from ingest request sent to receipt, lost ids and connect time.
//! Its last line is one JSON object. With `--connect` it only holds N idle subscribed
//! connections, to read the server's memory per connection. With `--large-readers` it
//! measures how responsive the server stays under large reads instead (`reads.rs`); with
//! `--reconnect-storm`, how fast clients catch up after a drop (`storm.rs`); with `--board`,
//! how many board users one node keeps fresh (`board.rs`). With `--nodes`, subscribers are
//! spread over the nodes of a cluster while ingests go to `--server`.
//!
//! Unpaced (no `--rate`), K requests are kept in flight and each is sent as soon as a previous
//! one is answered: that measures throughput. Paced (`--rate R`), request i is due at i/R
//! seconds, whether or not earlier ones were answered (open loop), on a pool of K
//! connections: that measures latency, from the moment each request is sent. A request that
//! leaves more than 2 ms after it was due (every connection of the pool was busy, so the
//! server is falling behind) is counted as late: a run with late requests understates latency
//! and needs a larger `--inflight`.

mod board;
mod connect;
mod http;
mod ingest;
mod process;
mod readers;
mod reads;
mod report;
mod storm;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::connect::{connect_all, connect_stuck};
use crate::ingest::ingest_all;
use crate::process::ProcessStats;
use crate::readers::{read, Shared};
use crate::report::{hold, report};

/// Event ids used by the load tool start here, far from the simulated market's.
const FIRST_ID: u64 = 1_000_000_000;

#[derive(Debug, Clone, Parser)]
#[command(name = "oddsbus-load", about = "Load generator for oddsbus fan-out")]
struct Args {
    /// The server's address (where ingests go, and subscribers unless `--nodes` is given).
    #[arg(long, default_value = "127.0.0.1:8000")]
    server: SocketAddr,
    /// Cluster nodes to spread the subscribers over, round-robin, comma-separated (ingests
    /// still go to `--server`).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<SocketAddr>,
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
    /// Subscribers whose every receipt is timed (all of them count deliveries); with
    /// `--board`, the clients that time their changes (all of them do the work).
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
    /// Extra subscribers that never read (4 KiB receive buffers): does one stuck client slow
    /// the others?
    #[arg(long, default_value_t = 0)]
    stuck_clients: usize,
    /// Large-read mode: put `--events` events, then N clients read `GET /api/events` in a
    /// loop while `/healthz` and a WebSocket ping are timed (see `reads.rs`).
    #[arg(long)]
    large_readers: Option<usize>,
    /// Reconnect-storm mode: the clients each miss this many changes, then come back at
    /// once, recovering with `since`, then refetching everything (see `storm.rs`).
    #[arg(long)]
    reconnect_storm: Option<u64>,
    /// Board-users mode: `--clients` behave like the live board, refetching what each
    /// `odds_update` names or taking `odds_changes`, while the market changes (`board.rs`).
    #[arg(long, value_enum)]
    board: Option<board::Way>,
    /// With `--board`: market changes per second (78: the simulated market's default load).
    #[arg(long, default_value_t = 78.0)]
    changes_per_sec: f64,
    /// With `--large-readers` or `--board`: seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(error) = run(args).await {
        eprintln!("oddsbus-load: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    if let Some(readers) = args.large_readers {
        return reads::run(&args, readers).await;
    }
    if let Some(way) = args.board {
        return board::run(&args, way).await;
    }
    if let Some(missed) = args.reconnect_storm {
        return storm::run(&args, missed).await;
    }
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

    let _stuck = connect_stuck(&args).await?;
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
