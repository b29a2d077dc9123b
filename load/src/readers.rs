//! The subscribers' side: reading frames, counting the load's event ids, timing receipts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::Socket;
use crate::{Args, FIRST_ID};

/// State shared by the ingest and every reader.
pub struct Shared {
    pub started: Instant,
    pub events: u64,
    /// When each event id's request was sent (or due, when paced), ns since `started`.
    pub sent_at: Vec<AtomicU64>,
    /// Subscribers that have every id.
    pub done: AtomicUsize,
    /// Time the last subscriber completed, ns since `started`.
    pub last_delivery: AtomicU64,
    /// Time any subscriber last received one of our ids, ns since `started` (the end of a
    /// run in which some subscriber never completes, e.g. after a resync).
    pub last_receipt: AtomicU64,
    pub deliveries: AtomicU64,
    pub duplicates: AtomicU64,
    pub frames: AtomicU64,
    pub resync_missed: AtomicU64,
    pub latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// Ingest request sent -> response read, in µs.
    pub ingest_latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    pub fn new(args: &Args) -> Shared {
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

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// A latency histogram in µs, from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Reads one subscriber's frames, counting the load's event ids it receives.
pub async fn read(mut socket: Socket, shared: Arc<Shared>, timed: bool) {
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
