//! The PostgreSQL store (`--database-url`), against a PostgreSQL server each test starts
//! for itself: what was acknowledged survives a restart, a database that goes away costs
//! nothing but time, and a database the broker cannot use stops it at start.

mod common;

use common::postgres::PgServer;
use common::{eventually, snapshot, TestServer};
use serde_json::{json, Value};

/// An event's odds as a read gives them, less the snapshot ids (a new process numbers its
/// snapshots afresh).
async fn odds(server: &TestServer, event_id: u64) -> Value {
    let (status, mut body) = server.get(&format!("/api/events/{event_id}/odds")).await;
    assert_eq!(status, 200, "{body}");
    body["betpawa"]
        .as_object_mut()
        .map(|s| s.remove("snapshot_id"));
    if let Some(competitors) = body["competitors"].as_object_mut() {
        for snapshot in competitors.values_mut() {
            snapshot.as_object_mut().map(|s| s.remove("snapshot_id"));
        }
    }
    body
}

/// Waits until `/healthz` reports the database `state`.
async fn reported(server: &TestServer, state: &str) {
    eventually(&format!("the database is reported {state}"), || async {
        server.get("/healthz").await.1["database"] == state
    })
    .await;
}

/// Waits until the writer has committed everything queued.
async fn persisted(server: &TestServer, pg: &PgServer, rows: usize) {
    eventually("the writer is idle", || async {
        server
            .metrics()
            .await
            .contains("oddsbus_persist_queue_depth 0")
            && pg.query("SELECT count(*) FROM odds_current") == rows.to_string()
    })
    .await;
}

#[tokio::test]
async fn acknowledged_odds_survive_a_restart() {
    let pg = PgServer::start();
    let first = pg.serve(|_| {}).await;
    let mut named = snapshot(1, 2.0);
    named["event"] = json!({"name": "Arsenal v Chelsea", "competition": "England: Premier League"});
    named["captured_at"] = json!("2026-12-01T10:00:00.123Z");
    let mut two_markets = snapshot(2, 1.8);
    let second_market = json!({"market_id": "ou", "name": "Over/Under", "line": 2.5,
        "outcomes": [{"name": "Over", "odds": 1.9}, {"name": "Under", "odds": 1.95}]});
    two_markets["markets"]
        .as_array_mut()
        .unwrap()
        .push(second_market);
    let body = json!({"source": "betpawa", "snapshots": [named, two_markets, snapshot(3, 3.1)]});
    assert_eq!(first.ingest(&body).await.0, 200);
    first.ingest_ok("sportybet", &[1], 2.1).await;
    // Event 2 loses its second market: the store must not bring it back.
    first.ingest_ok("betpawa", &[2], 1.7).await;
    persisted(&first, &pg, 4).await;
    let before = [
        odds(&first, 1).await,
        odds(&first, 2).await,
        odds(&first, 3).await,
    ];
    let id = |read: Value| read["betpawa"]["snapshot_id"].as_u64().unwrap();
    let old_id = id(first.get("/api/events/1/odds").await.1);
    first.stop().await;

    let again = pg.serve(|_| {}).await;
    let after = [
        odds(&again, 1).await,
        odds(&again, 2).await,
        odds(&again, 3).await,
    ];
    assert_eq!(before, after);
    assert_eq!(after[0]["event"]["name"], "Arsenal v Chelsea");
    let new_id = id(again.get("/api/events/1/odds").await.1);
    assert!(
        new_id > old_id,
        "snapshot ids only grow: {old_id}, then {new_id}"
    );
    let (_, health) = again.get("/healthz").await;
    assert_eq!(health["database"], "ok", "{health}");
}

#[tokio::test]
async fn a_database_that_goes_away_delays_the_writes_and_loses_none() {
    let pg = PgServer::start();
    let server = pg.serve(|_| {}).await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    persisted(&server, &pg, 1).await;

    pg.stop();
    // The cache acknowledges as before; the writer keeps what it could not write.
    server.ingest_ok("betpawa", &[2, 3], 2.0).await;
    reported(&server, "degraded").await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, 200, "the node still serves: {health}");
    assert!(server
        .metrics()
        .await
        .contains("oddsbus_persist_failures_total"));

    pg.restart();
    persisted(&server, &pg, 3).await;
    reported(&server, "ok").await;
}

/// The database frozen (SIGSTOP: it holds its connections and answers nothing) while
/// ingests go on: each is answered while it is still frozen, and once it is woken the writer
/// catches up by itself.
#[tokio::test]
async fn a_frozen_database_holds_up_no_ingest_and_is_caught_up_with() {
    let pg = PgServer::start();
    let server = pg.serve(|_| {}).await;
    server.ingest_ok("betpawa", &[1], 2.0).await;
    persisted(&server, &pg, 1).await;

    pg.freeze();
    let price = |round: u64| 2.0 + round as f64 / 100.0;
    let ingests = async {
        for round in 0..50 {
            server
                .ingest_ok("betpawa", &[round % 10 + 1, 100 + round], price(round))
                .await;
        }
    };
    tokio::time::timeout(common::WAIT, ingests)
        .await
        .expect("every ingest is answered while the database is frozen");
    assert_eq!(server.get("/api/events/1/odds").await.0, 200);
    reported(&server, "degraded").await;

    pg.thaw();
    persisted(&server, &pg, 60).await;
    eventually("the lag is back to 0", || async {
        let metrics = server.metrics().await;
        let lag = metrics
            .lines()
            .find_map(|line| line.strip_prefix("oddsbus_persist_lag_seconds "));
        lag.and_then(|lag| lag.parse::<f64>().ok()) == Some(0.0)
    })
    .await;
    let last = pg.query("SELECT outcomes->0->>'odds' FROM odds_current WHERE event_id = 1");
    assert_eq!(
        last,
        price(40).to_string(),
        "event 1's last price, of round 40"
    );
}

