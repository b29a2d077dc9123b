//! oddsbus: a real-time odds broker.
//!
//! Scrapers and backends put odds snapshots into the [`OddsCache`]; whenever a put changes
//! something, every WebSocket client subscribed to `odds_updates` is told which event ids
//! changed, and refetches them from the cache-first HTTP reads; a client subscribed to
//! `odds_changes` gets the changed snapshots themselves. The wire contract is
//! `docs/PROTOCOL.md`.
//!
//! # Map
//!
//! A change travels through these files in this order:
//!
//! | step | file | what happens |
//! |---|---|---|
//! | 1 | `http/ingest.rs` | `POST /api/odds`: the body is read within its limit and the caller checked |
//! | 2 | `ingest.rs` | the body is decoded and checked whole, before any of it is applied |
//! | 3 | `cache/` | the [`OddsCache`] encodes each snapshot once (`snapshot.rs`), stores the batch under one lock, then calls its update callbacks with the changed ids and their JSON |
//! | 4 | `dispatcher.rs` | the cache-update bridge (a callback that only queues) feeds the dispatcher task, which merges, encodes once (`odds_update`; `odds_change` joins the stored JSON) and publishes |
//! | 5 | `topics/` (`mod.rs`, `history.rs`) | the [`ConnectionManager`] gives the message its topic's next offset, keeps it in the topic's history and hands it to every subscriber through the topic's `broadcast` channel |
//! | 6 | `topics/subscriber.rs` | each connection's [`Subscriber`] takes it in offset order, filling any gap from the history |
//! | 7 | `ws/connection/mod.rs` | each connection's task drains its receivers and writes the shared bytes to its socket |
//!
//! Around that path:
//!
//! | file | holds |
//! |---|---|
//! | `protocol/` | every wire type (WebSocket messages, topics, timestamps, HTTP errors and reply bodies), encoded and decoded by serde |
//! | `broker.rs` | the [`Broker`]: the shared handle every route and task holds |
//! | `server.rs` | the [`Server`]: wiring, the accept loop and ordered shutdown |
//! | `http/` | every route; `events.rs` holds the cache-first reads (joined from the cache's stored JSON by `cache/read.rs`, with their `ETag`), `scrape.rs` the scrape stream |
//! | `reply.rs` | JSON replies and errors, for HTTP routes and the WebSocket handshake alike |
//! | `ws/` | `GET /api/ws`: `admission.rs` (handshake, limits, auth), `connection/` (the task; `closing.rs`: how it ends), `commands.rs` (client messages as a pure function) |
//! | `scrape/` | scrape runs: the [`OddsSource`] trait, the coordinator, the simulated market and its fixtures |
//! | `engine/` | the [`Engine`]: where ingests and scrape steps are written, the scrape lease, health and members; `local.rs` a single node's (its cache, and `idempotency.rs` for `Idempotency-Key`), `redis/` a cluster member's (`--redis`: the append script, the log follower, heartbeats, scrape leases) |
//! | `prices/` | how the odds moved: the price history behind `/api/events/{id}/history` and `/api/moves` |
//! | `auth.rs` | optional tokens (HS256 JWT) and allowed origins |
//! | `bucket.rs` | the token bucket behind the dispatcher's pacing and the client message rate |
//! | `metrics.rs` | what `GET /metrics` serves |
//! | `config.rs` | flags and environment variables |
//! | `web.rs` | the live odds board (`web/`), embedded and served at `/` |
//!
//! `src/main.rs` only parses the configuration, sets up logging and waits for Ctrl-C or
//! SIGTERM; everything else runs in-process in tests.
//!
//! Without its default `server` feature the crate is only the wire types, the decoders and
//! the cache: what the fuzz targets (`fuzz/`) exercise, built with a fraction of the
//! dependencies.

#![deny(missing_docs, missing_debug_implementations)]

mod cache;
mod config;
mod ingest;
mod protocol;

#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
mod broker;
#[cfg(feature = "server")]
mod bucket;
#[cfg(feature = "server")]
mod dispatcher;
#[cfg(feature = "server")]
mod engine;
#[cfg(feature = "server")]
mod http;
#[cfg(feature = "server")]
mod metrics;
#[cfg(feature = "server")]
mod prices;
#[cfg(feature = "server")]
mod reply;
#[cfg(feature = "server")]
mod scrape;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod topics;
#[cfg(feature = "server")]
mod web;
#[cfg(feature = "server")]
mod ws;

pub use cache::{
    intern, Changes, Details, EventDetails, EventOdds, EventSummary, Market, OddsCache, Outcome,
    PutOutcome, Snapshot, StoredSnapshot, Tag,
};
pub use config::{Config, LogFormat, SourceKind};
pub use ingest::{check_details, check_markets, decode as decode_ingest, IngestBatch};
pub use protocol::{
    decode_client, encode, encode_odds_change, parse_topics, since_from_query, BadSince,
    ClientError, ClientMessage, ErrorCode, Frame, Health, HttpError, HttpErrorCode, IngestReply,
    OddsUpdate, Position, Positions, ScrapePhase, ScrapeProgress, ServerMessage, SinceEntry,
    Timestamp, Topic, TopicSet,
};

#[cfg(feature = "server")]
pub use broker::Broker;
#[cfg(feature = "server")]
pub use dispatcher::{
    bus_channel, create_cache_update_bridge, run_dispatcher, BusEvent, BusReceiver, BusSender,
    Coalescing,
};
#[cfg(feature = "server")]
pub use engine::{Cluster, Engine, Member, Node, Stored};
#[cfg(feature = "server")]
pub use scrape::{OddsSource, ScrapeCoordinator, SimulatedSettings, SimulatedSource, SourceError};
#[cfg(feature = "server")]
pub use server::Server;
#[cfg(feature = "server")]
pub use topics::{
    ConnectionManager, Delivery, HistoryLimits, Joined, Published, Stats, Subscriber,
    TOPIC_CAPACITY,
};
