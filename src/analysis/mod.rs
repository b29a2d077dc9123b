//! What the odds say for a bookmaker, pushed live: risk alerts (a price that moved enough, a
//! competitor moving against the home bookmaker, a market pulled or back), surebets, and
//! the fair price of each outcome with the home bookmaker's edge against it.
//!
//! Fed like the price history, by the same worker (`cache::spawn_worker`: the latest snapshot
//! of each event and source, parsed once for both), which takes each in turn into its
//! event's [`Book`] (`book/`, where the rules are) and publishes what it raises on `alerts`.
//! The ingest and the fan-out never wait for it: a burst it has not reached yet only leaves
//! it fewer snapshots to look at.
//!
//! Bounded by bytes: a book holds the primary markets of an event, a few lines and outcomes
//! each; the events the cache holds (it is told of every event the cache drops); and
//! `--analysis-bytes` in all, the event taken in longest ago leaving first. The recent
//! alerts that `GET /api/alerts` reads are at most [`RECENT_BYTES`] and [`RECENT_AGE`] old.

mod book;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;

pub use self::book::FairMarket;
use self::book::{Book, Context, MarketKey, Names, Rules};
use crate::cache::{Job, Prices};
use crate::config::Config;
use crate::metrics::{label, Metrics};
use crate::protocol::{encode, Alert, AlertKind, Leg, ServerMessage, Severity, Timestamp, Topic};
use crate::topics::ConnectionManager;

/// Most bytes of recent alerts kept for `GET /api/alerts`.
pub const RECENT_BYTES: usize = 8 << 20;

/// Oldest recent alert kept for `GET /api/alerts`.
pub const RECENT_AGE: Duration = Duration::from_secs(24 * 3600);

/// How close in time a competitor's move and the home bookmaker's must be to disagree.
pub const DISAGREEMENT_WINDOW: Duration = Duration::from_secs(300);

/// Shared handle to the analysis. Cheap to clone.
#[derive(Clone)]
pub struct Analysis {
    shared: Arc<Shared>,
}

struct Shared {
    books: Mutex<Books>,
    recent: Mutex<Recent>,
    /// Called with every alert raised (`on_alert`).
    listeners: Mutex<Vec<Listener>>,
    rules: Rules,
    /// `--analysis-bytes`.
    budget: usize,
    manager: ConnectionManager,
    metrics: Arc<Metrics>,
}

/// Every event's book, the one taken in longest ago first, and what they share.
struct Books {
    /// Each book, with its [`Book::bytes`] when last counted.
    events: LruCache<u64, (Book, usize)>,
    bytes: usize,
    /// Every open surebet's event and market.
    open: BTreeSet<(u64, MarketKey)>,
    names: Names,
}

impl Books {
    /// Drops the book of `event_id`, if any; returns the `closed` alerts of its open
    /// surebets.
    fn drop_event(&mut self, event_id: u64) -> Vec<Alert> {
        let Some((book, bytes)) = self.events.pop(&event_id) else {
            return Vec::new();
        };
        self.bytes -= bytes;
        for key in book.open_surebets() {
            self.open.remove(&(event_id, key.clone()));
        }
        book.close_surebets(event_id, Timestamp::now())
    }
}

/// What is told of each alert raised; it only queues (the database's writer).
type Listener = Box<dyn Fn(&KeptAlert) + Send + Sync>;

/// The recent alerts, oldest first.
struct Recent {
    alerts: VecDeque<KeptAlert>,
    bytes: usize,
    /// Since when (Unix ms) `alerts` holds every alert raised: the start, or just after the
    /// last one that left.
    complete_from: i64,
}

/// One alert as the node keeps it: as `GET /api/alerts` filters and writes it, and the
/// database stores it.
#[derive(Debug, Clone)]
pub struct KeptAlert {
    /// When, in Unix ms (this node's clock).
    pub raised: i64,
    /// Its kind.
    pub kind: AlertKind,
    /// Its severity.
    pub severity: Severity,
    /// Its event.
    pub event_id: u64,
    /// The alert, as `data` of its `odds_alert`.
    pub json: Arc<str>,
}

