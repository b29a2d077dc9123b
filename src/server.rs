//! Wiring and lifecycle: builds the broker's parts, accepts connections, shuts down in order.
//!
//! The listener and the shutdown signal are passed in, so tests run the real server on
//! `127.0.0.1:0` in-process. Connections are accepted here rather than by `warp::serve` so
//! that every socket gets `TCP_NODELAY` (small frames must not wait for Nagle's algorithm).
//!
//! Shutdown happens in steps, each bounded by the grace period:
//! 0. cancel [`Broker::shutdown`]: scrape runs stop (reporting `failed`) and SSE streams end;
//! 1. stop accepting and let in-flight HTTP requests (ingests) finish;
//! 2. wait for the producers (scrape runs, the periodic scheduler) to end;
//! 3. stop the dispatcher once it has published everything those queued;
//! 4. tell every WebSocket task to write what it already holds and close with 1001.
//!
//! warp hands upgraded sockets to detached tasks that no HTTP-level shutdown reaches, which
//! is why WebSocket tasks watch [`Broker::ws_close`] themselves and are counted by
//! [`Broker::connections`].
//!
//! WebSocket connection tasks run on a runtime of their own, the fan-out runtime, while
//! accepting, HTTP (ingest and reads), the dispatcher and scrapes run on the caller's. A
//! publication wakes every subscribed connection at once; on one shared runtime an ingest
//! request arriving then would wait in the run queue behind all of them. With two runtimes the
//! operating system interleaves their threads, so ingest stays responsive during a fan-out and
//! many changes merge into each frame.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::cache;
use crate::config::{Config, SourceKind};
use crate::dispatcher::{self, BusReceiver};
use crate::engine::Node;
use crate::http;
use crate::metrics::label;
use crate::protocol::Topic;
use crate::scrape::{self, OddsSource, SimulatedSettings, SimulatedSource};

/// Owns the fan-out runtime; shuts it down without blocking when dropped, which may happen
/// inside another runtime.
#[derive(Debug)]
struct FanoutRuntime(Option<Runtime>);

impl FanoutRuntime {
    /// Starts the runtime; returns it with a handle to spawn on.
    fn start(threads: usize) -> io::Result<(FanoutRuntime, Handle)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("oddsbus-fanout")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok((FanoutRuntime(Some(runtime)), handle))
    }
}

impl Drop for FanoutRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A broker that is built but not yet serving.
#[derive(Debug)]
pub struct Server {
    broker: Broker,
    queue: BusReceiver,
    _fanout: FanoutRuntime,
}

impl Server {
    /// Builds the broker with the scrape source that `config` names.
    ///
    /// # Panics
    ///
    /// If the operating system refuses the fan-out runtime's threads.
    pub fn new(config: Config) -> Server {
        let source: Arc<dyn OddsSource> = match config.source {
            SourceKind::Simulated => {
                let settings = SimulatedSettings {
                    seed: config.sim_seed,
                    events: config.sim_events,
                    change_fraction: config.sim_change_fraction,
                    latency: Duration::from_millis(config.sim_latency_ms),
                };
                let platforms: Vec<String> =
                    config.sources().into_iter().map(String::from).collect();
                Arc::new(SimulatedSource::new(settings, &platforms))
            }
        };
        Server::with_source(config, source)
    }

    /// Builds the broker with its scrape source and starts the fan-out runtime.
    ///
    /// # Panics
    ///
    /// If the operating system refuses the fan-out runtime's threads.
    pub fn with_source(config: Config, source: Arc<dyn OddsSource>) -> Server {
        let threads = config
            .fanout_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
        let (fanout, handle) =
            FanoutRuntime::start(threads).expect("cannot start the fan-out runtime");
        let (broker, queue) = Broker::new(config, source, handle);
        Server {
            broker,
            queue,
            _fanout: fanout,
        }
    }

