//! Cluster members and this node's health, from one stream of heartbeats.
//!
//! Every node appends a heartbeat to `oddsbus:nodes` every [`BEAT`] and reads the stream in
//! the same blocking read that follows the log. So the heartbeats list the live members for
//! `GET /api/cluster`, and a node that stops seeing its own heartbeat come back knows that
//! its delivery path is broken (Redis frozen or gone, a follower wedged on a connection to a
//! demoted primary), not merely that a `PING` fails: `/healthz` then answers `degraded`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Cluster, NODES};
use crate::metrics::label;
use crate::topics::ConnectionManager;

/// How often a node appends its heartbeat.
const BEAT: Duration = Duration::from_millis(500);

/// A node whose own heartbeat has not come back for this long is degraded: within 2 s of
/// Redis stopping to answer, with one beat's slack.
pub const DEGRADED_AFTER: Duration = Duration::from_millis(1500);

/// A member not heard from for this long is gone (killed, or cut off from Redis).
const GONE_AFTER: Duration = Duration::from_secs(3);

/// Heartbeats the stream keeps (about a minute of three nodes).
const KEPT: usize = 1000;

/// One live member, as `GET /api/cluster` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Its id.
    pub node: Arc<str>,
    /// Where clients reach it (its `--listen`).
    pub address: String,
    /// WebSocket connections it holds.
    pub connections: u64,
    /// Offsets of the log it had not applied at its last heartbeat.
    pub lag: u64,
    /// When this node last heard from it.
    #[serde(skip)]
    seen: Instant,
}

/// Appends this node's heartbeat every [`BEAT`] until `stop`, then one saying it left.
pub async fn heartbeat(cluster: Cluster, manager: ConnectionManager, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(BEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let left = tokio::select! {
            _ = ticker.tick() => false,
            () = stop.cancelled() => true,
        };
        let shared = &cluster.shared;
        let lag = shared.metrics.cluster_lag.get().max(0).to_string();
        let connections = manager.active_count().to_string();
        let mut commands = shared.commands.clone();
        let mut beat = redis::cmd("XADD");
        beat.arg(NODES).arg("MAXLEN").arg("~").arg(KEPT).arg("*");
        let address = shared.address.lock().clone();
        beat.arg("n").arg(&*shared.node).arg("a").arg(address);
        beat.arg("c").arg(connections).arg("l").arg(lag);
        if left {
            beat.arg("x").arg("1");
        }
        shared
            .metrics
            .redis_requests
            .get_or_create(&label("op", "heartbeat"))
            .inc();
        let sent =
            tokio::time::timeout(BEAT * 2, beat.query_async::<redis::Value>(&mut commands)).await;
        if !matches!(sent, Ok(Ok(_))) {
            shared
                .metrics
                .redis_errors
                .get_or_create(&label("op", "heartbeat"))
                .inc();
            tracing::debug!(event = "cluster.heartbeat_failed");
        }
        if left {
            return;
        }
        cluster.members(); // keeps the gauge current
    }
}

impl Cluster {
    /// Records a heartbeat read from the stream (its fields by name).
    pub(super) fn heard(&self, field: impl Fn(&str) -> Option<String>) {
        let Some(node) = field("n") else {
            return;
        };
        let node: Arc<str> = Arc::from(node);
        let shared = &self.shared;
        if node == shared.node {
            *shared.seen.lock() = Some(Instant::now());
        }
        let mut members = shared.members.lock();
        if field("x").is_some() {
            members.remove(&node);
            return;
        }
        let number = |name: &str| field(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let member = Member {
            node: node.clone(),
            address: field("a").unwrap_or_default(),
            connections: number("c"),
            lag: number("l"),
            seen: Instant::now(),
        };
        members.insert(node, member);
    }

    /// The members heard from lately, by id.
    pub fn members(&self) -> Vec<Member> {
        let mut members = self.shared.members.lock();
        members.retain(|_, member| member.seen.elapsed() < GONE_AFTER);
        let mut live: Vec<Member> = members.values().cloned().collect();
        live.sort_by(|a, b| a.node.cmp(&b.node));
        self.shared.metrics.cluster_members.set(live.len() as i64);
        live
    }
}
