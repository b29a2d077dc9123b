//! `platform_progress`: scrape bars that move, over a real SSE stream.

mod common;

use std::collections::BTreeSet;

use common::{SseClient, TestServer};
use serde_json::Value;

/// Between a platform's start and end, `platform_progress` steps carry that platform's own
/// counts, rising, at most every 250 ms.
#[tokio::test]
async fn platform_progress_moves_the_bars_between_start_and_end() {
    let server = TestServer::with(|c| {
        c.sim_latency_ms = 40;
        c.sim_events = 400;
    })
    .await;
    let started = std::time::Instant::now();
    let events = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    let elapsed = started.elapsed();
    let progress: Vec<&Value> = events
        .iter()
        .filter(|e| e["phase"] == "platform_progress")
        .collect();
    // 400 events in batches of 10, 4 at a time, 40 ms each: about 400 ms per platform.
    assert!(!progress.is_empty(), "{events:?}");
    let most = 3 * (elapsed.as_millis() / 250 + 1) as usize;
    assert!(
        progress.len() <= most,
        "{} steps in {elapsed:?}",
        progress.len()
    );
    for platform in ["betpawa", "sportybet", "bet9ja"] {
        let steps: Vec<&Value> = events
            .iter()
            .filter(|e| e["platform"] == platform)
            .collect();
        assert_eq!(steps.first().unwrap()["phase"], "platform_started");
        assert_eq!(steps.last().unwrap()["phase"], "platform_completed");
        let counts: Vec<(u64, u64)> = steps
            .iter()
            .filter(|e| e["phase"] == "platform_progress")
            .map(|e| {
                (
                    e["events_scraped"].as_u64().unwrap(),
                    e["events_total"].as_u64().unwrap(),
                )
            })
            .collect();
        // The platform's own total (competitors list most of the market, not all of it).
        let totals: BTreeSet<u64> = counts.iter().map(|c| c.1).collect();
        assert!(
            totals.len() <= 1 && totals.iter().all(|&t| t <= 400),
            "{platform}: {counts:?}"
        );
        assert!(
            counts.windows(2).all(|w| w[0].0 < w[1].0),
            "{platform}: {counts:?}"
        );
        assert!(
            counts.iter().all(|&(n, total)| n > 0 && n < total),
            "{platform}: {counts:?}"
        );
    }
}
