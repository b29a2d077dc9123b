//! Board-users mode (`--board refetch|changes`): how many people one node serves.
//!
//! `--clients` subscribers behave like the live board while the market changes at
//! `--changes-per-sec` (the default, 78, is the simulated market's default load: 1,300 events
//! x 3 sources, 10% of them moving every 5 s):
//!
//! - **refetch**: subscribe to `odds_updates`; gather the ids each message names for 100 ms,
//!   then read them in bulk reads of up to 200 ids (`GET /api/events/odds?ids=`) on the
//!   client's own keep-alive connection, as the board does;
//! - **changes**: subscribe to `odds_changes` and take the snapshots from the push.
//!
//! A change is made by sending a snapshot whose `captured_at` is the moment it is sent, and
//! whose `bookmaker_id` names its (event, source) slot. Slots change in turn, each once per
//! `slots / rate` seconds (50 s at the default load), so a client that holds a slot's newer
//! `captured_at` got exactly that change, and its lag is now minus `captured_at`: from the
//! ingest to fresh odds in the client. A change a client never gets counts as the longest lag.
//! Every client does the work (reads every frame, makes every refetch); the first
//! `--latency-clients` also look for the changes in what they get and time them, so that
//! this tool, on the same cores as the server, spends them on the load rather than on itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use memchr::memmem;
use parking_lot::Mutex;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{connect_with, Socket};
use crate::http::{connect, get, post, Client};
use crate::process::ProcessStats;
use crate::readers::histogram;
use crate::{Args, FIRST_ID};

const SOURCES: [&str; 3] = ["betpawa", "sportybet", "bet9ja"];
/// How long a refetching client gathers ids before it reads them, and its bulk-read size.
const GATHER: Duration = Duration::from_millis(100);
const BULK: usize = 200;

/// How the clients get fresh odds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Way {
    /// Refetch what each `odds_update` names.
    Refetch,
    /// Take the snapshots `odds_changes` pushes.
    Changes,
}

/// What every client adds to.
struct Totals {
    requests: AtomicU64,
    events_read: AtomicU64,
    messages: AtomicU64,
    resyncs: AtomicU64,
}

/// Runs the mode and prints the report, the last line one JSON object.
pub async fn run(args: &Args, way: Way) -> Result<(), String> {
    let slots = args.events as usize * SOURCES.len();
    let mut ingest = connect(args).await?;
    for (index, source) in SOURCES.iter().enumerate() {
        let all: Vec<(usize, u64)> = (0..args.events as usize)
            .map(|event| (event * 3 + index, 0))
            .collect();
        for chunk in all.chunks(5_000) {
            post(&mut ingest, &body(source, chunk, 0)).await?;
        }
    }
    let topic = match way {
        Way::Refetch => "topics=odds_updates",
        Way::Changes => "topics=odds_changes",
    };
    let sockets = connect_with(args, topic).await?;
    let totals = Arc::new(Totals {
        requests: AtomicU64::new(0),
        events_read: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
    });
    let start_ms = now_ms();
    let mut clients = Vec::with_capacity(sockets.len());
    let mut every_lag = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        let timed = index < args.latency_clients;
        let client = Seen::new(if timed { slots } else { 0 }, start_ms, totals.clone());
        if timed {
            every_lag.push(client.lags.clone());
        }
        clients.push(match way {
            Way::Changes => tokio::spawn(take_changes(socket, client)),
            Way::Refetch => tokio::spawn(refetch(socket, connect(args).await?, client)),
        });
    }
    println!(
        "{} clients ({way:?}, {} timed) on a market of {} events x 3 sources; {} changes/s for {} s",
        clients.len(),
        every_lag.len(),
        args.events,
        args.changes_per_sec,
        args.duration
    );

    let pid = args.server_pid;
    let before = pid.map(ProcessStats::read).transpose()?;
    let own_before = ProcessStats::read(std::process::id())?;
    let started = Instant::now();
    // On a thread and runtime of its own, so that the clients' work never delays a change.
    let changes = {
        let args = args.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(change(&args, slots))
        })
    };
    let changes = tokio::task::spawn_blocking(move || changes.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the change thread panicked".to_owned())??;
    tokio::time::sleep(Duration::from_secs(3)).await; // the last changes' way to the clients
    let secs = started.elapsed().as_secs_f64();
    let after = pid.map(ProcessStats::read).transpose()?;
    let own = ProcessStats::read(std::process::id())?.cpu_secs - own_before.cpu_secs;
    for client in &clients {
        client.abort();
    }

    let mut lags: Vec<u32> = every_lag.iter().flat_map(|l| l.lock().clone()).collect();
    let expected = changes * every_lag.len() as u64;
    let undelivered = expected.saturating_sub(lags.len() as u64);
    // A change a client never got counts as the longest possible lag: the whole run.
    lags.extend((0..undelivered).map(|_| (secs * 1000.0) as u32));
    let mut histogram = histogram();
    for lag in &lags {
        let _ = histogram.record(u64::from(*lag).max(1));
    }
    let quantile = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p99, max) = (
        quantile(0.5),
        quantile(0.99),
        histogram.max() as f64 / 1000.0,
    );
    let cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    let requests = totals.requests.load(Ordering::Relaxed) as f64 / secs;
    let events_read = totals.events_read.load(Ordering::Relaxed) as f64 / secs;
    println!(
        "lag from ingest to fresh odds: p50 {p50:.3} s, p99 {p99:.3} s, max {max:.3} s; \
         {undelivered} of {expected} never arrived; {requests:.0} reads/s ({events_read:.0} \
         events/s); {} resyncs; CPU: server {}, this tool {:.0}%",
        totals.resyncs.load(Ordering::Relaxed),
        cpu.map_or("-".into(), |c| format!("{:.0}%", 100.0 * c / secs)),
        100.0 * own / secs,
    );
    println!(
        "{}",
        json!({
            "mode": "board", "way": format!("{way:?}").to_lowercase(), "clients": clients.len(),
            "events": args.events, "changes_per_sec": args.changes_per_sec, "changes": changes,
            "lag_p50_secs": p50, "lag_p99_secs": p99, "lag_max_secs": max,
            "undelivered": undelivered, "reads_per_sec": requests, "event_reads_per_sec": events_read,
            "messages": totals.messages.load(Ordering::Relaxed),
            "resyncs": totals.resyncs.load(Ordering::Relaxed),
            "server_cpu_share": cpu.map(|c| c / secs), "load_cpu_share": own / secs,
        })
    );
    Ok(())
}

