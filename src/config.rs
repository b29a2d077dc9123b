//! Runtime configuration: command-line flags, each also settable by an environment variable.
//!
//! [`Config::default`] is the embedded default that `make run` uses; tests start from it and
//! change what they need.

use std::time::Duration;

use clap::builder::{BoolishValueParser, RangedU64ValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};

use crate::protocol::{Thresholds, HOME_SOURCE};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where scrape runs get their odds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// A deterministic simulated market (see `src/scrape/simulated.rs`).
    Simulated,
}

/// Everything oddsbus can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(name = "oddsbus", version, about = "Real-time odds broker")]
pub struct Config {
    /// Address to listen on, `HOST:PORT`; the host may be a name (`localhost:8000`). Only this
    /// machine can connect to a loopback address: `0.0.0.0:8000` listens on every interface.
    #[arg(long, env = "ODDSBUS_LISTEN", default_value = "127.0.0.1:8000", value_parser = parse_listen)]
    pub listen: String,

    /// Competitor sources accepted besides the home bookmaker `betpawa`, comma-separated.
    #[arg(
        long,
        env = "ODDSBUS_COMPETITORS",
        value_delimiter = ',',
        default_value = "sportybet,bet9ja",
        value_parser = parse_competitor
    )]
    pub competitors: Vec<String>,

    /// Log filter in `tracing` syntax, e.g. `info` or `oddsbus=debug,warp=info`.
    #[arg(long = "log", env = "ODDSBUS_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log line format.
    #[arg(long, env = "ODDSBUS_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Largest accepted `POST /api/odds` body, in bytes; larger bodies get 413.
    #[arg(long, env = "ODDSBUS_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub max_body_bytes: u64,

    /// Most snapshots accepted in one `POST /api/odds`; more get 400.
    #[arg(long, env = "ODDSBUS_MAX_SNAPSHOTS", default_value_t = 10_000,
          value_parser = count(1, 1_000_000))]
    pub max_snapshots_per_request: usize,

    /// Largest WebSocket message a client may send, in bytes; larger ones close with 1009.
    /// Nor is any `odds_change` the server sends larger: a snapshot that would not fit comes
    /// as an `odds_update` of its id.
    #[arg(long, env = "ODDSBUS_MAX_FRAME_BYTES", default_value_t = 64 * 1024,
          value_parser = count(256, 16 << 20))]
    pub max_frame_bytes: usize,

    /// Send one `odds_update` per cache put instead of merging what is queued per source.
    /// Only useful to measure what merging saves. The variable takes `1`, `true`, `yes`, `on`.
    #[arg(long, env = "ODDSBUS_NO_COALESCE", value_parser = BoolishValueParser::new())]
    pub no_coalesce: bool,

    /// Under sustained load, the shortest time between two publications, in milliseconds
    /// (changes arriving meanwhile are merged). A quiet broker never waits. 0: never wait.
    #[arg(long, env = "ODDSBUS_COALESCE_WINDOW_MS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub coalesce_window_ms: u64,

    /// Secret for HS256 tokens, at least 32 bytes. When set, WebSocket connections, ingest
    /// and starting scrape runs need a token (see docs/OPERATIONS.md, "Access control"); unset, nobody
    /// needs one.
    #[arg(long, env = "ODDSBUS_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub auth_secret: Option<String>,

    /// Browser origins allowed besides the server's own, comma-separated (e.g.
    /// `https://odds.example`): a WebSocket upgrade, ingest or scrape trigger from any other
    /// page gets 403.
    #[arg(long, env = "ODDSBUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most WebSocket connections at once; more get HTTP 503 before the upgrade.
    #[arg(long, env = "ODDSBUS_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = count(1, 1_000_000))]
    pub max_connections: usize,

    /// Most topics one connection may subscribe to.
    #[arg(long, env = "ODDSBUS_MAX_TOPICS_PER_CONNECTION", default_value_t = 16,
          value_parser = count(1, 64))]
    pub max_topics_per_connection: usize,

    /// Messages per second a WebSocket client may send on average; more get `rate_limited`.
    #[arg(long, env = "ODDSBUS_CLIENT_RATE", default_value_t = 20.0,
          value_parser = number(0.01, 100_000.0))]
    pub client_rate: f64,

    /// Messages a client may send at once before the rate applies. A client that goes on
    /// sending this many more after being refused is closed with 1008.
    #[arg(long, env = "ODDSBUS_CLIENT_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub client_burst: u32,

    /// Seconds between the server's pings on each WebSocket (fractions allowed); 0 turns
    /// heartbeats off.
    #[arg(long, env = "ODDSBUS_HEARTBEAT_INTERVAL", default_value = "20",
          value_parser = seconds_or_off(0.01, 3_600.0))]
    pub heartbeat_interval: Duration,

    /// Seconds a WebSocket client may stay silent (no message, no pong) before it is taken
    /// for dead (a half-open TCP connection) and dropped; more than the interval.
    #[arg(long, env = "ODDSBUS_HEARTBEAT_TIMEOUT", default_value = "60",
          value_parser = seconds(0.01, 86_400.0))]
    pub heartbeat_timeout: Duration,

    /// Seconds a write to a WebSocket client may make no progress (it stopped reading) before
    /// the client is closed with 1008.
    #[arg(long, env = "ODDSBUS_STUCK_TIMEOUT", default_value = "30",
          value_parser = seconds(0.01, 3_600.0))]
    pub stuck_timeout: Duration,

    /// Bytes the kernel may hold unsent per connection (SO_SNDBUF). Unset leaves it to the
    /// kernel's autotuning (up to `net.ipv4.tcp_wmem`'s maximum, often 4 MiB), which is also
    /// what a client that stopped reading can pin before its writes stall.
    #[arg(long, env = "ODDSBUS_SEND_BUFFER_BYTES", value_parser = clap::value_parser!(u32).range(4096..=64 << 20))]
    pub send_buffer_bytes: Option<u32>,

    /// Worker threads of the runtime that runs WebSocket connections (default: one per core).
    #[arg(long, env = "ODDSBUS_FANOUT_THREADS", value_parser = count(1, 1024))]
    pub fanout_threads: Option<usize>,

    /// Seconds each step of shutdown may take before it is given up on.
    #[arg(long, env = "ODDSBUS_SHUTDOWN_GRACE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_grace_secs: u64,

    /// Where scrape runs get their odds.
    #[arg(long, env = "ODDSBUS_SOURCE", value_enum, default_value = "simulated")]
    pub source: SourceKind,

    /// Seconds between the starts of periodic scrape runs (fractions allowed); 0 turns
    /// periodic scrapes off. The first run starts at once.
    #[arg(long, env = "ODDSBUS_SCRAPE_INTERVAL", default_value = "5",
          value_parser = seconds_or_off(0.05, 86_400.0))]
    pub scrape_interval: Duration,

    /// Events fetched and stored per batch during a scrape.
    #[arg(long, env = "ODDSBUS_SCRAPE_BATCH_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub scrape_batch_size: u16,

    /// Batches in flight at once during a scrape.
    #[arg(long, env = "ODDSBUS_SCRAPE_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1_000))]
    pub scrape_concurrency: u16,

    /// Seed of the simulated market: same seed, same sequence of odds.
    #[arg(long, env = "ODDSBUS_SIM_SEED", default_value_t = 42)]
    pub sim_seed: u64,

    /// Matches in the simulated market.
    #[arg(long, env = "ODDSBUS_SIM_EVENTS", default_value_t = 1300,
          value_parser = count(1, 1_000_000))]
    pub sim_events: usize,

    /// Fraction (0 to 1) of a platform's events whose odds move between two scrapes.
    #[arg(long, env = "ODDSBUS_SIM_CHANGE_FRACTION", default_value = "0.1",
          value_parser = number(0.0, 1.0))]
    pub sim_change_fraction: f64,

    /// Pretend network time of each simulated batch fetch, in milliseconds.
    #[arg(long, env = "ODDSBUS_SIM_LATENCY_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub sim_latency_ms: u64,

    /// Most events the cache holds; when full, the event updated longest ago is evicted to
    /// make room for a new one.
    #[arg(long, env = "ODDSBUS_MAX_EVENTS", default_value_t = 100_000,
          value_parser = count(1, 10_000_000))]
    pub max_events: usize,

    /// Seconds an event may go without an update before the cache drops it (24 h by
    /// default: a finished match stops being scraped and leaves).
    #[arg(long, env = "ODDSBUS_EVENT_TTL", default_value = "86400",
          value_parser = seconds(1.0, 31.0 * 86_400.0))]
    pub event_ttl: Duration,

    /// Seconds a snapshot's `captured_at` may lie ahead of this server's clock; one further
    /// ahead (a scraper's clock running fast) is taken as captured now, so that the next
    /// correct snapshot is not stale.
    #[arg(long, env = "ODDSBUS_MAX_CLOCK_SKEW", default_value = "5",
          value_parser = seconds(0.0, 3_600.0))]
    pub max_clock_skew: Duration,

    /// Seconds a client may take to send a request's headers, and again its body; slower
    /// requests get 408 (headers: the connection is closed).
    #[arg(long, env = "ODDSBUS_REQUEST_TIMEOUT", default_value = "30",
          value_parser = seconds(0.1, 300.0))]
    pub request_timeout: Duration,

    /// Most `POST /api/odds` requests handled at once; more get 503 `too_many_ingests`.
    #[arg(long, env = "ODDSBUS_MAX_INGESTS", default_value_t = 64, value_parser = count(1, 100_000))]
    pub max_ingests: usize,

    /// Most HTTP connections open at once that are not WebSockets; more are closed as they
    /// arrive.
    #[arg(long, env = "ODDSBUS_MAX_HTTP_CONNECTIONS", default_value_t = 1_024,
          value_parser = count(1, 1_000_000))]
    pub max_http_connections: usize,

    /// Most large reads served at once, off the runtime: lists of every event (`GET
    /// /api/events`), price histories and moves; more wait.
    #[arg(long, env = "ODDSBUS_MAX_LARGE_READS", default_value_t = 2, value_parser = count(1, 1_024))]
    pub max_large_reads: usize,

    /// Offsets each topic's history keeps, for clients that reconnect with `since` and for
    /// connections that fall behind (each change takes one: about 4,500 a minute at the
    /// default scrape, so the default outlasts `--history-ttl`).
    #[arg(long, env = "ODDSBUS_HISTORY_SIZE", default_value_t = 25_000,
          value_parser = count(1, 10_000_000))]
    pub history_size: usize,

    /// Seconds a message stays in its topic's history.
    #[arg(long, env = "ODDSBUS_HISTORY_TTL", default_value = "300",
          value_parser = seconds(1.0, 86_400.0))]
    pub history_ttl: Duration,

    /// Most bytes of messages each topic's history keeps.
    #[arg(long, env = "ODDSBUS_HISTORY_BYTES", default_value_t = 64 << 20,
          value_parser = count(1 << 10, 16 << 30))]
    pub history_bytes: usize,

    /// Most bytes the price history (`/api/events/{id}/history`, `/api/moves`) holds; past
    /// it, the event recorded longest ago leaves it.
    #[arg(long, env = "ODDSBUS_PRICE_HISTORY_BYTES", default_value_t = 256 << 20,
          value_parser = count(1 << 20, 64 << 30))]
    pub price_history_bytes: usize,

    /// Most bytes of a topic's messages a subscriber may be behind (published, not yet
    /// written to its socket); past it, it gets `resync` and continues from the latest. One
    /// that falls that far behind again within `--stuck-timeout` is closed (1008, too slow).
    #[arg(long, env = "ODDSBUS_MAX_LAG_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(64 << 10..=16 << 30))]
    pub max_lag_bytes: u64,

    /// Makes this node a cluster member, sharing its cache and logs through the Redis at this
    /// URL: `redis://[user:password@]HOST[:PORT][/DB]`. Unset, the node runs alone with
    /// everything in memory.
    #[arg(long, env = "ODDSBUS_REDIS", value_parser = parse_redis, hide_env_values = true)]
    pub redis: Option<String>,

    /// Keeps the odds in the PostgreSQL at this URL, behind the cache, and loads them back at
    /// start: `postgres://[user[:password]@]HOST[:PORT]/DATABASE`. The schema is created and
    /// migrated at start; an unreachable database, or a schema newer than this binary, stops
    /// the broker with status 2. Unset, everything is in memory only.
    #[arg(long, env = "ODDSBUS_DATABASE_URL", value_parser = parse_database, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Seconds `POST /api/odds?wait=persisted` waits for the odds to be committed to the
    /// database before it answers 503 `persist_timeout` (the cache has them either way).
    #[arg(long, env = "ODDSBUS_PERSIST_TIMEOUT", default_value = "5",
          value_parser = seconds(0.1, 300.0))]
    pub persist_timeout: Duration,

    /// Days of price history and alerts the database keeps (`--database-url`): each day is
    /// one table, dropped whole once all of it is older; current odds, details and opening
    /// prices of an event not updated for as long go too.
    #[arg(long, env = "ODDSBUS_RETENTION", default_value_t = 14,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention: u32,

    /// Most bytes the odds analysis (alerts, surebets, fair prices) holds; past it, the event
    /// taken in longest ago leaves it.
    #[arg(long, env = "ODDSBUS_ANALYSIS_BYTES", default_value_t = 128 << 20,
          value_parser = count(1 << 20, 64 << 30))]
    pub analysis_bytes: usize,

    /// The percentages a price move must reach to raise a `price_change` alert of severity
    /// `warning`, `elevated` and `critical`: three ascending numbers.
    #[arg(long, env = "ODDSBUS_ALERT_THRESHOLDS", default_value = "7,10,15",
          value_parser = Thresholds::parse)]
    pub alert_thresholds: Thresholds,

    /// Seconds between two alerts of one kind for one event and market; the alerts between
    /// are counted in `oddsbus_alerts_suppressed_total`, not sent. 0 sends every one.
    #[arg(long, env = "ODDSBUS_ALERT_COOLDOWN", default_value = "60",
          value_parser = seconds(0.0, 86_400.0))]
    pub alert_cooldown: Duration,

    /// Most `GET /api/scrape/stream` followers at once; more get 503 `too_many_streams`.
    #[arg(long, env = "ODDSBUS_MAX_SSE_STREAMS", default_value_t = 256,
          value_parser = count(1, 100_000))]
    pub max_sse_streams: usize,

    /// Most scrape runs that `GET /api/scrape/stream` may start per minute (joining a
    /// running run is not counted; periodic runs are not either); more get 429
    /// `too_many_scrapes`.
    #[arg(long, env = "ODDSBUS_MAX_SCRAPES_PER_MINUTE", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_scrapes_per_minute: u32,
}

