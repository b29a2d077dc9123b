//! What a run prints: a few lines for people, then one JSON object for scripts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::connect::Socket;
use crate::ingest::IngestReport;
use crate::process::ProcessStats;
use crate::readers::Shared;
use crate::Args;

pub async fn hold(
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

pub fn report(
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
            "stuck_clients": args.stuck_clients,
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
