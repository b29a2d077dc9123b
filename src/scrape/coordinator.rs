//! The scrape coordinator: one run at a time, its steps onto the `scrape_progress` topic
//! (through the dispatcher, after the odds they stored), and the periodic scheduler.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{OddsSource, ScrapeSettings, SourceError};
use crate::engine::Engine;
use crate::metrics::{label, Metrics};
use crate::protocol::{HttpError, ScrapePhase, ScrapeProgress};

/// Runs scrape runs, one at a time. Cheap to clone.
#[derive(Clone)]
pub struct ScrapeCoordinator {
    shared: Arc<Shared>,
}

struct Shared {
    source: Arc<dyn OddsSource>,
    /// Where batches and steps go.
    engine: Engine,
    settings: ScrapeSettings,
    /// Cancelled on shutdown: the running run stops and reports `failed`.
    stop: CancellationToken,
    /// Where runs are spawned, so that shutdown waits for them.
    tasks: TaskTracker,
    /// The run in progress, if any. Held only to start one or record a step.
    current: Mutex<Option<Run>>,
    /// The id of the run in progress, for those waiting for it to end.
    running: watch::Sender<Option<Uuid>>,
    /// Run counts and durations for `/metrics`.
    metrics: Arc<Metrics>,
}

struct Run {
    id: Uuid,
    started: Instant,
    /// The counts of its latest step, for a `failed` step should the run abort.
    scraped: u64,
    total: u64,
}

impl std::fmt::Debug for ScrapeCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeCoordinator")
            .field("settings", &self.shared.settings)
            .field("running", &self.running())
            .finish()
    }
}

impl ScrapeCoordinator {
    /// A coordinator storing batches and publishing steps through `engine`.
    pub fn new(
        source: Arc<dyn OddsSource>,
        engine: Engine,
        settings: ScrapeSettings,
        stop: CancellationToken,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
    ) -> ScrapeCoordinator {
        ScrapeCoordinator {
            shared: Arc::new(Shared {
                source,
                engine,
                settings,
                stop,
                tasks,
                current: Mutex::new(None),
                running: watch::channel(None).0,
                metrics,
            }),
        }
    }

    /// The id of the run in progress, if any.
    pub fn running(&self) -> Option<Uuid> {
        self.shared.current.lock().as_ref().map(|run| run.id)
    }

    /// Starts a run, or joins the one in progress (on a cluster, on whichever node runs it);
    /// returns its id. Its steps are published on the `scrape_progress` topic. On a cluster
    /// member, 503 `backplane_unavailable` if Redis cannot say whether a run is going.
    pub async fn start(&self) -> Result<Uuid, HttpError> {
        if let Some(run) = self.running() {
            return Ok(run);
        }
        let id = Uuid::new_v4();
        if let Some(elsewhere) = self.shared.engine.claim_run(id).await? {
            return Ok(elsewhere);
        }
        let mut current = self.shared.current.lock();
        if let Some(run) = current.as_ref() {
            return Ok(run.id); // started here meanwhile (a local node: no lease was taken)
        }
        *current = Some(Run {
            id,
            started: Instant::now(),
            scraped: 0,
            total: 0,
        });
        self.shared.running.send_replace(Some(id));
        let done = CancellationToken::new();
        let tasks = &self.shared.tasks;
        tasks.spawn(run_guarded(
            self.shared.clone(),
            id,
            done.clone().drop_guard(),
        ));
        let engine = self.shared.engine.clone();
        tasks.spawn(async move { engine.keep_lease(id, done).await });
        Ok(id)
    }

    /// Completes once run `id` has ended (at once if it has).
    pub async fn finished(&self, id: Uuid) {
        let mut running = self.shared.running.subscribe();
        // The sender lives as long as the coordinator, which `self` holds.
        let _ = running.wait_for(|current| *current != Some(id)).await;
    }
}

