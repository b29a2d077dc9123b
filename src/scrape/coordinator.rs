//! The scrape coordinator: one run at a time, its steps to SSE listeners and to the
//! `scrape_progress` topic, and the periodic scheduler.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, FutureExt, Stream, StreamExt};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{OddsSource, ScrapeSettings, SourceError};
use crate::cache::OddsCache;
use crate::dispatcher::{BusEvent, BusSender};
use crate::metrics::{label, Metrics};
use crate::protocol::{ScrapePhase, ScrapeProgress};

/// A run's progress, as its followers receive it (`Sync`, as warp's SSE reply wants).
pub type Steps = Pin<Box<dyn Stream<Item = ScrapeProgress> + Send + Sync + 'static>>;

/// SSE listeners a run can fall behind by before they lose the oldest steps. A run has a
/// handful of steps per platform, so this is never reached in practice.
const LISTENER_CAPACITY: usize = 256;

/// Runs scrape runs, one at a time. Cheap to clone.
#[derive(Clone)]
pub struct ScrapeCoordinator {
    shared: Arc<Shared>,
}

struct Shared {
    source: Arc<dyn OddsSource>,
    cache: OddsCache,
    bus: BusSender,
    settings: ScrapeSettings,
    /// Cancelled on shutdown: the running run stops and reports `failed`.
    stop: CancellationToken,
    /// Where runs are spawned, so that shutdown waits for them.
    tasks: TaskTracker,
    /// The run in progress, if any. Held only to append a step or to join.
    current: Mutex<Option<Run>>,
    /// Run counts and durations for `/metrics`.
    metrics: Arc<Metrics>,
}

struct Run {
    id: Uuid,
    started: Instant,
    history: Vec<ScrapeProgress>,
    listeners: async_broadcast::Sender<ScrapeProgress>,
    /// Keeps the channel open while no listener is attached.
    _idle: async_broadcast::InactiveReceiver<ScrapeProgress>,
}

impl std::fmt::Debug for ScrapeCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeCoordinator")
            .field("settings", &self.shared.settings)
            .field(
                "running",
                &self.shared.current.lock().as_ref().map(|r| r.id),
            )
            .finish()
    }
}

