//! Runtime configuration: command-line flags, each also settable by an environment variable.
//!
//! [`Config::default`] is the embedded default that `make run` uses; tests start from it and
//! change what they need.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use crate::protocol::HOME_SOURCE;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Everything oddsbus can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(name = "oddsbus", version, about = "Real-time odds broker")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ODDSBUS_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

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
    #[arg(long, env = "ODDSBUS_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: u64,

    /// Most snapshots accepted in one `POST /api/odds`; more get 400.
    #[arg(long, env = "ODDSBUS_MAX_SNAPSHOTS", default_value_t = 10_000)]
    pub max_snapshots_per_request: usize,

    /// Largest WebSocket message a client may send, in bytes; larger ones close with 1009.
    #[arg(long, env = "ODDSBUS_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Send one `odds_update` per cache put instead of merging what is queued per source.
    /// Only useful to measure what merging saves.
    #[arg(long, env = "ODDSBUS_NO_COALESCE")]
    pub no_coalesce: bool,

    /// Seconds to wait for connections to finish on shutdown before giving up on them.
    #[arg(long, env = "ODDSBUS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    /// The embedded defaults (environment variables still apply, as for the binary).
    fn default() -> Config {
        Config::parse_from(["oddsbus"])
    }
}

impl Config {
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
        assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.sources(), ["betpawa", "sportybet", "bet9ja"]);
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
