//! The two engines behind one seam agree: the same random ingests, fed to a single node and
//! to a one-node cluster (its own `redis-server`), get the same replies, and leave the same
//! reads behind. What differs only by the clock (`updated_at`) is left out.

mod common;

use common::redis::{node, RedisServer};
use common::{snapshot, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};
use serde_json::{json, Value};

const SOURCES: [&str; 4] = ["betpawa", "sportybet", "bet9ja", "nobody"];
const EVENTS: u64 = 6;

/// One ingest: a source (the last one is not accepted), snapshots as (event, price,
/// minute captured, a name for the match), and maybe an idempotency key.
#[derive(Debug, Clone)]
struct Put {
    source: usize,
    snapshots: Vec<(u64, u8, u8, Option<u8>)>,
    key: Option<u8>,
}

fn put() -> impl Strategy<Value = Put> {
    let snapshot = (
        0..EVENTS,
        0u8..3,
        0u8..4,
        proptest::option::weighted(0.3, 0u8..3),
    );
    (
        prop_oneof![8 => 0usize..3, 1 => Just(3usize)],
        proptest::collection::vec(snapshot, 1..5),
        proptest::option::weighted(0.2, 0u8..3),
    )
        .prop_map(|(source, snapshots, key)| Put {
            source,
            snapshots,
            key,
        })
}

impl Put {
    fn body(&self) -> Value {
        let snapshots: Vec<Value> = self
            .snapshots
            .iter()
            .map(|&(event_id, price, minute, name)| {
                let mut snapshot = snapshot(event_id, 1.5 + f64::from(price) / 2.0);
                snapshot["captured_at"] = json!(format!("2026-12-01T10:0{minute}:00Z"));
                if let Some(name) = name {
                    snapshot["event"] = json!({"name": format!("Team {name} v Other")});
                }
                snapshot
            })
            .collect();
        json!({"source": SOURCES[self.source], "snapshots": snapshots})
    }
}

/// Status, replayed header and body of one ingest.
async fn ingest(server: &TestServer, put: &Put) -> (u16, bool, Value) {
    let mut request = server.http.post(server.url("/api/odds")).json(&put.body());
    if let Some(key) = put.key {
        request = request.header("idempotency-key", format!("key-{key}"));
    }
    let response = request.send().await.unwrap();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let status = response.status().as_u16();
    let mut body: Value = response.json().await.unwrap();
    if status != 200 {
        // Reasons are for people: the code is the contract.
        body = body["error"]["code"].clone();
    }
    (status, replayed, body)
}

/// Every read of the events, less what only the clock decides.
async fn reads(server: &TestServer) -> Vec<(u16, Value)> {
    let mut all = vec![server.get("/api/events").await];
    for event_id in 0..EVENTS {
        all.push(server.get(&format!("/api/events/{event_id}/odds")).await);
    }
    for (_, body) in &mut all {
        forget_clock(body);
    }
    if let Some(events) = all[0].1["events"].as_array_mut() {
        events.sort_by_key(|event| event["event_id"].as_u64());
    }
    all
}

fn forget_clock(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("updated_at");
            map.values_mut().for_each(forget_clock);
        }
        Value::Array(items) => items.iter_mut().for_each(forget_clock),
        _ => {}
    }
}

#[test]
fn a_single_node_and_a_one_node_cluster_answer_alike() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let (single, cluster) =
        runtime.block_on(async { (TestServer::start().await, node(&redis).await) });
    let mut runner = TestRunner::new(Cases {
        cases: 128,
        failure_persistence: None,
        ..Cases::default()
    });
    let puts = proptest::collection::vec(put(), 1..6);
    let result = runner.run(&puts, |puts| {
        runtime.block_on(async {
            for put in &puts {
                let alone = ingest(&single, put).await;
                let member = ingest(&cluster, put).await;
                prop_assert_eq!(&alone, &member, "the replies to {:?}", put);
            }
            prop_assert_eq!(reads(&single).await, reads(&cluster).await, "the reads");
            Ok(())
        })
    });
    runtime.block_on(async {
        single.stop().await;
        cluster.stop().await;
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