/// Changes slots in turn at `--changes-per-sec` for `--duration` seconds, in ticks of 50 ms
/// (one request per source and tick); returns how many changes were made.
async fn change(args: &Args, slots: usize) -> Result<u64, String> {
    let mut ingest = connect(args).await?;
    let tick = Duration::from_millis(50);
    let per_tick = args.changes_per_sec * tick.as_secs_f64();
    let ticks = (args.duration as f64 / tick.as_secs_f64()) as u64;
    let mut interval = tokio::time::interval(tick);
    let (mut made, mut owed) = (0u64, 0.0);
    for _ in 0..ticks {
        interval.tick().await;
        owed += per_tick;
        let now = now_ms();
        let mut by_source: [Vec<(usize, u64)>; 3] = Default::default();
        while owed >= 1.0 {
            let slot = made as usize % slots;
            // The cycle prices the change: each differs from the slot's last (and the seed).
            by_source[slot % 3].push((slot, 1 + made / slots as u64));
            made += 1;
            owed -= 1.0;
        }
        for (index, chosen) in by_source.iter().enumerate() {
            if !chosen.is_empty() {
                post(&mut ingest, &body(SOURCES[index], chosen, now)).await?;
            }
        }
    }
    Ok(made)
}

/// An ingest of `(slot, cycle)`s of one source, captured at `at_ms` (0: now, for the seed),
/// priced by their cycle.
fn body(source: &str, slots: &[(usize, u64)], at_ms: u64) -> serde_json::Value {
    let market = |id: &str, outcomes: &[&str], price: f64| {
        let outcomes: Vec<_> = outcomes
            .iter()
            .map(|name| json!({"name": name, "odds": price}))
            .collect();
        json!({"market_id": id, "name": id, "outcomes": outcomes})
    };
    let snapshots: Vec<_> = slots
        .iter()
        .map(|&(slot, cycle)| {
            let price = 1.5 + (cycle % 50) as f64 / 100.0;
            let mut snapshot = json!({
                "event_id": FIRST_ID + (slot / 3) as u64,
                "bookmaker_id": slot,
                "markets": [
                    market("1x2", &["1", "X", "2"], price),
                    market("ou_2.5", &["Over", "Under"], price),
                    market("btts", &["Yes", "No"], price),
                ],
            });
            if at_ms > 0 {
                snapshot["captured_at"] = json!(rfc3339(at_ms));
            }
            snapshot
        })
        .collect();
    json!({"source": source, "snapshots": snapshots})
}

