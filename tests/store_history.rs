//! The price history and the alerts over days (`--database-url`): every change of a market
//! is kept with each outcome's opening price, across restarts, read by window, source and
//! page; every alert is kept and read back past the node's memory; a day past `--retention`
//! is dropped whole.

mod common;

use common::eventually;
use common::postgres::PgServer;
use serde_json::{json, Value};

fn at(source: &str, event_id: u64, price: f64, captured_at: &str) -> Value {
    let mut snapshot = common::snapshot(event_id, price);
    snapshot["captured_at"] = json!(captured_at);
    json!({"source": source, "snapshots": [snapshot]})
}

/// Every point of every series of a history reply, as (source, outcome, at, odds).
fn points(history: &Value) -> Vec<(String, String, String, f64)> {
    let mut all = Vec::new();
    for series in history["history"].as_array().unwrap() {
        for point in series["points"].as_array().unwrap() {
            all.push((
                series["source"].as_str().unwrap().to_owned(),
                series["outcome"].as_str().unwrap().to_owned(),
                point["at"].as_str().unwrap().to_owned(),
                point["odds"].as_f64().unwrap(),
            ));
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

#[tokio::test]
async fn each_change_is_kept_with_its_opening_price_across_a_restart() {
    let pg = PgServer::start();
    let first = pg.serve(|_| {}).await;
    for body in [
        at("betpawa", 4, 2.0, "2026-12-01T10:00:00Z"),
        at("betpawa", 4, 2.0, "2026-12-01T10:00:05Z"), // no price moved: no row
        at("sportybet", 4, 2.1, "2026-12-01T10:00:07Z"),
        at("betpawa", 4, 2.5, "2026-12-01T10:00:10Z"),
        at("betpawa", 4, 2.2, "2026-12-01T10:00:15Z"),
    ] {
        let (status, reply) = first.ingest_persisted(&body).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(pg.query("SELECT count(*) FROM odds_history"), "4");
    assert_eq!(pg.query("SELECT count(*) FROM odds_opening"), "6");

    let (status, history) = first.get("/api/events/4/history").await;
    assert_eq!(status, 200, "{history}");
    let series = history["history"].as_array().unwrap();
    assert_eq!(series.len(), 6, "3 outcomes of 2 sources: {history}");
    let home = &series[0];
    assert_eq!(
        (&home["source"], &home["outcome"]),
        (&json!("betpawa"), &json!("1"))
    );
    assert_eq!(
        home["opening"],
        json!({"at": "2026-12-01T10:00:00.000Z", "odds": 2.0})
    );
    assert_eq!(
        home["points"],
        json!([
            {"at": "2026-12-01T10:00:00.000Z", "odds": 2.0},
            {"at": "2026-12-01T10:00:10.000Z", "odds": 2.5},
            {"at": "2026-12-01T10:00:15.000Z", "odds": 2.2},
        ])
    );
    let draw = series
        .iter()
        .find(|s| s["outcome"] == "X" && s["source"] == "betpawa");
    assert_eq!(
        draw.unwrap()["points"].as_array().unwrap().len(),
        1,
        "X never moved: {history}"
    );
    assert!(history.get("next_from").is_none(), "one page: {history}");
    first.stop().await;

    let again = pg.serve(|_| {}).await;
    assert_eq!(again.get("/api/events/4/history").await.1, history);

    // A source, a window, a market with no prices; and pages of one row.
    let (_, sporty) = again.get("/api/events/4/history?source=sportybet").await;
    assert_eq!(sporty["history"].as_array().unwrap().len(), 3, "{sporty}");
    let window = "from=2026-12-01T10:00:07Z&to=2026-12-01T10:00:15Z";
    let (_, inside) = again.get(&format!("/api/events/4/history?{window}")).await;
    // A market's row holds all its outcomes: each series starts in the window at its price
    // there, moved or not.
    let point = |source: &str, outcome: &str, at: &str, odds: f64| {
        (
            source.to_owned(),
            outcome.to_owned(),
            format!("2026-12-01T10:00:{at}.000Z"),
            odds,
        )
    };
    assert_eq!(
        points(&inside),
        [
            point("betpawa", "1", "10", 2.5),
            point("betpawa", "2", "10", 3.5),
            point("betpawa", "X", "10", 3.2),
            point("sportybet", "1", "07", 2.1),
            point("sportybet", "2", "07", 3.5),
            point("sportybet", "X", "07", 3.2),
        ],
        "{inside}"
    );
    let (status, none) = again.get("/api/events/4/history?market=ou").await;
    assert_eq!((status, &none["history"]), (200, &json!([])), "{none}");
    assert_eq!(again.get("/api/events/5/history").await.0, 404);

    let mut paged = Vec::new();
    let mut path = "/api/events/4/history?limit=1".to_owned();
    for page in 1.. {
        assert!(page <= 4, "one page per market row");
        let (status, body) = again.get(&path).await;
        assert_eq!(status, 200, "{body}");
        paged.extend(points(&body));
        let Some(next) = body["next_from"].as_str() else {
            break;
        };
        path = format!(
            "/api/events/4/history?limit=1&from={}",
            next.replace('+', "%2B")
        );
    }
    // A row holds its market's every outcome, so a page may restate a price that did not
    // move; once restated prices are dropped, the pages hold the whole history.
    paged.sort_by(|a, b| a.partial_cmp(b).unwrap());
    paged.dedup_by(|later, earlier| {
        (&later.0, &later.1, later.3) == (&earlier.0, &earlier.1, earlier.3)
    });
    assert_eq!(paged, points(&history));
}

#[tokio::test]
async fn a_day_past_the_retention_is_dropped_whole() {
    let pg = PgServer::start();
    pg.serve(|c| c.retention = 2).await.stop().await;
    // Written before: a day of history ten days ago and one yesterday (UTC) for event 5,
    // which is current; and event 6, last updated ten days ago.
    pg.query(
        r#"DO $$
        DECLARE d date;
        BEGIN
          FOREACH d IN ARRAY ARRAY[(now() AT TIME ZONE 'UTC')::date - 10,
                                   (now() AT TIME ZONE 'UTC')::date - 1] LOOP
            EXECUTE format('CREATE TABLE odds_history_%s PARTITION OF odds_history
                            FOR VALUES FROM (%L) TO (%L)', to_char(d, 'YYYYMMDD'),
                           d || ' 00:00:00+00', (d + 1) || ' 00:00:00+00');
            EXECUTE format('CREATE TABLE odds_alerts_%s PARTITION OF odds_alerts
                            FOR VALUES FROM (%L) TO (%L)', to_char(d, 'YYYYMMDD'),
                           d || ' 00:00:00+00', (d + 1) || ' 00:00:00+00');
          END LOOP;
        END $$;
        INSERT INTO odds_history VALUES
          (5, 'betpawa', '1x2', '', '[{"name":"1","odds":1.5}]',
           now() - interval '10 days', now() - interval '10 days'),
          (5, 'betpawa', '1x2', '', '[{"name":"1","odds":1.7}]',
           now() - interval '1 day', now() - interval '1 day');
        INSERT INTO odds_opening VALUES
          (5, 'betpawa', '1x2', '', '1', 1.5, now() - interval '10 days'),
          (6, 'betpawa', '1x2', '', '1', 1.4, now() - interval '10 days');
        INSERT INTO odds_current (event_id, source, market_id, line, position, name, outcomes,
                                  captured_at, updated_at, snapshot_id) VALUES
          (5, 'betpawa', '1x2', '', 0, '1X2', '[{"name":"1","odds":1.7}]', now(), now(), 1),
          (6, 'betpawa', '1x2', '', 0, '1X2', '[{"name":"1","odds":1.4}]',
           now() - interval '10 days', now() - interval '10 days', 2);
        INSERT INTO event_details VALUES
          (6, 'betpawa', '{"name":"Gone v Away"}', now() - interval '10 days');"#,
    );
    let days = |pg: &PgServer, parent: &str| {
        pg.query(&format!(
            "SELECT string_agg(((now() AT TIME ZONE 'UTC')::date
                                - to_date(right(c.relname, 8), 'YYYYMMDD'))::text, ','
                               ORDER BY c.relname)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = '{parent}'::regclass"
        ))
    };
    for parent in ["odds_history", "odds_alerts"] {
        assert_eq!(
            days(&pg, parent),
            "10,1,0",
            "days ago that each table holds"
        );
    }

    let server = pg.serve(|c| c.retention = 2).await;
    // Applied once the broker serves: the old days' tables, then the old event's rows.
    eventually("the retention applied", || async {
        days(&pg, "odds_history") == "1,0"
            && days(&pg, "odds_alerts") == "1,0"
            && pg.query("SELECT count(*) FROM odds_current WHERE event_id = 6") == "0"
    })
    .await;
    let (status, history) = server.get("/api/events/5/history").await;
    assert_eq!(status, 200, "{history}");
    let series = &history["history"][0];
    assert_eq!(series["points"].as_array().unwrap().len(), 1, "{history}");
    assert_eq!(series["points"][0]["odds"], 1.7);
    assert_eq!(series["opening"]["odds"], 1.5, "kept past the retention");
    for table in ["odds_current", "odds_opening", "event_details"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE event_id = 6");
        assert_eq!(
            pg.query(&sql),
            "0",
            "{table}: event 6 is past the retention"
        );
    }
    assert_eq!(server.get("/api/events/6/history").await.0, 404);
}

/// Raises a `price_change` of event 101 at sportybet, `from` to `to`, and returns it as
/// `GET /api/alerts` lists it.
async fn raise(server: &common::TestServer, from: f64, to: f64) -> Value {
    let (_, before) = server.get("/api/alerts").await;
    server.ingest_ok("sportybet", &[101], from).await;
    eventually("the analysis took the first price in", || async {
        let (_, fair) = server.get("/api/events/101/fair").await;
        fair["markets"][0]["outcomes"][0]["prices"]["sportybet"]["odds"] == json!(from)
    })
    .await;
    server.ingest_ok("sportybet", &[101], to).await;
    eventually("the alert raised", || async {
        server.get("/api/alerts").await.1["count"] != before["count"]
    })
    .await;
    let newest = server.get("/api/alerts").await.1["alerts"][0].clone();
    assert_eq!(newest["to"], json!(to), "{newest}");
    newest
}

#[tokio::test]
async fn alerts_are_kept_and_read_back_past_the_nodes_memory() {
    let pg = PgServer::start();
    let first = pg.serve(|_| {}).await;
    let kept = raise(&first, 2.10, 2.35).await;
    eventually("the alert written", || async {
        pg.query("SELECT count(*) FROM odds_alerts") == "1"
    })
    .await;
    assert!(first
        .metrics()
        .await
        .contains(r#"oddsbus_persist_rows_total{table="odds_alerts"} 1"#));
    first.stop().await;

    // Three days ago, as another run of the broker wrote it.
    pg.query(
        r#"DO $$
        DECLARE d date := (now() AT TIME ZONE 'UTC')::date - 3;
        BEGIN
          EXECUTE format('CREATE TABLE IF NOT EXISTS odds_alerts_%s PARTITION OF odds_alerts
                          FOR VALUES FROM (%L) TO (%L)', to_char(d, 'YYYYMMDD'),
                         d || ' 00:00:00+00', (d + 1) || ' 00:00:00+00');
        END $$;
        INSERT INTO odds_alerts VALUES (now() - interval '3 days', 'availability', 'warning',
          7, '{"kind":"availability","severity":"warning","event_id":7,"source":"bet9ja",
               "market_id":"btts","line":null,"state":"pulled","at":"2026-12-01T10:00:00.000Z"}');"#,
    );

    // A new node holds in memory only what it raised; the rest of the window comes from the
    // database, newest first, none twice.
    let second = pg.serve(|_| {}).await;
    let (_, read) = second.get("/api/alerts").await;
    assert_eq!(read["alerts"], json!([kept]), "{read}");
    let fresh = raise(&second, 2.35, 2.10).await;
    let (_, read) = second.get("/api/alerts?minutes=5000").await;
    assert_eq!(read["count"], 3, "{read}");
    assert_eq!(read["alerts"][0], fresh);
    assert_eq!(read["alerts"][1], kept);
    assert_eq!(read["alerts"][2]["event_id"], 7);
    let (_, two) = second.get("/api/alerts?minutes=5000&limit=2").await;
    assert_eq!(two["alerts"], json!([fresh, kept]));
    let (_, pulled) = second
        .get("/api/alerts?minutes=5000&kind=availability")
        .await;
    assert_eq!(pulled["count"], 1, "{pulled}");
    let (_, hour) = second.get("/api/alerts?minutes=60&kind=availability").await;
    assert_eq!(hour["count"], 0, "{hour}");
    // With a database, the window reaches over the retention (14 days), no further.
    assert_eq!(second.get("/api/alerts?minutes=20160").await.0, 200);
    let (status, body) = second.get("/api/alerts?minutes=20161").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_query"))
    );
}