    /// The broker's shared parts (to put odds into the cache or read stats in-process).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down in order; `Err` if it
    /// may not serve at all (a cluster member whose limits are not the cluster's).
    pub fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> BoxFuture<'static, Result<(), String>> {
        self.start(listener, Box::pin(shutdown))
    }

    /// The server as one boxed future, built here: its type (every route, connection and
    /// step of shutdown) then never reaches a caller's crate, which would otherwise compile
    /// its drop glue again; every test crate used to spend 10 s on that.
    fn start(
        self,
        listener: TcpListener,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(self.serve(listener, shutdown))
    }

    async fn serve(
        self,
        listener: TcpListener,
        mut shutdown: BoxFuture<'static, ()>,
    ) -> Result<(), String> {
        let Server {
            broker,
            queue,
            _fanout,
        } = self;
        let stop_dispatcher = CancellationToken::new();
        let dispatcher = tokio::spawn(dispatcher::run_dispatcher(
            queue,
            broker.manager.clone(),
            broker.engine.coalescing(&broker.config),
            broker.config.max_frame_bytes,
            stop_dispatcher.clone(),
        ));
        // Runs as long as the cache feeds it.
        let (prices, analysis) = (broker.prices.clone(), broker.analysis.clone());
        let watching = cache::spawn_worker(&broker.cache, "odds-watch", move |job| {
            prices.take(&job);
            analysis.take(&job);
        });
        if let Err(error) = watching {
            tracing::error!(
                event = "watch.not_started",
                %error,
                "no price history is kept and no alerts are raised"
            );
        }
        // Stopped once in-flight HTTP requests are done: an ingest waits for its entry.
        let follow_stop = CancellationToken::new();
        let started = tokio::select! {
            started = start_node(&broker, &listener, &follow_stop) => Some(started),
            () = &mut shutdown => None,
        };
        let http_connections = GracefulShutdown::new();
        let outcome = match started {
            Some(Ok(())) => {
                start_producers(&broker);
                accept(&broker, listener, &http_connections, &mut shutdown).await;
                Ok(())
            }
            // The engine may not serve, or shutdown came first: end before serving anything.
            Some(Err(why)) => {
                drop(listener);
                Err(why)
            }
            None => {
                drop(listener);
                Ok(())
            }
        };
        let steps = Steps {
            http_connections,
            follow_stop,
            stop_dispatcher,
            dispatcher,
        };
        shut_down(&broker, steps).await;
        outcome
    }
}

/// Opens the store and starts its tasks (`Store::start`), then the engine's;
/// completes once the node may serve, or with why it may not.
async fn start_node(
    broker: &Broker,
    listener: &TcpListener,
    follow_stop: &CancellationToken,
) -> Result<(), String> {
    if let Some(store) = &broker.store {
        let (engine, cache, tasks) = (&broker.engine, &broker.cache, &broker.producers);
        let (ttl, shutdown) = (broker.config.event_ttl, &broker.shutdown);
        store.keep_alerts(&broker.analysis);
        // The writer stops once in-flight requests are done, after writing what they changed.
        store
            .start(engine, cache, ttl, tasks, follow_stop, shutdown)
            .await?;
    }
    let node = Node {
        address: listener.local_addr().ok().map(|addr| addr.to_string()),
        cache: &broker.cache,
        bus: &broker.bus,
        manager: &broker.manager,
        tasks: &broker.producers,
        shutdown: &broker.shutdown,
        follow_stop,
    };
    broker.engine.start(node).await
}

/// The tasks of a serving node: housekeeping, and periodic scrape runs if asked for.
fn start_producers(broker: &Broker) {
    broker.producers.spawn(housekeeping(broker.clone()));
    if !broker.config.scrape_interval.is_zero() {
        broker.producers.spawn(scrape::run_periodic(
            broker.scrape.clone(),
            broker.config.scrape_interval,
            broker.shutdown.clone(),
        ));
    }
}

