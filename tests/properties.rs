//! Property tests: random and hostile input never breaks the decoders, a connection's
//! invariants, or the cache. The WebSocket and HTTP properties run against one real server.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use common::TestServer;
use futures_util::SinkExt;
use oddsbus::{decode_client, ErrorCode, Market, OddsCache, Outcome, Snapshot, Timestamp};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

/// A runtime and a server shared by every case of one property: a case is a fresh connection,
/// not a fresh broker. Each property has its own, so their traffic never mixes.
fn rig(cell: &'static OnceLock<(Runtime, TestServer)>) -> &'static (Runtime, TestServer) {
    cell.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(TestServer::with(|c| {
            c.client_rate = 10_000.0;
            c.client_burst = 10_000;
        }));
        (runtime, server)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text decodes or gets one of the contract's codes; it never panics.
    #[test]
    fn client_decoding_is_total(text in any::<String>()) {
        if let Err(error) = decode_client(&text) {
            prop_assert!(matches!(
                error.code,
                ErrorCode::InvalidJson | ErrorCode::UnknownType | ErrorCode::InvalidMessage
            ));
            prop_assert!(!error.message.is_empty());
        }
    }

    /// JSON-shaped input, closer to the real thing, is just as safe.
    #[test]
    fn client_decoding_of_json_objects_is_total(
        kind in prop_oneof![
            Just("ping".to_owned()),
            Just("subscribe".to_owned()),
            Just("unsubscribe".to_owned()),
            "[a-z]{0,8}",
        ],
        topics in proptest::option::of(proptest::collection::vec(any::<String>(), 0..4)),
        extra in any::<i64>(),
    ) {
        let message = json!({"type": kind, "topics": topics, "extra": extra}).to_string();
        let _ = decode_client(&message);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Ping,
    Subscribe(Vec<&'static str>),
    Unsubscribe(Vec<&'static str>),
    Garbage(String),
    Binary,
}

fn op() -> impl Strategy<Value = Op> {
    let name = prop_oneof![
        Just("odds_updates"),
        Just("scrape_progress"),
        Just("nope"),
        Just("")
    ];
    let names = proptest::collection::vec(name, 0..4);
    prop_oneof![
        Just(Op::Ping),
        names.clone().prop_map(Op::Subscribe),
        names.prop_map(Op::Unsubscribe),
        any::<String>().prop_map(Op::Garbage),
        Just(Op::Binary),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a client sends, every `subscribed`/`unsubscribed` reply carries exactly the
    /// subscription set a model predicts, errors never close the connection, and the server's
    /// counts agree at the end.
    #[test]
    fn replies_always_match_the_true_subscription_set(ops in proptest::collection::vec(op(), 1..20)) {
        static RIG: OnceLock<(Runtime, TestServer)> = OnceLock::new();
        let (runtime, server) = rig(&RIG);
        runtime.block_on(async {
            let (mut client, ack) = server.ws_acked("?topics=odds_updates").await;
            let mut model: BTreeSet<&str> = BTreeSet::from(["odds_updates"]);
            prop_assert_eq!(&ack["topics"], &json!(model));
            for op in &ops {
                match op {
                    Op::Ping => {
                        client.send_json(json!({"type": "ping"})).await;
                        prop_assert_eq!(&client.recv().await["type"], "pong");
                    }
                    Op::Subscribe(names) | Op::Unsubscribe(names) => {
                        let subscribe = matches!(op, Op::Subscribe(_));
                        let kind = if subscribe { "subscribe" } else { "unsubscribe" };
                        client.send_json(json!({"type": kind, "topics": names})).await;
                        for name in names.iter().filter(|n| oddsbus::Topic::from_name(n).is_some()) {
                            if subscribe { model.insert(name); } else { model.remove(name); }
                        }
                        let reply = client.recv().await;
                        prop_assert_eq!(&reply["type"], if subscribe { "subscribed" } else { "unsubscribed" });
                        prop_assert_eq!(&reply["topics"], &json!(model));
                        if names.iter().any(|n| oddsbus::Topic::from_name(n).is_none()) {
                            prop_assert_eq!(&client.recv().await["code"], "unknown_topic");
                        }
                    }
                    Op::Garbage(text) => {
                        client.send_text(text).await;
                        let reply = client.recv().await;
                        // Garbage may happen to be a valid message; anything else is an error.
                        let kind = reply["type"].as_str().unwrap_or_default().to_owned();
                        prop_assert!(["error", "pong", "subscribed", "unsubscribed"].contains(&kind.as_str()), "{}", reply);
                        if kind == "subscribed" || kind == "unsubscribed" {
                            let set: BTreeSet<String> = serde_json::from_value(reply["topics"].clone()).unwrap();
                            model = set.iter().map(|t| oddsbus::Topic::from_name(t).unwrap().name()).collect();
                            let _ = client.until_pong().await; // skip an unknown_topic error, if any
                        }
                    }
                    Op::Binary => {
                        client.stream.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
                        prop_assert_eq!(&client.recv().await["code"], "unsupported_frame");
                    }
                }
            }
            // The connection is still there and the server's view agrees with the model.
            prop_assert_eq!(client.until_pong().await, Vec::<Value>::new());
            client.send_json(json!({"type": "subscribe", "topics": []})).await;
            prop_assert_eq!(&client.recv().await["topics"], &json!(model));
            Ok(())
        })?;
    }

    /// Random and mutated ingest bodies get 200 or a 4xx JSON error, never a 5xx, and a refused
    /// body changes nothing.
    #[test]
    fn ingest_never_fails_badly(body in ingest_body()) {
        static RIG: OnceLock<(Runtime, TestServer)> = OnceLock::new();
        let (runtime, server) = rig(&RIG);
        runtime.block_on(async {
            let (_, before) = server.get("/api/events").await;
            let (status, reply) = server.post_raw(body.clone()).await;
            prop_assert!(status == 200 || (400..500).contains(&status), "{} for {:?}", status, body);
            if status == 200 {
                prop_assert!(reply["accepted"].is_u64());
            } else {
                prop_assert!(reply["error"]["code"].is_string(), "{}", reply);
                let (_, after) = server.get("/api/events").await;
                prop_assert_eq!(before, after);
            }
            Ok(())
        })?;
    }
}

/// Bodies from near-valid to nonsense: valid requests with a field replaced by something odd,
/// and arbitrary text.
fn ingest_body() -> impl Strategy<Value = String> {
    let odd = prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(1e308)),
        Just(json!("x")),
        Just(json!([])),
        Just(json!({})),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
    ];
    let fields = prop_oneof![
        Just("source"),
        Just("snapshots"),
        Just("event_id"),
        Just("markets"),
        Just("odds"),
        Just("captured_at"),
        Just("line"),
        Just("market_id"),
    ];
    let mutated = (fields, odd, 1u64..1_000_000u64).prop_map(|(field, value, id)| {
        let mut snapshot = common::snapshot(id, 2.0);
        snapshot["captured_at"] = json!("2026-11-21T10:00:00Z");
        let mut body = json!({"source": "betpawa", "snapshots": [snapshot]});
        match field {
            "source" | "snapshots" => body[field] = value,
            "event_id" | "markets" | "captured_at" => body["snapshots"][0][field] = value,
            "odds" => body["snapshots"][0]["markets"][0]["outcomes"][0]["odds"] = value,
            _ => body["snapshots"][0]["markets"][0][field] = value,
        }
        body.to_string()
    });
    prop_oneof![mutated, any::<String>()]
}

/// A snapshot of random markets, prices, lines, names and times.
fn any_snapshot() -> impl Strategy<Value = Snapshot> {
    let outcome = ("\\PC{0,6}", 1.0f64..1e6).prop_map(|(name, odds)| Outcome {
        name: name.as_str().into(),
        odds,
    });
    let market = (
        "\\PC{1,8}",
        "\\PC{0,12}",
        proptest::option::of(-1e3f64..1e3),
        proptest::collection::vec(outcome, 0..4),
    )
        .prop_map(|(id, name, line, outcomes)| Market {
            market_id: id.as_str().into(),
            name: name.as_str().into(),
            line,
            outcomes,
        });
    // Any time of the years the contract can write, with up to 9 digits below the second.
    let time = (
        0u32..=9999,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        "[0-9]{1,9}",
    )
        .prop_map(|(y, mo, d, h, mi, s, fraction)| {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{fraction}Z");
            Timestamp::parse(&text).unwrap()
        });
    (
        proptest::option::of(any::<i64>()),
        time,
        proptest::collection::vec(market, 0..4),
    )
        .prop_map(|(bookmaker_id, captured_at, markets)| Snapshot {
            bookmaker_id,
            captured_at,
            markets,
            event: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// The JSON the cache stores once and every read serves is, byte for byte, what serde
    /// writes for the snapshot with its id: the encoding the reads had before they served
    /// stored bytes.
    #[test]
    fn stored_snapshots_are_serdes_bytes(event_id in 0u64..1 << 53, snapshot in any_snapshot()) {
        #[derive(serde::Serialize)]
        struct Typed<'a> {
            snapshot_id: u64,
            event_id: u64,
            #[serde(flatten)]
            snapshot: &'a Snapshot,
        }
        let cache = OddsCache::new();
        cache.put_competitor_snapshot(event_id, "sportybet", snapshot.clone());
        let odds = cache.event_odds(event_id).unwrap();
        let stored = odds.source("sportybet").unwrap();
        let typed = Typed { snapshot_id: stored.snapshot_id, event_id, snapshot: &snapshot };
        prop_assert_eq!(
            std::str::from_utf8(&stored.json).unwrap(),
            serde_json::to_string(&typed).unwrap()
        );
    }
}
