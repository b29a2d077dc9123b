//! A PostgreSQL server of the test's own: `initdb` and `postgres` from the system's install
//! (Debian's `postgresql` package), in a temporary directory, on a free port, with
//! `fsync=off`; run as the `postgres` user when the test runs as root, since PostgreSQL
//! refuses root. Stopped and removed when dropped. Tests never touch the machine's server.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{TestServer, WAIT};

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
}

impl PgServer {
    /// A broker on this database (its test configuration changed by `change`), once it
    /// serves (migrated and loaded: it accepts only then).
    pub async fn serve(&self, change: impl FnOnce(&mut oddsbus::Config)) -> TestServer {
        let url = self.url();
        let server = TestServer::with(move |c| {
            c.database_url = Some(url);
            change(c);
        })
        .await;
        let (status, health) = server.get("/healthz").await;
        assert_eq!(
            (status, &health["database"]),
            (200, &json!("ok")),
            "{health}"
        );
        server
    }

    /// A fresh server with a database `oddsbus`, answering.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "oddsbus-pg-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // From here on, dropping it (a failed step panics) removes the directory.
        let mut server = PgServer { port: 0, dir };
        if is_root() {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir)
                .status();
            assert!(
                chown.is_ok_and(|s| s.success()),
                "chown {}",
                server.dir.display()
            );
        }
        let data = data(&server.dir);
        run(
            &bin,
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        );
        loop {
            server.port = super::free_port();
            if server.launch(&bin) {
                let port = server.port.to_string();
                run(
                    &bin,
                    "createdb",
                    &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "oddsbus"],
                );
                return server;
            }
            // Another test's server took the port first: try another.
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/oddsbus`, for `--database-url`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/oddsbus", self.port)
    }

    /// Runs `sql` with psql and returns what it printed (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> String {
        let output = Command::new(bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "oddsbus", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops it (fast shutdown), keeping its data: a database that is down.
    pub fn stop(&self) {
        run(
            &bin_dir(),
            "pg_ctl",
            &["-D", &data(&self.dir), "-m", "fast", "-w", "stop"],
        );
    }

    /// Freezes it (SIGSTOP to the server and every process it started): it holds its
    /// connections and answers nothing.
    pub fn freeze(&self) {
        assert!(self.signal("-STOP"), "the server is frozen");
    }

    /// Wakes it (SIGCONT).
    pub fn thaw(&self) {
        assert!(self.signal("-CONT"), "the server is woken");
    }

    /// Sends `signal` to the server and its processes; whether it could.
    fn signal(&self, signal: &str) -> bool {
        let pid_file = format!("{}/postmaster.pid", data(&self.dir));
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            return false;
        };
        let server = text.lines().next().unwrap_or_default().trim().to_owned();
        // The server first (a frozen server starts no new process), then its children, from
        // /proc (the fourth field of `stat` is the parent's pid); a child may have ended
        // meanwhile (a connection closed).
        let kill = |pid: &str| {
            let status = Command::new("kill")
                .args([signal, pid])
                .stderr(Stdio::null())
                .status();
            status.is_ok_and(|s| s.success())
        };
        if !kill(&server) {
            return false;
        }
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            if after_name.split(' ').nth(1) == Some(server.as_str()) {
                kill(&entry.file_name().to_string_lossy());
            }
        }
        true
    }

    /// Starts it again on its port.
    pub fn restart(&self) {
        assert!(
            self.launch(&bin_dir()),
            "postgres restarts on {}",
            self.port
        );
    }

    /// Starts the server on its port; `false` if it exits first (the port was taken).
    fn launch(&self, bin: &std::path::Path) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = format!("{}/log", self.dir.display());
        let mut pg_ctl = Command::new(bin.join("pg_ctl"));
        pg_ctl.args([
            "-D",
            &data(&self.dir),
            "-o",
            &options,
            "-l",
            &log,
            "-w",
            "-t",
            "10",
            "start",
        ]);
        if !as_owner(&mut pg_ctl) {
            return false;
        }
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status();
            if ready.is_ok_and(|s| s.success()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.signal("-CONT"); // a test that failed while it was frozen
        let mut stop = Command::new(bin_dir().join("pg_ctl"));
        stop.args(["-D", &data(&self.dir), "-m", "immediate", "-w", "stop"]);
        as_owner(&mut stop);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn data(dir: &std::path::Path) -> String {
    format!("{}/data", dir.display())
}

/// Where the system's PostgreSQL programs are (`/usr/lib/postgresql/N/bin` on Debian).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian's `postgresql` package; .ci/run installs it)")
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL with initdb")
}

/// Runs one of PostgreSQL's programs and checks that it succeeded.
fn run(bin: &std::path::Path, program: &str, args: &[&str]) {
    let mut command = Command::new(bin.join(program));
    command.args(args);
    assert!(as_owner(&mut command), "{program} {args:?} failed");
}

/// Runs `command` as the `postgres` user when this process is root, quietly; whether it
/// succeeded.
fn as_owner(command: &mut Command) -> bool {
    let mut command = if is_root() {
        let mut wrapped = Command::new("runuser");
        wrapped.args(["-u", "postgres", "--"]);
        wrapped.arg(command.get_program());
        wrapped.args(command.get_args());
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    } else {
        std::mem::replace(command, Command::new("true"))
    };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir(std::env::temp_dir())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
