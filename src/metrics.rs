//! Operational metrics, served by `GET /metrics` in the Prometheus text format.
//!
//! One [`Metrics`] per broker, reached through the ConnectionManager. Counters on the hot
//! path (frames and bytes written) are added once per flush, not once per frame.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cache::OddsCache;

/// One label, e.g. `("topic", "odds_updates")`.
pub type Label = [(&'static str, String); 1];

/// Every metric oddsbus exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections open now.
    pub active_connections: Gauge,
    /// WebSocket connections opened since start.
    pub connections_opened: Counter,
    /// WebSocket connections closed, by `reason` (as in the `ws.disconnect` log).
    pub connections_closed: Family<Label, Counter>,
    /// Upgrades refused, by `reason`.
    pub connections_refused: Family<Label, Counter>,
    /// HTTP connections closed on arrival because `--max-http-connections` were open.
    pub http_connections_refused: Counter,
    /// Messages published, by `topic`.
    pub messages_published: Family<Label, Counter>,
    /// WebSocket frames written to clients.
    pub frames_sent: Counter,
    /// Payload bytes written to clients.
    pub bytes_sent: Counter,
    /// `resync` messages sent.
    pub resyncs: Counter,
    /// Recoveries asked for with `since`, by `outcome`: `recovered`, `epoch` (another epoch
    /// or an offset ahead of the log), `too_old` (the history moved on), `malformed`.
    pub recoveries: Family<Label, Counter>,
    /// Messages sent from a topic's history: recoveries' replays and slow readers' catch-up.
    pub messages_replayed: Counter,
    /// Messages in each topic's history, by `topic`.
    pub history_messages: Family<Label, Gauge>,
    /// Age of the oldest message in each topic's history, by `topic`.
    pub history_age_seconds: Family<Label, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Messages dropped for slow clients, as told by `resync`.
    pub resync_missed: Counter,
    /// Subscribers that fell more than `--max-lag-bytes` behind, by `action`: `resync`, or
    /// `close` when it happened again within `--stuck-timeout`.
    pub lag_limit: Family<Label, Counter>,
    /// Changes queued for the dispatcher when it last looked.
    pub dispatcher_queue_depth: Gauge,
    /// Changes the dispatcher took per publication round.
    pub dispatcher_batch_size: Histogram,
    /// `POST /api/odds` requests, by HTTP `status`.
    pub ingest_requests: Family<Label, Counter>,
    /// Snapshots whose `captured_at` lay more than `--max-clock-skew` ahead, taken as now.
    pub captured_at_clamped: Counter,
    /// Scrape runs, by `outcome` (`completed` or `failed`).
    pub scrape_runs: Family<Label, Counter>,
    /// Scrape run durations.
    pub scrape_run_seconds: Histogram,
    /// Round trips to Redis (a cluster member), by `op`.
    pub redis_requests: Family<Label, Counter>,
    /// Round trips to Redis that failed or timed out, by `op`.
    pub redis_errors: Family<Label, Counter>,
    /// Round-trip times to Redis of ingests and steps.
    pub redis_append_seconds: Histogram,
    /// How far this node's cache is behind the cluster's log, in offsets, when it last read.
    pub cluster_lag: Gauge,
    /// Cluster members this node sees alive (itself included).
    pub cluster_members: Gauge,
    /// Prices kept in the price history (`GET /api/events/{id}/history`).
    pub price_history_points: Gauge,
    /// Bytes the price history holds, against `--price-history-bytes`.
    pub price_history_bytes: Gauge,
    /// Changed snapshots waiting for the store's writer (`--database-url`).
    pub persist_queue_depth: Gauge,
    /// Rows the store's writer committed, by `table`.
    pub persist_rows: Family<Label, Counter>,
    /// The store's writes that failed (each retried).
    pub persist_failures: Counter,
    /// Changes replaced by a newer one of the same event and source before they were
    /// written: the current state lost nothing, the price history their step.
    pub persist_dropped: Counter,
    /// Events the odds analysis holds a book of.
    pub analysis_events: Gauge,
    /// Bytes the odds analysis holds, against `--analysis-bytes`.
    pub analysis_bytes: Gauge,
    /// Alerts published on `alerts`, by `kind`.
    pub alerts: Family<Label, Counter>,
    /// Alerts the cooldown held back (`--alert-cooldown`), by `kind`.
    pub alerts_suppressed: Family<Label, Counter>,
    /// Alerts that left the store's queue unwritten while the database was away.
    pub alerts_unpersisted: Counter,
    /// Age of the oldest change not yet committed to the store.
    pub persist_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `oddsbus_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("oddsbus");
        let metrics = Metrics {
            active_connections: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            connections_refused: Family::default(),
            http_connections_refused: Counter::default(),
            messages_published: Family::default(),
            frames_sent: Counter::default(),
            bytes_sent: Counter::default(),
            resyncs: Counter::default(),
            recoveries: Family::default(),
            messages_replayed: Counter::default(),
            history_messages: Family::default(),
            history_age_seconds: Family::default(),
            resync_missed: Counter::default(),
            lag_limit: Family::default(),
            dispatcher_queue_depth: Gauge::default(),
            dispatcher_batch_size: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
            ingest_requests: Family::default(),
            captured_at_clamped: Counter::default(),
            scrape_runs: Family::default(),
            scrape_run_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            redis_requests: Family::default(),
            redis_errors: Family::default(),
            redis_append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            cluster_lag: Gauge::default(),
            cluster_members: Gauge::default(),
            price_history_points: Gauge::default(),
            price_history_bytes: Gauge::default(),
            persist_queue_depth: Gauge::default(),
            persist_rows: Family::default(),
            alerts: Family::default(),
            alerts_suppressed: Family::default(),
            alerts_unpersisted: Counter::default(),
            analysis_events: Gauge::default(),
            analysis_bytes: Gauge::default(),
            persist_failures: Counter::default(),
            persist_dropped: Counter::default(),
            persist_lag_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "active_connections",
            "WebSocket connections open now",
            metrics.active_connections.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections opened",
            metrics.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket connections closed, by reason",
            metrics.connections_closed.clone(),
        );
        r.register(
            "connections_refused",
            "WebSocket upgrades refused, by reason",
            metrics.connections_refused.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed on arrival, at the open-connection limit",
            metrics.http_connections_refused.clone(),
        );
        r.register(
            "messages_published",
            "Messages published, by topic",
            metrics.messages_published.clone(),
        );
        r.register(
            "frames_sent",
            "WebSocket frames written to clients",
            metrics.frames_sent.clone(),
        );
        r.register(
            "bytes_sent",
            "Payload bytes written to clients",
            metrics.bytes_sent.clone(),
        );
        r.register(
            "resyncs",
            "resync messages sent to slow clients",
            metrics.resyncs.clone(),
        );
        r.register(
            "recoveries",
            "Recoveries asked for with since, by outcome",
            metrics.recoveries.clone(),
        );
        r.register(
            "messages_replayed",
            "Messages sent from a topic's history (recoveries and slow readers catching up)",
            metrics.messages_replayed.clone(),
        );
        r.register(
            "history_messages",
            "Messages in each topic's history",
            metrics.history_messages.clone(),
        );
        r.register(
            "history_age_seconds",
            "Age of the oldest message in each topic's history",
            metrics.history_age_seconds.clone(),
        );
        r.register(
            "resync_missed",
            "Messages dropped for slow clients",
            metrics.resync_missed.clone(),
        );
        r.register(
            "lag_limit",
            "Subscribers that fell more than --max-lag-bytes behind, by action (resync, close)",
            metrics.lag_limit.clone(),
        );
        r.register(
            "dispatcher_queue_depth",
            "Changes queued for the dispatcher",
            metrics.dispatcher_queue_depth.clone(),
        );
        r.register(
            "dispatcher_batch_size",
            "Changes per publication round",
            metrics.dispatcher_batch_size.clone(),
        );
        r.register(
            "ingest_requests",
            "POST /api/odds requests, by status",
            metrics.ingest_requests.clone(),
        );
        r.register(
            "captured_at_clamped",
            "Snapshots whose captured_at lay more than --max-clock-skew ahead, taken as now",
            metrics.captured_at_clamped.clone(),
        );
        r.register(
            "scrape_runs",
            "Scrape runs, by outcome",
            metrics.scrape_runs.clone(),
        );
        r.register(
            "scrape_run_seconds",
            "Scrape run durations",
            metrics.scrape_run_seconds.clone(),
        );
        r.register(
            "redis_requests",
            "Round trips to Redis, by operation",
            metrics.redis_requests.clone(),
        );
        r.register(
            "redis_errors",
            "Round trips to Redis that failed or timed out, by operation",
            metrics.redis_errors.clone(),
        );
        r.register(
            "redis_append_seconds",
            "Round-trip times of appends to the cluster's log",
            metrics.redis_append_seconds.clone(),
        );
        r.register(
            "cluster_lag",
            "Offsets of the cluster's log this node had not applied when it last read",
            metrics.cluster_lag.clone(),
        );
        r.register(
            "cluster_members",
            "Cluster members this node sees alive",
            metrics.cluster_members.clone(),
        );
        r.register(
            "price_history_points",
            "Prices kept in the price history",
            metrics.price_history_points.clone(),
        );
        r.register(
            "price_history_bytes",
            "Bytes the price history holds, against --price-history-bytes",
            metrics.price_history_bytes.clone(),
        );
        r.register(
            "persist_queue_depth",
            "Changed snapshots waiting to be written to the database",
            metrics.persist_queue_depth.clone(),
        );
        r.register(
            "persist_rows",
            "Rows written to the database, by table",
            metrics.persist_rows.clone(),
        );
        r.register(
            "persist_failures",
            "Writes to the database that failed (each is retried)",
            metrics.persist_failures.clone(),
        );
        r.register(
            "persist_dropped",
            "Changes replaced by a newer one before they were written: not in the price history",
            metrics.persist_dropped.clone(),
        );
        r.register(
            "persist_lag_seconds",
            "Age of the oldest change not yet written to the database",
            metrics.persist_lag_seconds.clone(),
        );
        r.register(
            "analysis_events",
            "Events the odds analysis holds a book of",
            metrics.analysis_events.clone(),
        );
        r.register(
            "analysis_bytes",
            "Bytes the odds analysis holds, against --analysis-bytes",
            metrics.analysis_bytes.clone(),
        );
        r.register(
            "alerts",
            "Alerts published on the alerts topic, by kind",
            metrics.alerts.clone(),
        );
        r.register(
            "alerts_suppressed",
            "Alerts the cooldown held back (--alert-cooldown), by kind",
            metrics.alerts_suppressed.clone(),
        );
        r.register(
            "alerts_unpersisted",
            "Alerts that left the database's queue unwritten while the database was away",
            metrics.alerts_unpersisted.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Adds the cache's size and evictions, read from `cache` at each scrape.
    pub fn watch_cache(&mut self, cache: OddsCache) {
        self.registry
            .register_collector(Box::new(CacheCollector(cache)));
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Creates the series of `family` named `name` = each of `values`, at 0: a fresh broker
/// lists every known label, so a dashboard's query or an alert finds them before the first
/// event.
pub fn known<M, C>(
    family: &Family<Label, M, C>,
    name: &'static str,
    values: impl IntoIterator<Item = &'static str>,
) where
    M: Default,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    for value in values {
        drop(family.get_or_create(&label(name, value)));
    }
}

/// A one-label set.
pub fn label(name: &'static str, value: impl Into<String>) -> Label {
    [(name, value.into())]
}

/// `cache_events` and `cache_evictions_total{reason}`, read from the cache when scraped so
/// that the cache itself knows nothing of metrics.
#[derive(Debug)]
struct CacheCollector(OddsCache);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let events = ConstGauge::new(self.0.len() as i64);
        let help = "Events in the OddsCache";
        events.encode(encoder.encode_descriptor(
            "cache_events",
            help,
            None,
            MetricType::Gauge,
        )?)?;
        let evictions = self.0.evictions();
        let help = "Events removed from the OddsCache, by reason (capacity, ttl or kickoff)";
        let mut family =
            encoder.encode_descriptor("cache_evictions", help, None, MetricType::Counter)?;
        let reasons = [
            ("capacity", evictions.capacity),
            ("ttl", evictions.ttl),
            ("kickoff", evictions.kickoff),
        ];
        for (reason, count) in reasons {
            let labels = label("reason", reason);
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
