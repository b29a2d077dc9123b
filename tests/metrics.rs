//! `GET /metrics`: the Prometheus text format, counting what really happened.

mod common;

use common::{SseClient, TestServer};

/// The value of one sample line, e.g. `oddsbus_frames_sent_total`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_count_connections_publications_frames_ingests_and_scrapes() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_updates").await;
    server.ingest_ok("betpawa", &[1, 2], 2.0).await;
    assert_eq!(client.recv().await["type"], "odds_update");
    let (status, _) = server.post_raw("not json").await;
    assert_eq!(status, 400);
    let run = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(run.last().unwrap()["phase"], "completed");

    let text = server.metrics().await;
    assert!(text.ends_with("# EOF\n"), "{text}");

    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(value("oddsbus_active_connections"), 1.0);
    assert_eq!(value("oddsbus_connections_opened_total"), 1.0);
    assert_eq!(value(r#"oddsbus_ingest_requests_total{status="200"}"#), 1.0);
    assert_eq!(value(r#"oddsbus_ingest_requests_total{status="400"}"#), 1.0);
    assert!(value(r#"oddsbus_messages_published_total{topic="odds_updates"}"#) >= 2.0);
    // Every step of the run (how many `platform_progress` there are depends on timing).
    assert_eq!(
        value(r#"oddsbus_messages_published_total{topic="scrape_progress"}"#),
        run.len() as f64
    );
    assert!(
        value("oddsbus_frames_sent_total") >= 2.0,
        "ack and the update at least"
    );
    assert!(value("oddsbus_bytes_sent_total") > 100.0);
    assert_eq!(
        value(r#"oddsbus_scrape_runs_total{outcome="completed"}"#),
        1.0
    );
    assert_eq!(value("oddsbus_scrape_run_seconds_count"), 1.0);
    assert!(value("oddsbus_dispatcher_batch_size_count") >= 1.0);

    // Closing is counted by reason once the connection has left.
    client.stream.close(None).await.unwrap();
    server
        .wait_for_stats(|s| s["active_connections"] == 0)
        .await;
    let text = server.metrics().await;
    assert_eq!(sample(&text, "oddsbus_active_connections"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"oddsbus_connections_closed_total{reason="client_closed"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

/// A fresh broker lists every labelled family with its known labels at 0, so that a
/// dashboard's query (or the troubleshooting grep in docs/OPERATIONS.md) finds them before
/// the first event.
#[tokio::test]
async fn a_fresh_broker_lists_every_labelled_family_at_zero() {
    let server = TestServer::start().await;
    let text = server.metrics().await;
    for series in [
        r#"oddsbus_connections_closed_total{reason="client_closed"}"#,
        r#"oddsbus_connections_closed_total{reason="too_slow"}"#,
        r#"oddsbus_connections_refused_total{reason="forbidden_origin"}"#,
        r#"oddsbus_connections_refused_total{reason="too_many_connections"}"#,
        r#"oddsbus_messages_published_total{topic="odds_changes"}"#,
        r#"oddsbus_recoveries_total{outcome="too_old"}"#,
        r#"oddsbus_lag_limit_total{action="close"}"#,
        r#"oddsbus_ingest_requests_total{status="200"}"#,
        r#"oddsbus_ingest_requests_total{status="503"}"#,
        r#"oddsbus_scrape_runs_total{outcome="failed"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
    }
}
