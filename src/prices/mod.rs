//! How the odds moved: a bounded history of prices per event, source and outcome, for
//! `GET /api/events/{id}/history` (a chart of one event) and `GET /api/moves` (the biggest
//! moves of the last minutes).
//!
//! Fed like the dispatcher: OddsCache callbacks that only queue (`cache::spawn_worker`: the
//! latest snapshot of each event and source, and the events the cache dropped), and the
//! worker's thread, which records, so that no runtime worker ever parses a snapshot or waits
//! for the history's lock (and the history's memory comes from one allocator arena). Each outcome
//! whose price differs from its last point gets a point at the snapshot's `captured_at`.
//!
//! Bounded by bytes: the last [`POINTS_PER_OUTCOME`] prices of each outcome; the outcomes of
//! a source's latest snapshot only (an outcome that left it leaves the history), at most
//! [`MAX_SERIES_PER_SOURCE`] of them per event; the events the cache holds (it tells the
//! history of every event it drops); and `--price-history-bytes` in all, the event recorded
//! longest ago leaving first. Both reads (`read.rs`) run on the blocking pool; `/api/moves` is computed
//! at most once per [`MOVES_FRESH`] per window, however many ask.

mod read;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::read::Move;
use crate::cache::{Job, Prices};
use crate::metrics::Metrics;
use lru::LruCache;
use parking_lot::Mutex;

/// Prices kept per event, source and outcome: an hour of a price that moves every minute.
pub const POINTS_PER_OUTCOME: usize = 64;

/// Outcomes recorded per event and source: a bookmaker's few hundred markets fit; the rest
/// of a larger snapshot has no history.
pub const MAX_SERIES_PER_SOURCE: usize = 2_048;

/// How long one computation of `/api/moves` answers for its window.
pub const MOVES_FRESH: Duration = Duration::from_secs(1);

/// Most moves `/api/moves` returns.
pub const MAX_MOVES: usize = 500;

/// What one series costs besides its points' room and its names: its key, deque and opening
/// price in the event's map, whose nodes are half full when filled in order (about 216
/// bytes), and the allocator's header of the deque's buffer.
const SERIES_BYTES: usize = 232;

/// What room for one point costs: its time and price. A deque grows by doubling, so a
/// series is charged for its capacity, not its length.
const POINT_BYTES: usize = std::mem::size_of::<(i64, f64)>();

/// What one event costs besides its series: its entry and place in the LRU.
const EVENT_BYTES: usize = 128;

/// Shared handle to the history. Cheap to clone.
#[derive(Clone)]
pub struct PriceHistory {
    shared: Arc<Shared>,
}

struct Shared {
    recorded: Mutex<Recorded>,
    /// The latest `/api/moves` of each window (in seconds).
    moves: Mutex<HashMap<u64, Computed>>,
    budget: usize,
    metrics: Arc<Metrics>,
}

/// Moves as computed at an instant.
type Computed = (Instant, Arc<[Move]>);

/// What the history holds: every event's series, least recently recorded first.
struct Recorded {
    events: LruCache<u64, EventPrices>,
    bytes: usize,
    points: usize,
    /// The recorder's own interned market ids and outcome names: the cache's interner is a
    /// lock every ingest's decoding takes, and the recorder would take it for each outcome.
    names: HashSet<Arc<str>>,
}

/// `name`, shared from `names` (which keeps at most [`MAX_NAMES`]).
fn shared(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(held) = names.get(name) {
        return held.clone();
    }
    let held: Arc<str> = Arc::from(name);
    if names.len() < MAX_NAMES {
        names.insert(held.clone());
    }
    held
}

/// Most names the recorder interns (market ids and outcome names are few).
const MAX_NAMES: usize = 4096;

#[derive(Default)]
struct EventPrices {
    series: BTreeMap<SeriesKey, Series>,
    bytes: usize,
    points: usize,
    /// Counts snapshots recorded: a series not seen in its source's latest one is dropped.
    round: u64,
}

/// One outcome's prices from one source, keyed so that a reply lists them in a stable
/// order: by source, market, line, outcome.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    source: Arc<str>,
    market_id: Arc<str>,
    line: Line,
    outcome: Arc<str>,
}

/// A market's line, ordered as `f64::total_cmp` orders it (lines are finite: checked at
/// ingest).
#[derive(Debug, Clone, Copy)]
struct Line(Option<f64>);