/// Accepts connections until `shutdown` completes, each watched by `http_connections`.
async fn accept(
    broker: &Broker,
    listener: TcpListener,
    http_connections: &GracefulShutdown,
    shutdown: &mut BoxFuture<'static, ()>,
) {
    let service = http::cors::service(broker.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(event = "server.listening", %addr);
    }
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = &mut *shutdown => return,
        };
        let Ok(slot) = broker.slots.http_connections.clone().try_acquire_owned() else {
            // Dropping it closes it: better than file descriptors running out for all.
            tracing::debug!(event = "http.refused", reason = "max_http_connections");
            broker.metrics.http_connections_refused.inc();
            continue;
        };
        tune(&stream, broker.config.send_buffer_bytes);
        let service = TowerToHyperService::new(service.clone());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(broker.config.request_timeout);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = http_connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(event = "http.connection_error", %error);
            }
            // An upgraded connection is a WebSocket now, counted by its own limit.
            drop(slot);
        });
    }
}

/// What shutdown stops, beyond the broker's own tokens and trackers.
struct Steps {
    http_connections: GracefulShutdown,
    follow_stop: CancellationToken,
    stop_dispatcher: CancellationToken,
    dispatcher: tokio::task::JoinHandle<()>,
}

/// The one way a server ends, in the steps of the module's doc, each bounded by the grace
/// period; a node that never served goes through them too, with nothing to wait for.
async fn shut_down(broker: &Broker, steps: Steps) {
    broker.shutdown.cancel();
    let grace = Duration::from_secs(broker.config.shutdown_grace_secs);
    tracing::info!(event = "server.shutdown", step = "draining http requests");
    if tokio::time::timeout(grace, steps.http_connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(event = "server.shutdown_timeout", step = "http");
    }
    steps.follow_stop.cancel();
    tracing::info!(event = "server.shutdown", step = "stopping producers");
    wait_for(&broker.producers, grace, "producers").await;
    tracing::info!(
        event = "server.shutdown",
        step = "publishing queued updates"
    );
    steps.stop_dispatcher.cancel();
    if let Err(error) = steps.dispatcher.await {
        tracing::error!(event = "dispatcher.failed", %error);
    }
    tracing::info!(
        event = "server.shutdown",
        step = "closing websockets",
        active = broker.manager.active_count()
    );
    broker.ws_close.cancel();
    wait_for(&broker.connections, grace, "websockets").await;
    tracing::info!(event = "server.stopped");
}

/// Every so often: drops events without an update for the TTL as they expire (writes
/// expire them too, but a cache nobody writes to must still shed them), and reads each
/// topic's history into the metrics.
async fn housekeeping(broker: Broker) {
    let ttl = broker.config.event_ttl;
    let period = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = broker.shutdown.cancelled() => return,
        }
        let dropped = broker.cache.expire(std::time::Instant::now());
        if dropped > 0 {
            let remaining = broker.cache.len();
            tracing::info!(event = "cache.expired", dropped, remaining);
        }
        for topic in Topic::ALL {
            let (messages, age) = broker.manager.history_extent(topic);
            let topic = label("topic", topic.name());
            let metrics = &broker.metrics;
            metrics
                .history_messages
                .get_or_create(&topic)
                .set(messages as i64);
            metrics
                .history_age_seconds
                .get_or_create(&topic)
                .set(age.as_secs_f64());
        }
    }
}

/// Closes `tasks` to new ones and waits up to `grace` for the running ones to end.
async fn wait_for(tasks: &TaskTracker, grace: Duration, step: &'static str) {
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(event = "server.shutdown_timeout", step);
    }
}

/// `TCP_NODELAY` (small frames must not wait for Nagle's algorithm) and the send buffer
/// `--send-buffer-bytes` asks for.
fn tune(stream: &tokio::net::TcpStream, send_buffer_bytes: Option<u32>) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(event = "server.nodelay_failed", %error);
    }
    if let Some(bytes) = send_buffer_bytes {
        let socket = socket2::SockRef::from(stream);
        if let Err(error) = socket.set_send_buffer_size(bytes as usize) {
            tracing::debug!(event = "server.send_buffer_failed", %error);
        }
    }
}

/// Accept errors are mostly transient (a peer reset before accept). Running out of file
/// descriptors is not: back off a little instead of spinning on it.
async fn accept_error(error: io::Error) {
    match error.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused => {}
        _ => {
            tracing::error!(event = "server.accept_error", %error);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