/// What `GET /api/alerts` asks for.
#[derive(Debug, Clone)]
pub struct AlertQuery {
    /// Raised at or after this time, in Unix ms.
    pub since: i64,
    /// Of these kinds (empty: any).
    pub kinds: Vec<AlertKind>,
    /// Of these severities (empty: any).
    pub severities: Vec<Severity>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// An open surebet, as `GET /api/surebets` lists it.
#[derive(Debug, Serialize)]
pub struct OpenSurebet {
    event_id: u64,
    market_id: Arc<str>,
    line: Option<f64>,
    profit_pct: f64,
    legs: Vec<Leg>,
    opened_at: Timestamp,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let books = self.shared.books.lock();
        f.debug_struct("Analysis")
            .field("events", &books.events.len())
            .field("open_surebets", &books.open.len())
            .finish()
    }
}

impl Analysis {
    /// An empty analysis with the rules of `config`, publishing through `manager`.
    pub fn new(config: &Config, manager: ConnectionManager, metrics: Arc<Metrics>) -> Analysis {
        Analysis {
            shared: Arc::new(Shared {
                books: Mutex::new(Books {
                    events: LruCache::unbounded(),
                    bytes: 0,
                    open: BTreeSet::new(),
                    names: Names::default(),
                }),
                budget: config.analysis_bytes,
                recent: Mutex::new(Recent {
                    alerts: VecDeque::new(),
                    bytes: 0,
                    complete_from: Timestamp::now().unix_millis(),
                }),
                listeners: Mutex::default(),
                rules: Rules {
                    thresholds: config.alert_thresholds,
                    cooldown: config.alert_cooldown,
                    window: DISAGREEMENT_WINDOW,
                },
                manager,
                metrics,
            }),
        }
    }

    /// Takes one job of the cache's worker (`cache::spawn_worker`).
    pub fn take(&self, job: &Job<'_>) {
        match *job {
            Job::Record {
                event_id,
                source,
                prices,
            } => self.apply(event_id, source, prices),
            Job::Forget(event_ids) => self.forget(event_ids),
        }
    }

    /// Takes in one stored snapshot and publishes what it raises.
    fn apply(&self, event_id: u64, source: &Arc<str>, prices: &Prices<'_>) {
        let metrics = &self.shared.metrics;
        let mut closed = Vec::new();
        let raised = {
            let mut books = self.shared.books.lock();
            let Books {
                events,
                bytes,
                open,
                names,
            } = &mut *books;
            let source = names.get(source);
            let mut cx = Context {
                rules: &self.shared.rules,
                now: Instant::now(),
                names,
                open,
            };
            let (book, counted) = events.get_or_insert_mut(event_id, Default::default);
            let at = prices.captured_at;
            let raised = book.apply(event_id, &source, at, &prices.markets, &mut cx);
            let now = book.bytes();
            *bytes = *bytes + now - *counted;
            *counted = now;
            while books.bytes > self.shared.budget {
                let Some((&oldest, _)) = books.events.peek_lru() else {
                    break;
                };
                closed.extend(books.drop_event(oldest));
            }
            metrics.analysis_events.set(books.events.len() as i64);
            metrics.analysis_bytes.set(books.bytes as i64);
            raised
        };
        for kind in raised.suppressed {
            metrics
                .alerts_suppressed
                .get_or_create(&label("kind", kind.name()))
                .inc();
        }
        for alert in raised.alerts.iter().chain(&closed) {
            self.publish(alert);
        }
    }