/// Starts a run every `interval` (waiting for each to end) until `stop` is cancelled. On a
/// cluster, only the first node to ask in each interval starts one.
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
        if !coordinator.shared.engine.claim_period(interval).await {
            continue;
        }
        let run = match coordinator.start().await {
            Ok(run) => run,
            Err(error) => {
                tracing::warn!(event = "scrape.start_failed", %error);
                continue;
            }
        };
        tokio::select! {
            () = coordinator.finished(run) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Least time between two `platform_progress` steps of one platform.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Counts of one run, carried in every step (or of one platform, in `platform_progress`).
struct Tally {
    run_id: Uuid,
    scraped: u64,
    total: u64,
}

/// Runs a run to its end. Should it panic (a source's bug), the run still ends `failed`: the
/// slot frees for the next run and every stream following it ends. `_done` is dropped at the
/// end, which on a cluster releases the run's lease.
async fn run_guarded(shared: Arc<Shared>, run_id: Uuid, _done: DropGuard) {
    let run = AssertUnwindSafe(execute(shared.clone(), run_id)).catch_unwind();
    if run.await.is_err() {
        tracing::error!(event = "scrape.panicked", %run_id);
        shared.abort(run_id).await;
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
    shared
        .emit(
            &tally,
            ScrapePhase::Started,
            None,
            format!("scraping {}", platforms.join(", ")),
        )
        .await;
    let mut failed = Vec::new();
    for platform in &platforms {
        shared
            .emit(
                &tally,
                ScrapePhase::PlatformStarted,
                Some(platform),
                format!("scraping {platform}"),
            )
            .await;
        let platform_started = Instant::now();
        let before = tally.scraped;
        let outcome = tokio::select! {
            outcome = shared.scrape_platform(platform, &mut tally) => outcome,
            () = shared.stop.cancelled() => {
                let message = "run interrupted: the server is shutting down".to_owned();
                shared.emit(&tally, ScrapePhase::Failed, None, message).await;
                return;
            }
        };
        match outcome {
            Ok(()) => {
                shared
                    .emit(
                        &tally,
                        ScrapePhase::PlatformCompleted,
                        Some(platform),
                        format!(
                            "{platform}: {} events in {} ms",
                            tally.scraped - before,
                            platform_started.elapsed().as_millis()
                        ),
                    )
                    .await
            }
            Err(error) => {
                tracing::warn!(event = "scrape.platform_failed", %platform, %error);
                shared
                    .emit(
                        &tally,
                        ScrapePhase::Failed,
                        Some(platform),
                        format!("{platform} failed: {error}"),
                    )
                    .await;
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
        shared
            .emit(&tally, ScrapePhase::Completed, None, message)
            .await;
    } else {
        let message = format!(
            "{} of {} platforms failed ({}); {} events stored in {elapsed} ms",
            failed.len(),
            platforms.len(),
            failed.join(", "),
            tally.scraped
        );
        shared
            .emit(&tally, ScrapePhase::Failed, None, message)
            .await;
    }
}

impl Shared {
    async fn scrape_platform(
        &self,
        platform_name: &str,
        tally: &mut Tally,
    ) -> Result<(), SourceError> {
        let ids = self.source.list_events(platform_name).await?;
        tally.total += ids.len() as u64;
        let source = &self.source;
        let batches = ids
            .chunks(self.settings.batch_size.max(1))
            .map(<[u64]>::to_vec);
        let mut fetches = stream::iter(batches)
            .map(|batch| async move { source.fetch_odds(platform_name, &batch).await })
            .buffer_unordered(self.settings.concurrency.max(1));
        // `platform_progress`: the platform's own counts, at most every PROGRESS_EVERY.
        let mut platform = Tally {
            run_id: tally.run_id,
            scraped: 0,
            total: ids.len() as u64,
        };
        let mut reported = Instant::now();
        while let Some(fetched) = fetches.next().await {
            let snapshots = fetched?;
            let stored = self.engine.put(platform_name, snapshots, None).await;
            let stored = stored.map_err(|e| SourceError(e.message))?;
            tally.scraped += stored.counts.accepted as u64;
            platform.scraped += stored.counts.accepted as u64;
            if reported.elapsed() >= PROGRESS_EVERY && platform.scraped < platform.total {
                reported = Instant::now();
                let message = format!(
                    "{platform_name}: {} of {} events",
                    platform.scraped, platform.total
                );
                let phase = ScrapePhase::PlatformProgress;
                self.emit(&platform, phase, Some(platform_name), message)
                    .await;
            }
        }
        Ok(())
    }

    /// Ends `run_id` with `failed` if it is still the current run, with its last counts.
    async fn abort(&self, run_id: Uuid) {
        let counts = self
            .current
            .lock()
            .as_ref()
            .filter(|run| run.id == run_id)
            .map(|run| (run.scraped, run.total));
        let Some((scraped, total)) = counts else {
            return; // it had ended
        };
        let tally = Tally {
            run_id,
            scraped,
            total,
        };
        let message = "run aborted: the scrape failed unexpectedly (see the server log)";
        self.emit(&tally, ScrapePhase::Failed, None, message.to_owned())
            .await;
    }

    /// Records a step of the run and sends it to listeners and to the topic.
    async fn emit(
        &self,
        tally: &Tally,
        phase: ScrapePhase,
        platform: Option<&str>,
        message: String,
    ) {
        let progress = ScrapeProgress {
            run_id: tally.run_id,
            phase,
            platform: platform.map(str::to_owned),
            events_scraped: tally.scraped,
            events_total: tally.total,
            message,
        };
        // One line per run at the default level: its end.
        if progress.is_final() {
            tracing::info!(
                event = "scrape.run_ended",
                run_id = %progress.run_id,
                phase = progress.phase.as_str(),
                events_scraped = progress.events_scraped,
                message = %progress.message,
            );
        } else {
            tracing::debug!(
                event = "scrape.progress",
                run_id = %progress.run_id,
                phase = progress.phase.as_str(),
                platform = progress.platform.as_deref(),
                events_scraped = progress.events_scraped,
                events_total = progress.events_total,
            );
        }
        {
            let mut current = self.current.lock();
            if let Some(run) = current.as_mut().filter(|run| run.id == tally.run_id) {
                // A platform's progress counts that platform only, not the run.
                if progress.phase != ScrapePhase::PlatformProgress {
                    (run.scraped, run.total) = (progress.events_scraped, progress.events_total);
                }
                if progress.is_final() {
                    let seconds = run.started.elapsed().as_secs_f64();
                    *current = None;
                    self.running.send_replace(None);
                    let outcome = label("outcome", progress.phase.as_str());
                    self.metrics.scrape_runs.get_or_create(&outcome).inc();
                    self.metrics.scrape_run_seconds.observe(seconds);
                }
            }
        }
        if let Err(error) = self.engine.step(progress).await {
            tracing::warn!(event = "scrape.step_lost", %error);
        }
    }
}
