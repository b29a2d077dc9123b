//! The PostgreSQL store on a cluster (`--redis` with `--database-url`), against a
//! redis-server and a PostgreSQL server each test starts for itself: one node at a time
//! writes the cluster's log, a new writer resumes exactly where a killed one stopped, an
//! acknowledgement that waits for the database works on every node, and a Redis that
//! restarts empty is refilled from the database.

mod common;

use std::time::Duration;

use common::postgres::PgServer;
use common::redis::RedisServer;
use common::{eventually, snapshot, KillOnDrop, TestServer};
use serde_json::{json, Value};

const EVENTS: u64 = 20;

/// One snapshot of every event, priced for `round`: each round changes every event.
fn round(round: u32) -> Value {
    let price = 1.5 + f64::from(round) / 100.0;
    let snapshots: Vec<Value> = (1..=EVENTS).map(|id| snapshot(id, price)).collect();
    json!({"source": "betpawa", "snapshots": snapshots})
}

/// A cluster member on `redis` and `pg`, in-process, whose `?wait=persisted` waits long
/// enough for a killed writer's lease to expire.
async fn member(redis: &RedisServer, pg: &PgServer) -> TestServer {
    member_with(redis, pg, |_| {}).await
}

async fn member_with(
    redis: &RedisServer,
    pg: &PgServer,
    change: impl FnOnce(&mut oddsbus::Config) + Send + 'static,
) -> TestServer {
    let (redis_url, pg_url) = (redis.url(), pg.url());
    let node = TestServer::with(move |c| {
        c.redis = Some(redis_url);
        c.database_url = Some(pg_url);
        c.persist_timeout = Duration::from_secs(30);
        change(c);
    })
    .await;
    eventually("the member is healthy, its database too", || async {
        node.get("/healthz").await == (200, json!({"status": "ok", "database": "ok"}))
    })
    .await;
    node
}

/// The writer node (a binary, so that it can be killed) is killed while a stream of changes
/// goes on through another node; the other node takes the lease and resumes where the
/// database says the killed one stopped. Every change is in the history exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_stream_is_resumed_and_every_change_is_written_once() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let (redis_url, pg_url) = (redis.url(), pg.url());
    let args = [
        "--redis",
        &redis_url,
        "--database-url",
        &pg_url,
        "--scrape-interval",
        "0",
    ];
    let (child, _address, _logs) = common::spawn_binary(&args, "info");
    let mut writer = KillOnDrop(child);
    eventually("the first node holds the writer's lease", || async {
        redis.integer("EXISTS oddsbus:store:lease") == 1
    })
    .await;
    let survivor = member(&redis, &pg).await;

    // Acknowledged once the other node committed it: this node heard of it.
    let (status, reply) = survivor.ingest_persisted(&round(1)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        pg.query("SELECT count(*) FROM odds_history"),
        EVENTS.to_string()
    );

    const ROUNDS: u32 = 30;
    for r in 2..=ROUNDS {
        if r == 12 {
            writer.0.kill().unwrap(); // SIGKILL, perhaps in the middle of a transaction
            writer.0.wait().unwrap();
        }
        let (status, reply) = survivor.ingest(&round(r)).await;
        assert_eq!(status, 200, "{reply}");
    }
    // The last round waits until it is committed, by the survivor now.
    let (status, reply) = survivor.ingest_persisted(&round(ROUNDS + 1)).await;
    assert_eq!(status, 200, "{reply}");

    let rows =
        pg.query("SELECT count(*), count(DISTINCT (event_id, outcomes::text)) FROM odds_history");
    let every = u64::from(ROUNDS + 1) * EVENTS;
    assert_eq!(
        rows,
        format!("{every}|{every}"),
        "every change once, none twice"
    );
    let last =
        pg.query("SELECT DISTINCT outcomes->0->>'odds' FROM odds_current WHERE source = 'betpawa'");
    assert_eq!(last, "1.81");
    let top = redis.integer("HGET oddsbus:meta top");
    assert_eq!(
        pg.query("SELECT top FROM log_position"),
        top.to_string(),
        "the position is the log's last entry"
    );
    survivor.stop().await;
}

