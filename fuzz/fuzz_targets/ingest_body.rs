//! Any body a scraper sends to `POST /api/odds`: decoding never panics, a refusal is a 400
//! with a message, and an accepted request stores exactly what it says.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oddsbus::{check_markets, decode_ingest, Config, OddsCache, Timestamp};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config {
        // Small, so that the limit is reachable by the fuzzer.
        max_snapshots_per_request: 8,
        ..Config::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    match decode_ingest(config, data, Timestamp::now()) {
        Ok(batch) => {
            assert!(config.is_known_source(&batch.source));
            assert!(batch.snapshots.len() <= config.max_snapshots_per_request);
            for (_, snapshot) in &batch.snapshots {
                assert!(check_markets(&snapshot.markets).is_ok());
            }
            let ids: Vec<u64> = batch.snapshots.iter().map(|(id, _)| *id).collect();
            let cache = OddsCache::new();
            let outcome = cache.put_batch(&batch.source, batch.snapshots);
            assert_eq!(outcome.accepted, ids.len());
            for id in ids {
                assert!(cache.event_odds(id).is_some(), "event {id} not stored");
            }
        }
        Err(error) => {
            assert_eq!(error.status(), 400, "{error}");
            assert!(!error.message.is_empty());
        }
    }
});