impl PartialEq for Line {
    fn eq(&self, other: &Line) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Line {}

impl PartialOrd for Line {
    fn partial_cmp(&self, other: &Line) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Line {
    fn cmp(&self, other: &Line) -> Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
}

#[derive(Debug)]
struct Series {
    /// `captured_at` in Unix ms, and the price; oldest first.
    points: VecDeque<(i64, f64)>,
    /// The first point recorded, kept when it leaves `points`.
    opening: (i64, f64),
    /// The last [`EventPrices::round`] that saw it.
    round: u64,
}

impl SeriesKey {
    fn bytes(&self) -> usize {
        SERIES_BYTES + self.market_id.len() + self.outcome.len()
    }
}

impl std::fmt::Debug for PriceHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recorded = self.shared.recorded.lock();
        f.debug_struct("PriceHistory")
            .field("events", &recorded.events.len())
            .field("bytes", &recorded.bytes)
            .finish()
    }
}

impl PriceHistory {
    /// An empty history of at most `budget` bytes, counting into `metrics`.
    pub fn new(budget: usize, metrics: Arc<Metrics>) -> PriceHistory {
        PriceHistory {
            shared: Arc::new(Shared {
                recorded: Mutex::new(Recorded {
                    events: LruCache::unbounded(),
                    bytes: 0,
                    points: 0,
                    names: HashSet::new(),
                }),
                moves: Mutex::default(),
                budget,
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
            } => self.record(source, event_id, prices),
            Job::Forget(event_ids) => self.forget(event_ids),
        }
    }

    /// Records the prices of one stored snapshot that differ from each outcome's last one,
    /// and drops the series of `source` that left it.
    fn record(&self, source: &Arc<str>, event_id: u64, prices: &Prices<'_>) {
        let at = prices.captured_at.unix_millis();
        let mut recorded = self.shared.recorded.lock();
        let fresh = !recorded.events.contains(&event_id);
        let Recorded { events, names, .. } = &mut *recorded;
        let event = events.get_or_insert_mut(event_id, EventPrices::default);
        let (bytes_before, points_before) = (event.bytes, event.points);
        if fresh {
            event.bytes = EVENT_BYTES;
        }
        event.round += 1;
        let round = event.round;
        let outcomes = prices
            .markets
            .iter()
            .flat_map(|m| m.outcomes.iter().map(move |o| (m, o)))
            .take(MAX_SERIES_PER_SOURCE);
        for (market, outcome) in outcomes {
            let key = SeriesKey {
                source: source.clone(),
                market_id: shared(names, &market.market_id),
                line: Line(market.line),
                outcome: shared(names, &outcome.name),
            };
            let series = match event.series.get_mut(&key) {
                Some(series) => series,
                None => {
                    event.bytes += key.bytes();
                    let new = Series {
                        points: VecDeque::new(),
                        opening: (at, outcome.odds),
                        round,
                    };
                    event.series.entry(key).or_insert(new)
                }
            };
            series.round = round;
            if series
                .points
                .back()
                .is_some_and(|&(_, odds)| odds == outcome.odds)
            {
                continue;
            }
            // Room is made before the push, so a full series never grows its buffer.
            if series.points.len() == POINTS_PER_OUTCOME {
                series.points.pop_front();
            } else {
                event.points += 1;
            }
            let room = series.points.capacity();
            series.points.push_back((at, outcome.odds));
            event.bytes += (series.points.capacity() - room) * POINT_BYTES;
        }
        let (mut bytes, mut points) = (event.bytes, event.points);
        event.series.retain(|key, series| {
            let keep = key.source != *source || series.round == round;
            if !keep {
                bytes -= key.bytes() + series.points.capacity() * POINT_BYTES;
                points -= series.points.len();
            }
            keep
        });
        (event.bytes, event.points) = (bytes, points);
        recorded.bytes = recorded.bytes + bytes - bytes_before;
        recorded.points = recorded.points + points - points_before;
        while recorded.bytes > self.shared.budget {
            let Some((_, gone)) = recorded.events.pop_lru() else {
                break;
            };
            recorded.bytes -= gone.bytes;
            recorded.points -= gone.points;
        }
        self.publish(&recorded);
    }

    /// Forgets events the cache dropped.
    fn forget(&self, event_ids: &[u64]) {
        let mut recorded = self.shared.recorded.lock();
        for event_id in event_ids {
            if let Some(gone) = recorded.events.pop(event_id) {
                recorded.bytes -= gone.bytes;
                recorded.points -= gone.points;
            }
        }
        self.publish(&recorded);
    }

    fn publish(&self, recorded: &Recorded) {
        let metrics = &self.shared.metrics;
        metrics.price_history_points.set(recorded.points as i64);
        metrics.price_history_bytes.set(recorded.bytes as i64);
    }
}