impl ScrapeCoordinator {
    /// A coordinator storing into `cache` and publishing progress on `bus`.
    pub fn new(
        source: Arc<dyn OddsSource>,
        cache: OddsCache,
        bus: BusSender,
        settings: ScrapeSettings,
        stop: CancellationToken,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> ScrapeCoordinator {
        ScrapeCoordinator {
            shared: Arc::new(Shared {
                source,
                cache,
                bus,
                settings,
                stop,
                tasks,
                current: Mutex::new(None),
                metrics,
            }),
        }
    }

    /// The running run's progress from `started` to the final step, or `None` when no run
    /// is running. Dropping the stream does not stop the run.
    pub fn follow(&self) -> Option<Steps> {
        self.shared.current.lock().as_ref().map(listen)
    }

    /// Joins the running run, or starts one, and returns its progress from `started` to the
    /// final step. Dropping the stream does not stop the run.
    pub fn join_or_start(&self) -> Steps {
        let mut current = self.shared.current.lock();
        let run = match current.as_mut() {
            Some(run) => run,
            None => {
                let (mut sender, receiver) = async_broadcast::broadcast(LISTENER_CAPACITY);
                sender.set_overflow(true);
                let id = Uuid::new_v4();
                let run = current.insert(Run {
                    id,
                    started: Instant::now(),
                    history: Vec::new(),
                    listeners: sender,
                    _idle: receiver.deactivate(),
                });
                self.shared
                    .tasks
                    .spawn(run_guarded(self.shared.clone(), id));
                run
            }
        };
        listen(run)
    }
}

/// The steps `run` has taken, then its live ones, up to and including its final step.
fn listen(run: &Run) -> Steps {
    let replay = stream::iter(run.history.clone());
    let live = run.listeners.new_receiver();
    // Stop right after the final step, whichever way it arrived.
    let steps = replay.chain(live).scan(false, |ended, progress| {
        let item = (!*ended).then(|| {
            *ended = progress.is_final();
            progress
        });
        std::future::ready(item)
    });
    Box::pin(steps)
}

/// Starts a run every `interval` (waiting for each to end) until `stop` is cancelled.
pub async fn run_periodic(
    coordinator: ScrapeCoordinator,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let run = coordinator.join_or_start();
        tokio::select! {
            () = run.for_each(|_| std::future::ready(())) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Counts of one run, carried in every step.
struct Tally {
    run_id: Uuid,
    scraped: u64,
    total: u64,
}

/// Runs a run to its end. Should it panic (a source's bug), the run still ends `failed`: the
/// slot frees for the next run and every stream following it ends.
async fn run_guarded(shared: Arc<Shared>, run_id: Uuid) {
    let run = AssertUnwindSafe(execute(shared.clone(), run_id)).catch_unwind();
    if run.await.is_err() {
        tracing::error!(event = "scrape.panicked", %run_id);
        shared.abort(run_id);
    }
}

async fn execute(shared: Arc<Shared>, run_id: Uuid) {
    let started = Instant::now();
    let mut tally = Tally {
        run_id,
        scraped: 0,
        total: 0,
    };
    let platforms = shared.settings.platforms.clone();
    shared.emit(
        &tally,
        ScrapePhase::Started,
        None,
        format!("scraping {}", platforms.join(", ")),
    );
    let mut failed = Vec::new();
    for platform in &platforms {
        shared.emit(
            &tally,
            ScrapePhase::PlatformStarted,
            Some(platform),
            format!("scraping {platform}"),
        );
        let platform_started = Instant::now();
        let before = tally.scraped;
        let outcome = tokio::select! {
            outcome = shared.scrape_platform(platform, &mut tally) => outcome,
            () = shared.stop.cancelled() => {
                let message = "run interrupted: the server is shutting down".to_owned();
                shared.emit(&tally, ScrapePhase::Failed, None, message);
                return;
            }
        };
        match outcome {
            Ok(()) => shared.emit(
                &tally,
                ScrapePhase::PlatformCompleted,
                Some(platform),
                format!(
                    "{platform}: {} events in {} ms",
                    tally.scraped - before,
                    platform_started.elapsed().as_millis()
                ),
            ),
            Err(error) => {
                tracing::warn!(event = "scrape.platform_failed", %platform, %error);
                shared.emit(
                    &tally,
                    ScrapePhase::Failed,
                    Some(platform),
                    format!("{platform} failed: {error}"),
                );
                failed.push(platform.as_str());
            }
        }
    }
    let elapsed = started.elapsed().as_millis();
    if failed.is_empty() {
        let message = format!(
            "{} events from {} platforms in {elapsed} ms",
            tally.scraped,
            platforms.len()
        );
        shared.emit(&tally, ScrapePhase::Completed, None, message);
    } else {
        let message = format!(
            "{} of {} platforms failed ({}); {} events stored in {elapsed} ms",
            failed.len(),
            platforms.len(),
            failed.join(", "),
            tally.scraped
        );
        shared.emit(&tally, ScrapePhase::Failed, None, message);
    }
}

impl Shared {
    async fn scrape_platform(&self, platform: &str, tally: &mut Tally) -> Result<(), SourceError> {
        let ids = self.source.list_events(platform).await?;
        tally.total += ids.len() as u64;
        let source = &self.source;
        let batches = ids
            .chunks(self.settings.batch_size.max(1))
            .map(<[u64]>::to_vec);
        let mut fetches = stream::iter(batches)
            .map(|batch| async move { source.fetch_odds(platform, &batch).await })
            .buffer_unordered(self.settings.concurrency.max(1));
        while let Some(fetched) = fetches.next().await {
            let snapshots = fetched?;
            let stored = self.cache.put_batch(platform, snapshots);
            tally.scraped += stored.accepted as u64;
        }
        Ok(())
    }

    /// Ends `run_id` with `failed` if it is still the current run, with its last counts.
    fn abort(&self, run_id: Uuid) {
        let counts = self
            .current
            .lock()
            .as_ref()
            .filter(|run| run.id == run_id)
            .map(|run| {
                let last = run.history.last();
                last.map_or((0, 0), |p| (p.events_scraped, p.events_total))
            });
        let Some((scraped, total)) = counts else {
            return; // it had ended
        };
        let tally = Tally {
            run_id,
            scraped,
            total,
        };
        let message = "run aborted: the scrape failed unexpectedly (see the server log)";
        self.emit(&tally, ScrapePhase::Failed, None, message.to_owned());
    }

    /// Records a step of the run and sends it to listeners and to the topic.
    fn emit(&self, tally: &Tally, phase: ScrapePhase, platform: Option<&str>, message: String) {
        let progress = ScrapeProgress {
            run_id: tally.run_id,
            phase,
            platform: platform.map(str::to_owned),
            events_scraped: tally.scraped,
            events_total: tally.total,
            message,
        };
        tracing::info!(
            event = "scrape.progress",
            run_id = %progress.run_id,
            phase = progress.phase.as_str(),
            platform = progress.platform.as_deref(),
            events_scraped = progress.events_scraped,
            events_total = progress.events_total,
        );
        {
            let mut current = self.current.lock();
            if let Some(run) = current.as_mut().filter(|run| run.id == tally.run_id) {
                run.history.push(progress.clone());
                // With overflow on, a full channel drops its oldest step instead of failing;
                // an error here only means nobody is listening.
                let _ = run.listeners.try_broadcast(progress.clone());
                if progress.is_final() {
                    let seconds = run.started.elapsed().as_secs_f64();
                    *current = None;
                    let outcome = label("outcome", progress.phase.as_str());
                    self.metrics.scrape_runs.get_or_create(&outcome).inc();
                    self.metrics.scrape_run_seconds.observe(seconds);
                }
            }
        }
        let _ = self.bus.send(BusEvent::ScrapeProgress(progress));
    }
}