impl Default for Config {
    /// The embedded defaults (environment variables still apply, as for the binary).
    fn default() -> Config {
        Config::parse_from(["oddsbus"])
    }
}

impl Config {
    /// The command line and environment, checked; on a bad value, exits with status 2 and
    /// a message naming the flag, as for any flag clap refuses.
    pub fn from_args() -> Config {
        let config = Config::parse();
        if let Err(message) = config.check() {
            let error = Config::command().error(ErrorKind::ArgumentConflict, message);
            error.exit();
        }
        config
    }

    /// What no single flag can check alone.
    pub fn check(&self) -> Result<(), String> {
        let beats = self.heartbeat_interval;
        if !beats.is_zero() && self.heartbeat_timeout <= beats {
            return Err(format!(
                "--heartbeat-timeout ({:?}) must be longer than --heartbeat-interval ({beats:?})",
                self.heartbeat_timeout
            ));
        }
        Ok(())
    }

    /// Whether `source` may push odds: the home bookmaker or a configured competitor.
    pub fn is_known_source(&self, source: &str) -> bool {
        source == HOME_SOURCE || self.competitors.iter().any(|c| c == source)
    }

    /// Every accepted source, home first.
    pub fn sources(&self) -> Vec<&str> {
        std::iter::once(HOME_SOURCE)
            .chain(self.competitors.iter().map(String::as_str))
            .collect()
    }
}

