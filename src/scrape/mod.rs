//! Scrape runs: the source trait, the coordinator that runs one run at a time, and its
//! progress fan-out.
//!
//! A run visits the platforms in order (`betpawa` first, then each competitor). For each it
//! asks the [`OddsSource`] which events the platform lists, fetches their odds in batches of
//! `batch_size` events with up to `concurrency` batches in flight, and stores each batch with
//! [`OddsCache::put_batch`], the same mutation point the ingest uses, so notifications flow
//! through the cache-update bridge unchanged.
//!
//! Every step is a [`ScrapeProgress`]. It goes two ways: onto the dispatcher's queue for the
//! `scrape_progress` topic, and to the run's SSE listeners through an `async-broadcast`
//! channel. A listener who joins mid-run first gets the steps it missed, so every SSE stream
//! reads `started` ... `completed` (or `failed`).
//!
//! `coordinator.rs` holds the runs, `simulated.rs` the embedded default source and
//! `fixtures.rs` its matches.

mod coordinator;
mod fixtures;
mod simulated;

use futures_util::future::BoxFuture;

use crate::cache::Snapshot;

pub use self::coordinator::{run_periodic, ScrapeCoordinator};
pub use self::simulated::{SimulatedSettings, SimulatedSource};

/// Why a source could not deliver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Where odds come from. A real HTTP scraper implements this; the coordinator does not
/// change. Methods return boxed futures so that sources can be chosen at run time.
pub trait OddsSource: Send + Sync + 'static {
    /// The events `platform` lists now (for a web scraper: its fixtures page).
    fn list_events<'a>(&'a self, platform: &'a str)
        -> BoxFuture<'a, Result<Vec<u64>, SourceError>>;

    /// The current odds of `event_ids` on `platform` (for a web scraper: the event pages).
    /// Events the platform no longer has may be left out.
    fn fetch_odds<'a>(
        &'a self,
        platform: &'a str,
        event_ids: &'a [u64],
    ) -> BoxFuture<'a, Result<Vec<(u64, Snapshot)>, SourceError>>;
}

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// Platforms in visiting order, home bookmaker first.
    pub platforms: Vec<String>,
    /// Events fetched and stored per batch.
    pub batch_size: usize,
    /// Batches in flight at once.
    pub concurrency: usize,
}
