//! Scrape runs over real sockets: the SSE stream, the `scrape_progress` topic, the simulated
//! source, failures and periodic runs (docs/PROTOCOL.md, "Scrape progress").

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::{phases, SseClient, TestServer};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use oddsbus::SimulatedSettings;
use oddsbus::{OddsSource, Server, SimulatedSource, Snapshot, SourceError};
use serde_json::{json, Value};

const FULL_RUN: [&str; 8] = [
    "started",
    "platform_started:betpawa",
    "platform_completed:betpawa",
    "platform_started:sportybet",
    "platform_completed:sportybet",
    "platform_started:bet9ja",
    "platform_completed:bet9ja",
    "completed",
];

fn settings(seed: u64) -> SimulatedSettings {
    SimulatedSettings {
        seed,
        events: 300,
        change_fraction: 0.1,
        latency: Duration::ZERO,
    }
}

fn platforms() -> Vec<String> {
    ["betpawa", "sportybet", "bet9ja"]
        .map(String::from)
        .to_vec()
}

/// Acceptance scenario 2: while a scrape runs, an `odds_updates` subscriber gets the changes,
/// the SSE stream shows the run from `started` to `completed`, and a `scrape_progress`
/// subscriber sees the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_streams_progress_and_pushes_odds_updates() {
    let server = TestServer::start().await;
    let (mut odds, _) = server.ws_acked("?topics=odds_updates").await;
    let (mut progress, _) = server.ws_acked("?topics=scrape_progress").await;

    let events = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(phases(&events), FULL_RUN);
    let run_id = events[0]["run_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&run_id).is_ok());
    for event in &events {
        assert_eq!(event["run_id"], run_id.as_str());
        for field in ["events_scraped", "events_total"] {
            assert!(event[field].is_u64(), "{event}");
        }
        assert!(event["message"].is_string());
    }
    let last = events.last().unwrap();
    assert_eq!(last["events_scraped"], last["events_total"]);
    assert!(last["events_total"].as_u64().unwrap() > 3_000, "{last}");

    // The topic carries the same steps, in order.
    let mut topic_phases = Vec::new();
    while topic_phases.last().map(String::as_str) != Some("completed") {
        let message = progress.recv().await;
        assert_eq!(message["type"], "scrape_progress");
        assert_eq!(message["data"]["run_id"], run_id.as_str());
        topic_phases.extend(phases(&[message["data"].clone()]));
    }
    assert_eq!(topic_phases, FULL_RUN);

    let mut updates = odds.until_pong().await;
    updates.retain(|m| m["type"] == "odds_update");
    assert!(
        updates.len() >= 5,
        "only {} odds_update messages",
        updates.len()
    );
    for update in &updates {
        let data = &update["data"];
        assert!(["betpawa", "sportybet", "bet9ja"].contains(&data["source"].as_str().unwrap()));
        assert_eq!(data["count"], data["event_ids"].as_array().unwrap().len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_join_the_same_run() {
    let server = TestServer::start().await;
    let (first, second) = tokio::join!(
        SseClient::open(&server, "/api/scrape/stream"),
        SseClient::open(&server, "/api/scrape/stream"),
    );
    let (first, second) = tokio::join!(first.collect(), second.collect());
    assert_eq!(phases(&first), FULL_RUN);
    assert_eq!(
        phases(&second),
        FULL_RUN,
        "a late joiner still sees the whole run"
    );
    let ids: BTreeSet<&str> = first
        .iter()
        .chain(&second)
        .map(|e| e["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // Once it has ended, the next request starts a new run.
    let third = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_ne!(third[0]["run_id"], first[0]["run_id"]);
}

/// Snapshot ids per (source, event): a new id means the cache stored a change.
fn snapshot_ids(server: &TestServer) -> HashMap<(String, u64), u64> {
    let cache = &server.broker.cache;
    let mut ids = HashMap::new();
    for event in cache.events() {
        for (source, snapshot_id) in event.sources {
            ids.insert((source.to_string(), event.event_id), snapshot_id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_changes_about_the_configured_fraction_and_notifies_only_those() {
    let server = TestServer::start().await;
    let first = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(first.last().unwrap()["phase"], "completed");
    let before = snapshot_ids(&server);

    let (mut client, _) = server.ws_acked("").await;
    let second = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(second.last().unwrap()["phase"], "completed");
    let run_id = second[0]["run_id"].clone();

    // Read until this run's `completed` arrives on the topic; the dispatcher publishes odds
    // before the progress step that followed them, and the pong fence flushes the rest.
    let mut notified: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut messages = Vec::new();
    loop {
        let message = client.recv().await;
        let done = message["type"] == "scrape_progress"
            && message["data"]["run_id"] == run_id
            && message["data"]["phase"] == "completed";
        messages.push(message);
        if done {
            break;
        }
    }
    messages.extend(client.until_pong().await);
    for message in messages.iter().filter(|m| m["type"] == "odds_update") {
        let source = message["data"]["source"].as_str().unwrap();
        for id in message["data"]["event_ids"].as_array().unwrap() {
            notified.insert((source.to_owned(), id.as_u64().unwrap()));
        }
    }

    let after = snapshot_ids(&server);
    assert_eq!(before.len(), after.len(), "same events listed");
    let changed: BTreeSet<(String, u64)> = after
        .iter()
        .filter(|(key, id)| before.get(*key) != Some(*id))
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(
        notified, changed,
        "notified exactly the events that changed"
    );

    let fraction = changed.len() as f64 / after.len() as f64;
    assert!(
        (0.09..=0.11).contains(&fraction),
        "changed {fraction:.3} of the events"
    );
}

/// The simulated source with a fault in listing one platform's events.
struct Faulty {
    inner: SimulatedSource,
    platform: &'static str,
    fault: Fault,
}

enum Fault {
    /// The listing fails, every time.
    Fails,
    /// The listing panics (a bug in the scraper), the first time only.
    PanicsOnce(std::sync::atomic::AtomicBool),
    /// The listing waits until the test lets it go on.
    Waits(Arc<tokio::sync::Notify>),
}

impl Faulty {
    fn new(seed: u64, platform: &'static str, fault: Fault) -> Faulty {
        let inner = SimulatedSource::new(settings(seed), &platforms());
        Faulty {
            inner,
            platform,
            fault,
        }
    }
}

impl OddsSource for Faulty {
    fn list_events<'a>(
        &'a self,
        platform: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, SourceError>> {
        if platform == self.platform {
            match &self.fault {
                Fault::Fails => {
                    let error = SourceError(format!("{platform} answered 503"));
                    return async move { Err(error) }.boxed();
                }
                Fault::PanicsOnce(done) => {
                    if !done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        panic!("a bug in the {platform} scraper");
                    }
                }
                Fault::Waits(go) => {
                    let go = go.clone();
                    return async move {
                        go.notified().await;
                        self.inner.list_events(platform).await
                    }
                    .boxed();
                }
            }
        }
        self.inner.list_events(platform)
    }

    fn fetch_odds<'a>(
        &'a self,
        platform: &'a str,
        event_ids: &'a [u64],
    ) -> BoxFuture<'a, Result<Vec<(u64, Snapshot)>, SourceError>> {
        self.inner.fetch_odds(platform, event_ids)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_platform_is_reported_and_the_run_goes_on() {
    let source = Faulty::new(7, "sportybet", Fault::Fails);
    let server =
        TestServer::with_server(Server::with_source(common::config(), Arc::new(source))).await;
    let events = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(
        phases(&events),
        [
            "started",
            "platform_started:betpawa",
            "platform_completed:betpawa",
            "platform_started:sportybet",
            "failed:sportybet",
            "platform_started:bet9ja",
            "platform_completed:bet9ja",
            "failed",
        ]
    );
    assert!(
        events[4]["message"].as_str().unwrap().contains("503"),
        "{}",
        events[4]
    );
    assert!(events[7]["message"].as_str().unwrap().contains("sportybet"));

    let sources: BTreeSet<String> = server
        .broker
        .cache
        .events()
        .iter()
        .flat_map(|e| e.sources.iter().map(|(s, _)| s.to_string()))
        .collect();
    assert_eq!(sources, BTreeSet::from(["betpawa".into(), "bet9ja".into()]));
}

/// A panic inside a run ends it `failed` for every follower and frees the slot: the next
/// run starts and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_run_ends_it_failed_and_scraping_goes_on() {
    let source = Faulty::new(3, "sportybet", Fault::PanicsOnce(Default::default()));
    let server =
        TestServer::with_server(Server::with_source(common::config(), Arc::new(source))).await;
    let (mut progress, _) = server.ws_acked("?topics=scrape_progress").await;
    let events = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(
        phases(&events),
        [
            "started",
            "platform_started:betpawa",
            "platform_completed:betpawa",
            "platform_started:sportybet",
            "failed"
        ]
    );
    assert!(events[4]["message"].as_str().unwrap().contains("aborted"));
    assert_eq!(events[4]["events_scraped"], events[2]["events_scraped"]);
    // Topic subscribers see the run end too.
    loop {
        let step = progress.recv_type("scrape_progress").await;
        if step["data"]["phase"] == "failed" {
            break;
        }
    }

    let again = SseClient::open(&server, "/api/scrape/stream")
        .await
        .collect()
        .await;
    assert_eq!(phases(&again), FULL_RUN);
}

/// A WebSocket that subscribes to `scrape_progress` mid-run gets the run's steps so far, then
/// the rest, as a scrape stream does: a board opened mid-run shows every platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_joining_mid_run_gets_the_steps_so_far() {
    let go = Arc::new(tokio::sync::Notify::new());
    let source = Faulty::new(5, "sportybet", Fault::Waits(go.clone()));
    let server =
        TestServer::with_server(Server::with_source(common::config(), Arc::new(source))).await;
    let mut stream = SseClient::open(&server, "/api/scrape/stream").await;
    // The run waits in sportybet's listing.
    while stream.next().await.unwrap()["platform"] != "sportybet" {}

    let (mut late, ack) = server.ws_acked("?topics=scrape_progress").await;
    let mut steps = Vec::new();
    while steps.len() < 4 {
        steps.push(late.recv_type("scrape_progress").await);
    }
    let (_, before) = common::position(&ack, "scrape_progress");
    assert_eq!(steps[0]["offset"].as_u64().unwrap(), before + 1, "{ack}");
    go.notify_one();
    loop {
        let step = late.recv_type("scrape_progress").await;
        let last = step["data"]["phase"] == "completed";
        steps.push(step);
        if last {
            break;
        }
    }
    let data: Vec<Value> = steps.iter().map(|s| s["data"].clone()).collect();
    assert_eq!(phases(&data), FULL_RUN);
    // Between runs, a new subscriber gets nothing old.
    let (mut after, _) = server.ws_acked("?topics=scrape_progress").await;
    after.ping_pong().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_sequence_of_snapshots() {
    async fn record(seed: u64) -> Vec<Value> {
        let source = SimulatedSource::new(settings(seed), &platforms());
        let mut seen = Vec::new();
        for _round in 0..3 {
            for platform in platforms() {
                let ids = source.list_events(&platform).await.unwrap();
                for (id, snapshot) in source.fetch_odds(&platform, &ids).await.unwrap() {
                    seen.push(json!([
                        platform,
                        id,
                        snapshot.bookmaker_id,
                        snapshot.markets
                    ]));
                }
            }
        }
        seen
    }
    let (a, b, other) = (record(11).await, record(11).await, record(12).await);
    assert!(a.len() > 2_000);
    assert_eq!(a, b);
    assert_ne!(a, other);
}

#[tokio::test]
async fn a_client_leaving_mid_run_does_not_stop_the_run() {
    let server = TestServer::with(|c| c.sim_latency_ms = 20).await;
    let (mut progress, _) = server.ws_acked("?topics=scrape_progress").await;
    let mut sse = SseClient::open(&server, "/api/scrape/stream").await;
    let started = sse.next().await.unwrap();
    assert_eq!(started["phase"], "started");
    drop(sse);

    loop {
        let message = progress.recv().await;
        if message["data"]["phase"] == "completed" {
            assert_eq!(message["data"]["run_id"], started["run_id"]);
            break;
        }
    }
}

#[tokio::test]
async fn streams_end_when_the_server_shuts_down() {
    let server = TestServer::with(|c| c.sim_latency_ms = 200).await;
    let mut sse = SseClient::open(&server, "/api/scrape/stream").await;
    assert_eq!(sse.next().await.unwrap()["phase"], "started");
    let stopping = tokio::spawn(server.stop());
    let rest = sse.collect().await;
    stopping.await.unwrap();
    let last = rest.last().expect("the run reports how it ended");
    assert_eq!(last["phase"], "failed");
    assert!(
        last["message"].as_str().unwrap().contains("shutting down"),
        "{last}"
    );
}

#[tokio::test]
async fn periodic_scrapes_push_updates_without_any_request() {
    let server = TestServer::with(|c| {
        c.scrape_interval = Duration::from_millis(300);
        c.sim_events = 50;
    })
    .await;
    let (mut client, _) = server.ws_acked("").await;
    let mut runs = BTreeSet::new();
    let mut updates = 0;
    while runs.len() < 2 || updates == 0 {
        let message = client.recv().await;
        match message["type"].as_str().unwrap() {
            "odds_update" => updates += 1,
            "scrape_progress" if message["data"]["phase"] == "completed" => {
                runs.insert(message["data"]["run_id"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
}

/// Every event of the stream carries its step's offset on the `scrape_progress` topic as
/// its `id`; a stream that reconnects with `Last-Event-ID` resumes after that step, and one
/// whose last step ended the run gets 204 (EventSource then stops) and starts no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_ids_and_resume_after_last_event_id() {
    let server = TestServer::with(|c| c.sim_latency_ms = 20).await;
    let (mut topic, _) = server.ws_acked("?topics=scrape_progress").await;
    let mut sse = SseClient::open(&server, "/api/scrape/stream").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(sse.next().await.unwrap());
    }
    let resume_from = sse.last_id.clone().expect("events carry ids");
    drop(sse);

    let resumed = SseClient::resume(&server, "/api/scrape/stream", &resume_from).await;
    let mut resumed = SseClient::from(resumed);
    let mut rest = Vec::new();
    while let Some(step) = resumed.next().await {
        rest.push(step);
    }
    seen.extend(rest);
    assert_eq!(phases(&seen), FULL_RUN, "no step lost, none repeated");
    let last_id = resumed.last_id.clone().unwrap();

    // The ids are the topic's offsets of the same steps (`platform_progress` included).
    let mut offsets = Vec::new();
    loop {
        let message = topic.recv_type("scrape_progress").await;
        offsets.push(message["offset"].as_u64().unwrap().to_string());
        if message["data"]["phase"] == "completed" {
            break;
        }
    }
    assert_eq!(offsets[2], resume_from);
    assert_eq!(offsets.last().unwrap(), &last_id);

    // Reconnecting after the run's last step starts nothing.
    let again = SseClient::resume(&server, "/api/scrape/stream", &last_id).await;
    assert_eq!(again.status(), 204);
    assert!(server.broker.scrape.running().is_none());
    assert_eq!(topic.until_pong().await, Vec::<Value>::new(), "no new run");
}