fn parse_listen(text: &str) -> Result<String, String> {
    let text = text.trim();
    let port = text
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(text.to_owned()),
        _ => Err(format!(
            "`{text}`: expected HOST:PORT, e.g. 127.0.0.1:8000, localhost:8000 or 0.0.0.0:8000"
        )),
    }
}

/// A count from `min` to `max`.
fn count(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..=max)
}

/// A number from `min` to `max`.
fn number(min: f64, max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |text: &str| match text.trim().parse::<f64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}`: expected a number from {min} to {max}")),
    }
}

/// Seconds (fractions allowed) from `min` to `max`.
fn seconds(min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text: &str| match text.trim().parse::<f64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs_f64(n)),
        _ => Err(format!("`{text}`: expected seconds from {min} to {max}")),
    }
}

/// 0 (off), or seconds from `min` to `max`.
fn seconds_or_off(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text: &str| match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs_f64(n)),
        _ => Err(format!(
            "`{text}`: expected 0 (off) or seconds from {min} to {max}"
        )),
    }
}

/// What the `redis` crate connects to: `redis://[user:password@]HOST[:PORT][/DB]`.
fn parse_redis(text: &str) -> Result<String, String> {
    let text = text.trim();
    let refuse = |why: &str| Err(format!("`{text}`: {why}, e.g. redis://127.0.0.1:6379"));
    let Ok(url) = url::Url::parse(text) else {
        return refuse("expected a Redis URL");
    };
    if url.scheme() != "redis" {
        return refuse("expected the `redis://` scheme");
    }
    match url.host_str() {
        None | Some("" | "0.0.0.0" | "[::]") => return refuse("expected a host to connect to"),
        Some(_) => {}
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return refuse("the path, if any, is a database number");
    }
    Ok(text.to_owned())
}