/// `?wait=persisted`'s 200, then the broker killed at once (SIGKILL, no shutdown): a broker
/// started again on the database serves the odds.
#[tokio::test]
async fn a_persisted_ingest_survives_a_kill_9_right_after_its_200() {
    let pg = PgServer::start();
    let url = pg.url();
    let args = ["--database-url", &url, "--scrape-interval", "0"];
    let (mut child, addr, _logs) = common::spawn_binary(&args, "info");
    let body = json!({"source": "betpawa", "snapshots": [snapshot(7, 2.75)]});
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/odds?wait=persisted"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();

    let again = pg.serve(|_| {}).await;
    let (status, read) = again.get("/api/events/7/odds").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["betpawa"]["markets"][0]["outcomes"][0]["odds"], 2.75);
}

#[tokio::test]
async fn wait_persisted_answers_once_the_odds_are_committed() {
    let pg = PgServer::start();
    let server = pg.serve(|_| {}).await;
    let body = json!({"source": "bet9ja", "snapshots": [snapshot(7, 2.2), snapshot(8, 2.3)]});
    let (status, reply) = server.ingest_persisted(&body).await;
    assert_eq!(status, 200, "{reply}");
    // At the reply, not eventually: the rows are committed.
    let held = "SELECT count(*) FROM odds_current WHERE source = 'bet9ja' AND event_id IN (7, 8)";
    assert_eq!(pg.query(held), "2");

    let url = server.url("/api/odds?wait=soon");
    let response = server.http.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn wait_persisted_with_the_database_away_is_a_timeout_and_the_cache_has_the_odds() {
    let pg = PgServer::start();
    let short = std::time::Duration::from_millis(300);
    let server = pg.serve(|c| c.persist_timeout = short).await;
    pg.stop();
    let body = json!({"source": "betpawa", "snapshots": [snapshot(9, 2.4)]});
    let (status, reply) = server.ingest_persisted(&body).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "persist_timeout");
    assert_eq!(
        server.get("/api/events/9/odds").await.0,
        200,
        "served from the cache"
    );
    pg.restart();
    // A retry of the same body waits again; once the writer is back, it is a 200.
    eventually("a retry is answered 200", || async {
        server.ingest_persisted(&body).await.0 == 200
    })
    .await;
    assert_eq!(
        pg.query("SELECT count(*) FROM odds_current WHERE event_id = 9"),
        "1"
    );
}

#[tokio::test]
async fn wait_persisted_without_a_database_is_refused_and_applies_nothing() {
    let server = TestServer::start().await;
    let body = json!({"source": "betpawa", "snapshots": [snapshot(5, 2.0)]});
    let (status, reply) = server.ingest_persisted(&body).await;
    assert_eq!(
        (status, &reply["error"]["code"]),
        (400, &json!("no_database")),
        "{reply}"
    );
    assert_eq!(server.get("/api/events/5/odds").await.0, 404);
}

#[tokio::test]
async fn an_event_the_cache_evicted_is_read_from_the_database() {
    let pg = PgServer::start();
    let server = pg.serve(|c| c.max_events = 2).await;
    let mut named = snapshot(1, 2.0);
    named["event"] = json!({"name": "Inter v Milan"});
    let body = json!({"source": "betpawa", "snapshots": [named]});
    assert_eq!(server.ingest_persisted(&body).await.0, 200);
    let (_, cached) = server.get("/api/events/1/odds").await;
    server.ingest_ok("betpawa", &[2, 3], 2.0).await; // the cache holds two: event 1 leaves
    assert!(server.broker.cache.event_odds(1).is_none(), "evicted");

    let (status, read) = server.get("/api/events/1/odds").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        read, cached,
        "the same reply, snapshot id and details included"
    );
    assert_eq!(server.get("/api/events/999/odds").await.0, 404);

    // A bulk read mixes both, by id; what neither holds is left out.
    let (status, bulk) = server.get("/api/events/odds?ids=3,1,999,2").await;
    assert_eq!(status, 200, "{bulk}");
    let ids: Vec<u64> = bulk["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_u64())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(bulk["events"][0], cached);
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_at_start_stops_the_broker() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/oddsbus",
        common::free_port()
    );
    let (code, stderr) =
        common::run_binary(&["--listen", "127.0.0.1:0", "--database-url", &url]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--database-url") && stderr.contains("cannot be reached"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let pg = PgServer::start();
    pg.serve(|_| {}).await.stop().await; // migrated
    pg.query(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES (9999, 'from_a_newer_oddsbus', '2026-12-04T00:00:00Z', '0')",
    );
    let (code, stderr) =
        common::run_binary(&["--listen", "127.0.0.1:0", "--database-url", &pg.url()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("newer"), "{stderr}");
}