/// Redis restarts empty: the cluster's state comes back from the database, under a new
/// epoch, in Redis and in every node's cache, and what changes afterwards is written on.
/// The two nodes start together on a fresh database: they migrate it one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_is_refilled_from_the_database() {
    let mut redis = RedisServer::start();
    let pg = PgServer::start();
    let (node, other) = tokio::join!(member(&redis, &pg), member(&redis, &pg));
    let (status, reply) = node.ingest_persisted(&round(1)).await;
    assert_eq!(status, 200, "{reply}");
    let epoch = node.get("/api/cluster").await.1["epoch"].clone();

    redis.restart_empty();
    eventually("Redis holds every event again", || async {
        redis.integer("HLEN oddsbus:state:betpawa") == EVENTS as i64
    })
    .await;
    for server in [&node, &other] {
        eventually("the node follows the new epoch", || async {
            server.get("/api/cluster").await.1["epoch"] != epoch
        })
        .await;
        eventually("the node's cache holds every event again", || async {
            let (_, page) = server.get("/api/events?limit=100").await;
            page["events"].as_array().map(Vec::len) == Some(EVENTS as usize)
        })
        .await;
        let (status, odds) = server.get("/api/events/7/odds").await;
        assert_eq!(status, 200, "{odds}");
        assert_eq!(odds["betpawa"]["markets"][0]["outcomes"][0]["odds"], 1.51);
    }

    // The writer follows the new epoch's log.
    let (status, reply) = node.ingest_persisted(&round(2)).await;
    assert_eq!(status, 200, "{reply}");
    let history = pg.query("SELECT count(*) FROM odds_history");
    assert_eq!(
        history,
        (2 * EVENTS).to_string(),
        "the refill wrote no history"
    );
    node.stop().await;
    other.stop().await;
}

/// The database away for longer than the log keeps entries: once it is back, the writer
/// finds its position gone from the log and writes the whole state, and follows the log on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_longer_than_the_log_keeps_gets_the_whole_state() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let node = member_with(&redis, &pg, |c| c.history_size = 50).await;
    let (status, reply) = node.ingest_persisted(&round(1)).await;
    assert_eq!(status, 200, "{reply}");

    pg.stop();
    // Far more entries than the log keeps, each acknowledged.
    for event_id in 100..300 {
        node.ingest_ok("betpawa", &[event_id], 2.0).await;
    }
    assert!(redis.integer("XLEN oddsbus:log") < 200);
    pg.restart();
    let (status, reply) = node.ingest_persisted(&round(2)).await;
    assert_eq!(status, 200, "{reply}");
    let events = pg.query("SELECT count(DISTINCT event_id) FROM odds_current");
    assert_eq!(events, (EVENTS + 200).to_string());
    let last =
        pg.query("SELECT DISTINCT outcomes->0->>'odds' FROM odds_current WHERE event_id <= 20");
    assert_eq!(last, "1.52");
    eventually("the writer is caught up", || async {
        let metrics = node.metrics().await;
        metrics.contains("oddsbus_persist_queue_depth 0\n")
            && metrics.contains("oddsbus_persist_lag_seconds 0.0\n")
    })
    .await;
    let metrics = node.metrics().await;
    let dropped = metrics
        .lines()
        .find_map(|line| line.strip_prefix("oddsbus_persist_dropped_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        dropped.is_some_and(|n| n > 0),
        "the entries that left the log are counted: {dropped:?}"
    );
    node.stop().await;
}

/// Sportybet's price of the home win of `event_id`, as `node`'s analysis has it.
async fn price(node: &TestServer, event_id: u64) -> Option<f64> {
    let (_, fair) = node.get(&format!("/api/events/{event_id}/fair")).await;
    fair["markets"][0]["outcomes"][0]["prices"]["sportybet"]["odds"].as_f64()
}

/// Every member raises the same alerts from the cluster's log; only the one that holds the
/// writer's lease keeps them in the database, so each is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_is_written_once_by_the_node_that_holds_the_lease() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let nodes = [member(&redis, &pg).await, member(&redis, &pg).await];
    eventually("a node holds the writer's lease", || async {
        redis.integer("EXISTS oddsbus:store:lease") == 1
    })
    .await;
    // 2.10 then 2.35 on two events: a price change each, raised on both nodes.
    for event_id in [101, 102] {
        for to in [2.10, 2.35] {
            nodes[0].ingest_ok("sportybet", &[event_id], to).await;
            eventually("both nodes took the price in", || async {
                price(&nodes[0], event_id).await == Some(to)
                    && price(&nodes[1], event_id).await == Some(to)
            })
            .await;
        }
        let written = format!("SELECT count(*) FROM odds_alerts WHERE event_id = {event_id}");
        eventually("the alert written", || async { pg.query(&written) == "1" }).await;
    }
    assert_eq!(pg.query("SELECT count(*) FROM odds_alerts"), "2");
    let mut wrote = Vec::new();
    for node in &nodes {
        let (_, read) = node.get("/api/alerts").await;
        assert_eq!(read["count"], 2, "{read}");
        let metrics = node.metrics().await;
        wrote.push(metrics.contains(r#"oddsbus_persist_rows_total{table="odds_alerts"} 2"#));
    }
    assert_eq!(wrote.iter().filter(|&&wrote| wrote).count(), 1, "{wrote:?}");
}
