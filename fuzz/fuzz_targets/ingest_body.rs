//! Any body a scraper sends to `POST /api/odds`: decoding never panics, a refusal carries a
//! listed code, and an accepted request stores exactly what it says.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oddsbus::{ingest, Config, OddsCache, Timestamp};

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
    match ingest::decode(config, data, Timestamp::now()) {
        Ok(batch) => {
            assert!(config.is_known_source(&batch.source));
            assert!(batch.snapshots.len() <= config.max_snapshots_per_request);
            for (_, snapshot) in &batch.snapshots {
                assert!(ingest::check_markets(&snapshot.markets).is_ok());
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
            assert!(ingest::ERROR_CODES.contains(&error.code), "{}", error.code);
            assert!(!error.message.is_empty());
        }
    }
});
