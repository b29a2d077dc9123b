//! A `redis-server` of the test's own (Debian's package), on a free port, saving nothing:
//! tests never touch the machine's shared Redis. Killed when dropped. And the helpers of the
//! cluster tests.

use std::future::Future;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{TestServer, WAIT};

/// A cluster member on `redis`, in-process.
pub async fn node(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::with(move |c| c.redis = Some(url)).await
}

/// Polls `check` until it holds, failing after [`WAIT`] (nodes follow the log in their own time).
pub async fn eventually<F: Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/events/{event_id}/odds`: its status and body, to compare nodes.
pub async fn read_odds(server: &TestServer, event_id: u64) -> (u16, Value) {
    server.get(&format!("/api/events/{event_id}/odds")).await
}

pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one and waits until it takes connections.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        RedisServer {
            port,
            child: spawn(port),
        }
    }

    /// `redis://127.0.0.1:PORT`, for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes it (SIGSTOP): it holds its connections and answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Wakes it (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Kills it and starts a fresh, empty one on the same port: Redis lost its data.
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port);
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &std::env::temp_dir().to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (Debian's `redis-server` package; .ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
