//! The broker's shared state: one cheap `Clone` handle that every route, connection task and
//! background task holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analysis::Analysis;
use crate::auth::Auth;
use crate::bucket::TokenBucket;
use crate::cache::{CacheLimits, OddsCache};
use crate::config::Config;
use crate::dispatcher::{self, BusReceiver, BusSender};
use crate::engine::Engine;
use crate::metrics::{known, Metrics};
use crate::prices::PriceHistory;
use crate::protocol::{AlertKind, Topic};
use crate::scrape::{OddsSource, ScrapeCoordinator, ScrapeSettings};
use crate::store::Store;
use crate::topics::ConnectionManager;
use crate::topics::HistoryLimits;

/// Handle to the broker's shared parts, cloned into every route and connection task: one
/// reference count to clone, and one pointer for each connection to hold.
#[derive(Clone, Debug)]
pub struct Broker(Arc<Parts>);

impl std::ops::Deref for Broker {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What the [`Broker`] handle reaches.
#[derive(Debug)]
pub struct Parts {
    /// Start-up configuration.
    pub config: Arc<Config>,
    /// The odds store: what reads are served from.
    pub cache: OddsCache,
    /// Where ingests and scrape runs write, and what says whether the node may serve: its
    /// own cache, or the cluster's log in Redis (`--redis`).
    pub engine: Engine,
    /// Where the odds are kept beyond this process (`--database-url`), if anywhere.
    pub store: Option<Store>,
    /// How the odds moved, for the charts and the biggest moves.
    pub prices: PriceHistory,
    /// What the odds say for the home bookmaker: alerts, surebets, fair prices.
    pub analysis: Analysis,
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
    /// What bounds the work clients can cause at once.
    pub slots: Arc<Slots>,
}

/// Bounds on what clients can make the broker do at once. Each is a semaphore whose owned
/// permit lives as long as the work (a connection task, a request, a stream), so it is
/// returned however that ends.
#[derive(Debug)]
pub struct Slots {
    /// WebSocket connections (`--max-connections`).
    pub connections: Arc<Semaphore>,
    /// Open HTTP connections that are not WebSockets (`--max-http-connections`).
    pub http_connections: Arc<Semaphore>,
    /// Ingests being handled (`--max-ingests`).
    pub ingests: Arc<Semaphore>,
    /// Scrape streams being followed (`--max-sse-streams`).
    pub streams: Arc<Semaphore>,
    /// Lists of every event being written (`--max-large-reads`).
    pub large_reads: Arc<Semaphore>,
    /// Scrape runs started on request (`--max-scrapes-per-minute`).
    pub scrape_starts: Mutex<TokenBucket>,
}

impl Slots {
    fn new(config: &Config) -> Slots {
        let semaphore = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        let per_minute = f64::from(config.max_scrapes_per_minute);
        Slots {
            connections: semaphore(config.max_connections),
            http_connections: semaphore(config.max_http_connections),
            ingests: semaphore(config.max_ingests),
            streams: semaphore(config.max_sse_streams),
            large_reads: semaphore(config.max_large_reads),
            scrape_starts: Mutex::new(TokenBucket::new(
                Duration::from_secs(60).div_f64(per_minute),
                per_minute,
                Instant::now(),
            )),
        }
    }
}

impl Broker {
    /// Builds the cache, the manager, the bridge between them and the scrape coordinator.
    /// Returns the dispatcher's queue, which the caller hands to the dispatcher task.
    ///
    /// # Panics
    ///
    /// If `config.redis` or `config.database_url` is set but is not a URL its client takes
    /// (`--redis` and `--database-url` check that it is).
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
        known_labels(&metrics, config.database_url.is_some());
        let metrics = Arc::new(metrics);
        let (bus, queue) = dispatcher::bus_channel();
        dispatcher::create_cache_update_bridge(&cache, bus.clone());
        let prices = PriceHistory::new(config.price_history_bytes, metrics.clone());
        let shutdown = CancellationToken::new();
        let producers = TaskTracker::new();
        let settings = ScrapeSettings {
            platforms: config.sources().into_iter().map(String::from).collect(),
            batch_size: usize::from(config.scrape_batch_size),
            concurrency: usize::from(config.scrape_concurrency),
        };
        let engine = match Engine::new(&config, &cache, &bus, metrics.clone()) {
            Ok(engine) => engine,
            Err(error) => panic!("{error}"),
        };
        let store = config.database_url.as_deref().map(|url| {
            match Store::new(url, config.retention, metrics.clone()) {
                Ok(store) => store,
                Err(error) => panic!("{error}"),
            }
        });
        let scrape = ScrapeCoordinator::new(
            source,
            engine.clone(),
            settings,
            shutdown.clone(),
            producers.clone(),
            metrics.clone(),
        );
        let history = HistoryLimits::from_config(&config);
        let manager = ConnectionManager::with_metrics(metrics.clone(), history);
        let analysis = Analysis::new(&config, manager.clone(), metrics.clone());
        let broker = Broker(Arc::new(Parts {
            slots: Arc::new(Slots::new(&config)),
            auth: Arc::new(Auth::from_config(&config)),
            config: Arc::new(config),
            cache,
            engine,
            store,
            prices,
            analysis,
            manager,
            metrics,
            bus,
            scrape,
            shutdown,
            ws_close: CancellationToken::new(),
            producers,
            connections: TaskTracker::new(),
            fanout,
        }));
        (broker, queue)
    }
}

/// Every labelled family's known series at 0 from the start (see [`known`]).
fn known_labels(metrics: &Metrics, store: bool) {
    crate::ws::known_metrics(metrics);
    known(
        &metrics.messages_published,
        "topic",
        Topic::ALL.map(Topic::name),
    );
    let statuses = ["200", "400", "401", "403", "413", "503"];
    known(&metrics.ingest_requests, "status", statuses);
    known(&metrics.scrape_runs, "outcome", ["completed", "failed"]);
    let kinds = AlertKind::ALL.map(AlertKind::name);
    known(&metrics.alerts, "kind", kinds);
    known(&metrics.alerts_suppressed, "kind", kinds);
    if store {
        let tables = [
            "odds_current",
            "odds_history",
            "odds_opening",
            "event_details",
        ];
        known(&metrics.persist_rows, "table", tables);
    }
}
