//! oddsbus: a real-time odds broker.
//!
//! Scrapers and backends put odds snapshots into the [`OddsCache`]; whenever a put changes
//! something, every WebSocket client subscribed to `odds_updates` is told which event ids
//! changed, and refetches them from the cache-first HTTP reads; a client subscribed to
//! `odds_changes` gets the changed snapshots themselves. The wire contract is
//! `docs/PROTOCOL.md`.
//!
//! The map of the code (the path a change travels, file by file, and what holds what) is
//! `docs/ARCHITECTURE.md`.
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
mod analysis;
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
mod store;
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
    ClientError, ClientMessage, ErrorCode, Frame, Health, HistoryQuery, HistoryReply, HttpError,
    HttpErrorCode, IngestReply, OddsUpdate, Position, Positions, PricePoint, PriceSeries,
    ScrapePhase, ScrapeProgress, ServerMessage, SinceEntry, Thresholds, Timestamp, Topic, TopicSet,
};

#[cfg(feature = "server")]
pub use broker::{Broker, Parts};
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
