//! oddsbus: a real-time odds broker.
//!
//! Scrapers and backends put odds snapshots into the [`OddsCache`]; whenever a put changes
//! something, every WebSocket client subscribed to `odds_updates` is told which event ids
//! changed, and refetches them from the cache-first HTTP reads. The wire contract is
//! `shared/PROTOCOL.md`.
//!
//! # Map
//!
//! A change travels through the modules in this order:
//!
//! | module | holds |
//! |---|---|
//! | [`cache`] | the [`OddsCache`]: latest snapshot per event and source, update callbacks |
//! | [`bridge`] | the cache-update bridge (a callback that only queues) and the dispatcher task that merges, encodes once and publishes |
//! | [`manager`] | the [`ConnectionManager`]: one `broadcast` channel per topic and the registry of live connections |
//! | [`ws`] | `GET /api/ws`: the upgrade and the task that runs each connection |
//! | [`ingest`] | decoding and checking an ingest body before any of it is applied |
//! | [`http`] | ingest, cache-first reads, the scrape SSE stream, stats, health, JSON error replies |
//! | [`scrape`] | scrape runs: the [`OddsSource`] trait, the coordinator, progress fan-out |
//! | [`simulated`] | the simulated market, the embedded default source |
//! | [`web`] | the live odds board page (`web/`), embedded and served at `/` |
//! | [`protocol`] | every wire type, encoded and decoded by serde |
//! | [`bucket`] | the token bucket behind the dispatcher's pacing and the client message rate limit |
//! | [`config`] | flags and environment variables |
//! | [`auth`] | optional tokens (HS256 JWT) and allowed origins |
//! | [`metrics`] | counters, gauges and histograms served by `GET /metrics` |
//! | [`server`] | wiring, the accept loop and ordered shutdown |
//!
//! `src/main.rs` only parses the configuration, sets up logging and waits for Ctrl-C or
//! SIGTERM; everything else runs in-process in tests.

#![deny(missing_docs, missing_debug_implementations)]

pub mod auth;
pub mod bridge;
pub mod bucket;
pub mod cache;
pub mod config;
pub mod http;
pub mod ingest;
pub mod manager;
pub mod metrics;
pub mod protocol;
pub mod scrape;
pub mod server;
pub mod simulated;
pub mod web;
pub mod ws;

pub use bridge::{create_cache_update_bridge, BusEvent, BusSender, Coalescing};
pub use cache::{Market, OddsCache, Outcome, PutOutcome, Snapshot, StoredSnapshot};
pub use config::{Config, LogFormat, SourceKind};
pub use manager::{ConnectionManager, Delivery, Stats, Subscriber, TOPIC_CAPACITY};
pub use protocol::{Frame, ScrapePhase, ScrapeProgress, Timestamp, Topic, TopicSet};
pub use scrape::{OddsSource, ScrapeCoordinator, SourceError};
pub use server::{Broker, Server};
pub use simulated::SimulatedSource;
