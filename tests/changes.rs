//! The `odds_changes` topic (docs/PROTOCOL.md, "Topics"): the changed snapshots themselves,
//! for clients that would otherwise refetch every id `odds_updates` names.

mod common;

use common::{snapshot, TestServer};
use serde_json::{json, Value};

/// The offset the ack (or a `subscribed`) gives `odds_changes`, and its epoch.
fn position(reply: &Value) -> (String, u64) {
    let position = &reply["positions"]["odds_changes"];
    let epoch = position["epoch"].as_str().expect("an epoch").to_owned();
    (epoch, position["offset"].as_u64().expect("an offset"))
}

#[tokio::test]
async fn only_clients_that_ask_get_the_snapshots_and_they_are_what_reads_return() {
    let server = TestServer::start().await;
    let (_, plain) = server.ws_acked("").await;
    assert_eq!(plain["topics"], json!(["odds_updates", "scrape_progress"]));
    let (mut client, ack) = server.ws_acked("?topics=odds_changes").await;
    assert_eq!(ack["topics"], json!(["odds_changes"]));
    let (_, offset) = position(&ack);

    server.ingest_ok("sportybet", &[7, 8], 2.0).await;
    let message = client.recv().await;
    assert_eq!(message["type"], "odds_change");
    assert_eq!(message["offset"], offset + 1);
    assert_eq!(message["data"]["source"], "sportybet");
    assert_eq!(message["data"]["count"], 2);
    for (index, id) in [7, 8].into_iter().enumerate() {
        let read = server.get(&format!("/api/events/{id}/odds")).await.1;
        assert_eq!(
            message["data"]["snapshots"][index],
            read["competitors"]["sportybet"]
        );
    }

    // A refresh (same odds) is not a change; new odds are.
    server.ingest_ok("sportybet", &[7], 2.0).await;
    server.ingest_ok("sportybet", &[8], 2.4).await;
    let next = client.recv().await;
    // Each change takes one offset of the log: the first message covered two.
    assert_eq!(next["offset"], offset + 3);
    assert_eq!(next["data"]["snapshots"][0]["event_id"], 8);
    assert_eq!(
        next["data"]["snapshots"][0]["markets"][0]["outcomes"][0]["odds"],
        2.4
    );
    assert_eq!(client.until_pong().await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_client_that_reconnects_with_since_gets_the_snapshots_it_missed() {
    let server = TestServer::start().await;
    let (client, ack) = server.ws_acked("?topics=odds_changes").await;
    let (epoch, offset) = position(&ack);
    drop(client);

    server.ingest_ok("betpawa", &[1], 2.0).await;
    server.ingest_ok("bet9ja", &[2], 2.0).await;
    let since = format!("?topics=odds_changes&since=odds_changes:{epoch}:{offset}");
    let (mut client, ack) = server.ws_acked(&since).await;
    assert_eq!(ack["recovered"], json!(["odds_changes"]));
    let missed = client.until_pong().await;
    let got: Vec<(&Value, &Value)> = missed
        .iter()
        .map(|m| (&m["data"]["source"], &m["data"]["snapshots"][0]["event_id"]))
        .collect();
    assert_eq!(
        got,
        [
            (&json!("betpawa"), &json!(1)),
            (&json!("bet9ja"), &json!(2))
        ]
    );
}

#[tokio::test]
async fn a_large_change_comes_in_frames_under_64_kib_in_order() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("?topics=odds_changes").await;
    let ids: Vec<u64> = (1..=600).collect();
    let snapshots: Vec<Value> = ids.iter().map(|&id| snapshot(id, 2.0)).collect();
    let (status, _) = server
        .ingest(&json!({"source": "betpawa", "snapshots": snapshots}))
        .await;
    assert_eq!(status, 200);

    let mut got = Vec::new();
    let mut frames = 0;
    while got.len() < ids.len() {
        let text = client.recv_text().await;
        assert!(text.len() < 64 * 1024, "a frame of {} bytes", text.len());
        let message: Value = serde_json::from_str(&text).unwrap();
        let snapshots = message["data"]["snapshots"].as_array().unwrap();
        assert_eq!(message["data"]["count"], snapshots.len());
        got.extend(snapshots.iter().map(|s| s["event_id"].as_u64().unwrap()));
        frames += 1;
    }
    assert_eq!(got, ids);
    assert!(
        frames > 1,
        "600 snapshots of ~200 bytes need several frames"
    );
}

#[tokio::test]
async fn subscribe_adds_odds_changes_to_a_default_connection() {
    let server = TestServer::start().await;
    let (mut client, _) = server.ws_acked("").await;
    client
        .send_json(json!({"type": "subscribe", "topics": ["odds_changes"]}))
        .await;
    let reply = client.recv_type("subscribed").await;
    assert_eq!(
        reply["topics"],
        json!(["odds_changes", "odds_updates", "scrape_progress"])
    );
    server.ingest_ok("betpawa", &[5], 2.0).await;
    let mut kinds = vec![
        client.recv().await["type"].clone(),
        client.recv().await["type"].clone(),
    ];
    kinds.sort_by_key(|kind| kind.to_string());
    assert_eq!(kinds, [json!("odds_change"), json!("odds_update")]);
}

/// No subscriber copies a frame larger than `--max-frame-bytes`: a snapshot that would not
/// fit in one comes on `odds_changes` as an `odds_update` of its id, in its place.
#[tokio::test]
async fn a_snapshot_larger_than_a_frame_comes_as_its_id() {
    let server = TestServer::with(|c| c.max_frame_bytes = 4096).await;
    let (mut client, _) = server.ws_acked("?topics=odds_changes").await;
    let big = common::wide_snapshot(2, 2, 100); // about 6 KB
    let body = json!({"source": "betpawa", "snapshots": [snapshot(1, 2.0), big, snapshot(3, 2.0)]});
    assert_eq!(server.ingest(&body).await.0, 200);

    let mut ids = Vec::new();
    while ids.len() < 3 {
        let text = client.recv_text().await;
        assert!(text.len() <= 4096, "a frame of {} bytes", text.len());
        let message: Value = serde_json::from_str(&text).unwrap();
        match message["type"].as_str() {
            Some("odds_change") => {
                for snapshot in message["data"]["snapshots"].as_array().unwrap() {
                    ids.push((snapshot["event_id"].clone(), "snapshot"));
                }
            }
            Some("odds_update") => {
                assert_eq!(message["data"]["source"], "betpawa");
                for id in message["data"]["event_ids"].as_array().unwrap() {
                    ids.push((id.clone(), "id"));
                }
            }
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    assert_eq!(
        ids,
        [
            (json!(1), "snapshot"),
            (json!(2), "id"),
            (json!(3), "snapshot")
        ]
    );
}
