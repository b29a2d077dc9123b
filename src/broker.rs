//! The broker's shared state: one cheap `Clone` handle that every route, connection task and
//! background task holds.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::cache::{CacheLimits, OddsCache};
use crate::config::Config;
use crate::dispatcher::{self, BusReceiver, BusSender};
use crate::manager::ConnectionManager;
use crate::metrics::Metrics;
use crate::scrape::{OddsSource, ScrapeCoordinator, ScrapeSettings};

/// Handle to the broker's shared parts, cloned into every route and connection task.
#[derive(Clone, Debug)]
pub struct Broker {
    /// Start-up configuration.
    pub config: Arc<Config>,
    /// The odds store.
    pub cache: OddsCache,
    /// Topic channels and the connection registry.
    pub manager: ConnectionManager,
    /// Counters, gauges and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The dispatcher's queue, for producers other than the cache (scrape progress).
    pub bus: BusSender,
    /// Runs scrape runs, one at a time.
    pub scrape: ScrapeCoordinator,
    /// Cancelled first on shutdown: producers stop and SSE streams end.
    pub shutdown: CancellationToken,
    /// Cancelled when WebSocket connections must close (the last step of shutdown).
    pub ws_close: CancellationToken,
    /// Tasks that feed the dispatcher (scrape runs, the periodic scheduler): shutdown waits
    /// for them before it stops the dispatcher, so their last steps are still published.
    pub producers: TaskTracker,
    /// Every WebSocket task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// The fan-out runtime, where WebSocket connection tasks run.
    pub fanout: Handle,
    /// Tokens and origins.
    pub auth: Arc<Auth>,
    /// One permit per WebSocket connection allowed (`--max-connections`); a connection task
    /// owns its permit, so it is returned however the connection ends.
    pub connection_slots: Arc<Semaphore>,
}

impl Broker {
    /// Builds the cache, the manager, the bridge between them and the scrape coordinator.
    /// Returns the dispatcher's queue, which the caller hands to the dispatcher task.
    pub fn new(
        config: Config,
        source: Arc<dyn OddsSource>,
        fanout: Handle,
    ) -> (Broker, BusReceiver) {
        let cache = OddsCache::with_limits(CacheLimits {
            max_events: config.max_events,
            ttl: config.event_ttl,
        });
        let mut metrics = Metrics::new();
        metrics.watch_cache(cache.clone());
        let metrics = Arc::new(metrics);
        let (bus, queue) = dispatcher::bus_channel();
        dispatcher::create_cache_update_bridge(&cache, bus.clone());
        let shutdown = CancellationToken::new();
        let producers = TaskTracker::new();
        let settings = ScrapeSettings {
            platforms: config.sources().into_iter().map(String::from).collect(),
            batch_size: usize::from(config.scrape_batch_size),
            concurrency: usize::from(config.scrape_concurrency),
        };
        let scrape = ScrapeCoordinator::new(
            source,
            cache.clone(),
            bus.clone(),
            settings,
            shutdown.clone(),
            producers.clone(),
            metrics.clone(),
        );
        let max_connections = config.max_connections.min(Semaphore::MAX_PERMITS);
        let broker = Broker {
            auth: Arc::new(Auth::from_config(&config)),
            config: Arc::new(config),
            cache,
            manager: ConnectionManager::with_metrics(metrics.clone()),
            metrics,
            bus,
            scrape,
            shutdown,
            ws_close: CancellationToken::new(),
            producers,
            connections: TaskTracker::new(),
            fanout,
            connection_slots: Arc::new(Semaphore::new(max_connections)),
        };
        (broker, queue)
    }
}