/// What `tokio-postgres` connects to: `postgres://[user[:password]@]HOST[:PORT]/DATABASE`.
fn parse_database(text: &str) -> Result<String, String> {
    let text = text.trim();
    let refuse = |why: &str| {
        Err(format!(
            "`{text}`: {why}, e.g. postgres://postgres@127.0.0.1:5432/oddsbus"
        ))
    };
    let Ok(url) = url::Url::parse(text) else {
        return refuse("expected a PostgreSQL URL");
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return refuse("expected the `postgres://` scheme");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return refuse("expected a host to connect to");
    }
    if url.path().trim_start_matches('/').is_empty() {
        return refuse("expected a database name");
    }
    Ok(text.to_owned())
}

/// Shortest secret: 256 bits, as HS256 wants; a shorter one can be guessed.
const MIN_SECRET_BYTES: usize = 32;

fn parse_secret(text: &str) -> Result<String, String> {
    if text.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret has {} bytes; it needs at least {MIN_SECRET_BYTES} \
             (e.g. `openssl rand -hex 32`)",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

fn parse_competitor(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a competitor name is empty".into());
    }
    if name == HOME_SOURCE {
        return Err(format!(
            "`{HOME_SOURCE}` is the home bookmaker, not a competitor"
        ));
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "`{name}`: competitor names use lowercase letters, digits, `_` and `-`"
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::try_parse_from(["oddsbus"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8000");
        assert_eq!(config.sources(), ["betpawa", "sportybet", "bet9ja"]);
        assert_eq!(config.scrape_interval, Duration::from_secs(5));
        let off = Config::try_parse_from(["oddsbus", "--scrape-interval", "0"]).unwrap();
        assert!(off.scrape_interval.is_zero());
    }

    #[test]
    fn listen_takes_host_names_and_flags_take_the_usual_words() {
        for listen in ["localhost:8000", "0.0.0.0:80", "[::1]:8000"] {
            let config = Config::try_parse_from(["oddsbus", "--listen", listen]).unwrap();
            assert_eq!(config.listen, listen);
        }
        for bad in ["localhost", ":8000", "localhost:http", "localhost:70000"] {
            assert!(
                Config::try_parse_from(["oddsbus", "--listen", bad]).is_err(),
                "{bad}"
            );
        }
        let on = Config::try_parse_from(["oddsbus", "--no-coalesce"]).unwrap();
        assert!(on.no_coalesce);
    }

    /// Every numeric flag has a range; a value outside it is refused with the flag's name.
    #[test]
    fn values_out_of_range_are_refused_naming_the_flag() {
        for bad in [
            ["--scrape-interval", "-1"],
            ["--scrape-interval", "soon"],
            ["--scrape-interval", "0.001"],
            ["--sim-change-fraction", "1.5"],
            ["--scrape-batch-size", "0"],
            ["--client-rate", "1e-20"],
            ["--client-rate", "NaN"],
            ["--coalesce-window-ms", "99999999999"],
            ["--heartbeat-interval", "inf"],
            ["--stuck-timeout", "0"],
            ["--max-connections", "0"],
            ["--max-frame-bytes", "10"],
            ["--max-body-bytes", "1"],
            ["--max-events", "0"],
            ["--event-ttl", "0"],
            ["--request-timeout", "1000"],
            ["--fanout-threads", "0"],
            ["--auth-secret", ""],
            ["--auth-secret", "short-secret"],
            ["--redis", "127.0.0.1:6379"],
            ["--redis", "redis://0.0.0.0:6379"],
            ["--redis", "redis://127.0.0.1:6379/x"],
            ["--database-url", "127.0.0.1:5432"],
            ["--database-url", "mysql://127.0.0.1/oddsbus"],
            ["--database-url", "postgres://127.0.0.1:5432"],
        ] {
            let flag = format!("{}={}", bad[0], bad[1]);
            let error = Config::try_parse_from(["oddsbus", &flag]);
            let error = error.expect_err(&flag).to_string();
            assert!(error.contains(bad[0]), "{bad:?}: {error}");
        }
        let beats = [
            "oddsbus",
            "--heartbeat-interval",
            "30",
            "--heartbeat-timeout",
            "20",
        ];
        let error = Config::try_parse_from(beats).unwrap().check().unwrap_err();
        assert!(error.contains("--heartbeat-timeout"), "{error}");
        assert!(Config::try_parse_from(["oddsbus"]).unwrap().check().is_ok());
    }

    #[test]
    fn bad_competitor_lists_are_refused() {
        for list in ["sportybet,,bet9ja", "betpawa", "Sporty Bet"] {
            assert!(
                Config::try_parse_from(["oddsbus", "--competitors", list]).is_err(),
                "{list}"
            );
        }
    }
}
