//! A `redis-server` of the test's own (Debian's package), on a free port, saving nothing:
//! tests never touch the machine's shared Redis. Killed when dropped. And the helpers of the
//! cluster tests.

use std::io::{Read, Write};
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

/// `GET /api/events/{event_id}/odds`: its status and body, to compare nodes.
pub async fn read_odds(server: &TestServer, event_id: u64) -> (u16, Value) {
    server.get(&format!("/api/events/{event_id}/odds")).await
}

pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub fn start() -> RedisServer {
        loop {
            let port = super::free_port();
            if let Some(child) = spawn(port) {
                return RedisServer { port, child };
            }
            // Another test's server took the port first: try another.
        }
    }

    /// `redis://127.0.0.1:PORT`, for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The integer reply to an inline command (`HLEN oddsbus:state:betpawa`): how tests look
    /// at what Redis itself holds.
    pub fn integer(&self, command: &str) -> i64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("redis answers");
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("a command");
        let mut line = || {
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            while !reply.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).expect("a reply");
                reply.push(byte[0]);
            }
            String::from_utf8_lossy(&reply).trim().to_owned()
        };
        // An integer (`:N`), or a number sent as a bulk string (`$LEN`, then the text).
        let first = line();
        let text = match first.strip_prefix('$') {
            Some(_) => line(),
            None => first.trim_start_matches(':').to_owned(),
        };
        text.parse().unwrap_or_else(|_| panic!("{command}: {text}"))
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
        self.child = spawn(self.port).expect("redis-server restarts on its port");
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

/// Starts a redis-server on `port` and waits until it answers `PING` (so not another
/// test's server that took the port); `None` if it exits first (the port was taken).
fn spawn(port: u16) -> Option<Child> {
    let mut child = Command::new("redis-server")
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
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if answers_ping(port) {
            return Some(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server did not answer on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