    /// Keeps `alert` for the reads, tells the listeners and publishes it on `alerts`, in that
    /// order: a client that got it finds it in the reads.
    fn publish(&self, alert: &Alert) {
        let metrics = &self.shared.metrics;
        metrics
            .alerts
            .get_or_create(&label("kind", alert.kind.name()))
            .inc();
        if let Ok(json) = serde_json::to_string(alert) {
            self.keep(KeptAlert {
                raised: Timestamp::now().unix_millis(),
                kind: alert.kind,
                severity: alert.severity,
                event_id: alert.event_id,
                json: Arc::from(json),
            });
        }
        self.shared.manager.publish(Topic::Alerts, |offset| {
            encode(&ServerMessage::OddsAlert {
                data: alert,
                offset,
            })
        });
    }

    /// Keeps `kept` for the reads and tells the listeners of it.
    fn keep(&self, kept: KeptAlert) {
        for listener in self.shared.listeners.lock().iter() {
            listener(&kept);
        }
        let oldest = kept.raised - RECENT_AGE.as_millis() as i64;
        let mut recent = self.shared.recent.lock();
        recent.bytes += kept.json.len();
        recent.alerts.push_back(kept);
        while recent.bytes > RECENT_BYTES
            || recent.alerts.front().is_some_and(|k| k.raised < oldest)
        {
            let Some(gone) = recent.alerts.pop_front() else {
                break;
            };
            recent.bytes -= gone.json.len();
            recent.complete_from = recent.complete_from.max(gone.raised + 1);
        }
    }

    /// Calls `listener` with every alert raised from now on, as it is raised: it must only
    /// queue.
    pub fn on_alert(&self, listener: impl Fn(&KeptAlert) + Send + Sync + 'static) {
        self.shared.listeners.lock().push(Box::new(listener));
    }

    /// Forgets events the cache dropped.
    fn forget(&self, event_ids: &[u64]) {
        let mut books = self.shared.books.lock();
        let mut closed = Vec::new();
        for &event_id in event_ids {
            closed.extend(books.drop_event(event_id));
        }
        let metrics = &self.shared.metrics;
        metrics.analysis_events.set(books.events.len() as i64);
        metrics.analysis_bytes.set(books.bytes as i64);
        drop(books);
        for alert in &closed {
            self.publish(alert);
        }
    }

    /// The recent alerts `query` asks for, newest first, each as JSON; and since when (Unix
    /// ms) the node holds every alert raised: those raised before may be missing (they left
    /// its memory, or came before its start).
    pub fn alerts(&self, query: &AlertQuery) -> (Vec<Arc<str>>, i64) {
        let recent = self.shared.recent.lock();
        let chosen = recent
            .alerts
            .iter()
            .rev()
            .take_while(|k| k.raised >= query.since)
            .filter(|k| query.kinds.is_empty() || query.kinds.contains(&k.kind))
            .filter(|k| query.severities.is_empty() || query.severities.contains(&k.severity))
            .take(query.limit)
            .map(|k| k.json.clone())
            .collect();
        (chosen, recent.complete_from)
    }

    /// The open surebets, best profit first.
    pub fn surebets(&self) -> Vec<OpenSurebet> {
        let books = self.shared.books.lock();
        let mut open: Vec<OpenSurebet> = books
            .open
            .iter()
            .filter_map(|(event_id, key)| {
                let (line, surebet) = books.events.peek(event_id)?.0.surebet(key)?;
                Some(OpenSurebet {
                    event_id: *event_id,
                    market_id: key.market_id.clone(),
                    line,
                    profit_pct: surebet.profit_pct,
                    legs: surebet.legs.clone(),
                    opened_at: surebet.opened_at,
                })
            })
            .collect();
        drop(books);
        open.sort_by(|a, b| b.profit_pct.total_cmp(&a.profit_pct));
        open
    }

    /// The fair prices of `event_id`'s primary markets; `None` for an event the analysis
    /// has no prices of.
    pub fn fair(&self, event_id: u64) -> Option<Vec<FairMarket>> {
        let books = self.shared.books.lock();
        let fair = books.events.peek(&event_id)?.0.fair();
        (!fair.is_empty()).then_some(fair)
    }
}
