//! What one idle subscribed connection costs the server to hold, in heap bytes: a real
//! oddsbus on 127.0.0.1, connections opened with blocking sockets that hold no heap of their
//! own (the handshake's buffers are freed before the count), and a counting allocator. Each
//! sample opens as many connections as criterion asks for, each up to its `connection_ack`
//! and the pong of a ping, reads what the heap grew by, then closes them and waits until the
//! server has let them all go. Reported per connection; the RSS it adds (heap, allocator slack,
//! kernel socket buffers aside) is what `scripts/compare.sh` measures.
//!
//! Run with `cargo bench --bench connection`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oddsbus::{Config, Server};
use tokio_util::sync::CancellationToken;

/// Bytes allocated and not yet freed, by every thread.
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Criterion's measurement: heap bytes held, instead of time.
struct HeapBytes;

impl Measurement for HeapBytes {
    type Intermediate = i64;
    type Value = i64;

    fn start(&self) -> i64 {
        LIVE.load(Ordering::Relaxed)
    }

    fn end(&self, start: i64) -> i64 {
        LIVE.load(Ordering::Relaxed) - start
    }

    fn add(&self, a: &i64, b: &i64) -> i64 {
        a + b
    }

    fn zero(&self) -> i64 {
        0
    }

    fn to_f64(&self, value: &i64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &Bytes
    }
}

struct Bytes;

impl ValueFormatter for Bytes {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "B"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        _: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "B"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "B"
    }
}

/// Opens a subscribed WebSocket connection and reads up to its `connection_ack`.
fn subscribe(addr: SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET /api/ws?topics=odds_updates HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(&socket);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let ack = frame(&mut reader);
    assert!(ack.starts_with(br#"{"type":"connection_ack""#), "{ack:?}");
    // A ping, and its pong: the connection has read a frame and is idle again, as a
    // connection that was used is.
    let ping = br#"{"type":"ping"}"#;
    let mut masked = vec![0x81, 0x80 | ping.len() as u8, 0, 0, 0, 0]; // a zero mask
    masked.extend_from_slice(ping);
    reader.get_mut().write_all(&masked).unwrap();
    let pong = frame(&mut reader);
    assert!(pong.starts_with(br#"{"type":"pong""#), "{pong:?}");
    drop(reader);
    socket
}

/// Reads one unmasked frame from the server, its length in 7 or 16 bits.
fn frame(reader: &mut BufReader<&TcpStream>) -> Vec<u8> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            reader.read_exact(&mut ext).unwrap();
            u16::from_be_bytes(ext) as usize
        }
        len => len as usize,
    };
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).unwrap();
    payload
}

/// Connections the server holds, from `/api/ws/stats`.
fn held(addr: SocketAddr) -> u64 {
    let mut socket = TcpStream::connect(addr).unwrap();
    let request =
        format!("GET /api/ws/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).unwrap();
    let at = reply.find("\"active_connections\":").unwrap() + 21;
    let digits: String = reply[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

fn connection(c: &mut Criterion<HeapBytes>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
    runtime.spawn(Server::new(config).run(listener, stop.clone().cancelled_owned()));
    // The server's first connection grows tables that stay: not a connection's cost.
    drop(subscribe(addr));

    let mut group = c.benchmark_group("connection");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("idle_subscribed_heap_bytes", |b| {
        b.iter_custom(|count| {
            let before = LIVE.load(Ordering::Relaxed);
            let sockets: Vec<TcpStream> = (0..count).map(|_| subscribe(addr)).collect();
            let grew = LIVE.load(Ordering::Relaxed) - before;
            drop(sockets);
            while held(addr) > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            grew
        })
    });
    group.finish();
    stop.cancel();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(HeapBytes);
    targets = connection
}
criterion_main!(benches);