/// One client's view: the newest `captured_at` it holds per slot (ms since the run began,
/// plus one), and its lags in ms, read by `run` at the end.
struct Seen {
    newest: Vec<u32>,
    start_ms: u64,
    lags: Arc<Mutex<Vec<u32>>>,
    totals: Arc<Totals>,
}

impl Seen {
    fn new(slots: usize, start_ms: u64, totals: Arc<Totals>) -> Seen {
        let newest = vec![0; slots];
        let lags = Arc::default();
        Seen {
            newest,
            start_ms,
            lags,
            totals,
        }
    }

    /// Every snapshot in `text` (a read's reply or an `odds_change`): a newer one is a lag.
    /// An untimed client holds no slots and skips this.
    fn take(&mut self, text: &[u8]) {
        if self.newest.is_empty() {
            return;
        }
        let now = now_ms();
        let mut rest = text;
        while let Some(at) = memmem::find(rest, b"\"bookmaker_id\":") {
            rest = &rest[at + 15..];
            let slot = digits(rest).map(|n| n as usize);
            let Some(at) = memmem::find(rest, b"\"captured_at\":\"") else {
                break;
            };
            rest = &rest[at + 15..];
            let (Some(slot), Some(captured)) = (slot, parse_ms(rest)) else {
                continue;
            };
            let Some(newest) = self.newest.get_mut(slot) else {
                continue;
            };
            let since_start = captured.saturating_sub(self.start_ms) as u32 + 1;
            if captured >= self.start_ms && since_start > *newest {
                *newest = since_start;
                self.lags.lock().push(now.saturating_sub(captured) as u32);
            }
        }
    }
}

async fn take_changes(mut socket: Socket, mut seen: Seen) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            seen.totals.messages.fetch_add(1, Ordering::Relaxed);
            if text.contains("\"type\":\"resync\"") {
                seen.totals.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            seen.take(text.as_bytes());
        }
    }
}

/// The board's way: the socket's ids go to a reader that gathers them and reads in bulk.
async fn refetch(mut socket: Socket, client: Client, seen: Seen) {
    let (ids, gathered) = mpsc::unbounded_channel();
    let totals = seen.totals.clone();
    let reader = tokio::spawn(read_in_bulk(client, gathered, seen));
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        totals.messages.fetch_add(1, Ordering::Relaxed);
        if text.contains("\"type\":\"resync\"") {
            totals.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        let Some(at) = text.find("\"event_ids\":[") else {
            continue;
        };
        let list = &text[at + 13..];
        let list = &list[..list.find(']').unwrap_or(0)];
        for id in list.split(',').filter_map(|id| id.parse::<u64>().ok()) {
            let _ = ids.send(id);
        }
    }
    reader.abort();
}

async fn read_in_bulk(mut client: Client, mut ids: mpsc::UnboundedReceiver<u64>, mut seen: Seen) {
    let mut pending = std::collections::BTreeSet::new();
    while let Some(first) = ids.recv().await {
        pending.insert(first);
        tokio::time::sleep(GATHER).await;
        while let Ok(id) = ids.try_recv() {
            pending.insert(id);
        }
        let all: Vec<u64> = std::mem::take(&mut pending).into_iter().collect();
        for chunk in all.chunks(BULK) {
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let path = format!("/api/events/odds?ids={}", list.join(","));
            let Ok(reply) = get(&mut client, &path).await else {
                return;
            };
            seen.totals.requests.fetch_add(1, Ordering::Relaxed);
            seen.totals
                .events_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            seen.take(&reply);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn digits(text: &[u8]) -> Option<u64> {
    let end = text.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

/// The RFC 3339 time at the start of `text`, up to its closing quote, as ms since the Unix
/// epoch.
fn parse_ms(text: &[u8]) -> Option<u64> {
    let end = memchr::memchr(b'"', text)?;
    let text = std::str::from_utf8(&text[..end]).ok()?;
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for ms in [0, 951_782_400_123, 1_795_000_000_999, 4_107_542_399_999] {
            let quoted = format!("{}\"", rfc3339(ms));
            assert_eq!(parse_ms(quoted.as_bytes()), Some(ms), "{quoted}");
        }
        assert_eq!(rfc3339(1_795_000_000_999), "2026-11-18T11:06:40.999Z");
        // As the server writes it: always three digits below the second.
        assert_eq!(
            parse_ms(b"2026-11-18T11:06:40.990Z\"}"),
            Some(1_795_000_000_990)
        );
    }
}
