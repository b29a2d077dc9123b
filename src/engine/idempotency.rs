//! `Idempotency-Key` on a single node: what each keyed ingest stored, kept for
//! `--history-ttl`, so that a client that retries (its reply lost, or a 503) is answered
//! what the first one did and nothing is applied twice. A cluster member keeps the same in
//! Redis, in the append script, so a retry is safe on any node.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{HttpError, HttpErrorCode, IngestReply};

/// Longest key, in characters: a UUID is 36.
pub const MAX_KEY_CHARS: usize = 128;

/// Most keys remembered at once (at most about 200 bytes each); past it the oldest go first.
pub const MAX_KEYS: usize = 100_000;

/// Checks an `Idempotency-Key` header: 1 to [`MAX_KEY_CHARS`] visible ASCII characters.
pub fn check(key: &[u8]) -> Result<&str, HttpError> {
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    match std::str::from_utf8(key) {
        Ok(text) if visible && !text.is_empty() && text.len() <= MAX_KEY_CHARS => Ok(text),
        _ => Err(HttpError::new(
            HttpErrorCode::InvalidHeader,
            format!("`Idempotency-Key` must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        )),
    }
}

/// The keyed ingests of the last `ttl`, oldest first.
#[derive(Debug)]
pub struct Recent {
    ttl: Duration,
    stored: HashMap<String, IngestReply>,
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    /// Remembers for `ttl`.
    pub fn new(ttl: Duration) -> Recent {
        Recent {
            ttl,
            stored: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// What the ingest keyed `key` stored, if one was made within the TTL.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<IngestReply> {
        self.forget_old(now);
        self.stored.get(key).copied()
    }

    /// Remembers what the ingest keyed `key` stored.
    pub fn insert(&mut self, key: &str, stored: IngestReply, now: Instant) {
        if self.stored.insert(key.to_owned(), stored).is_none() {
            self.order.push_back((now, key.to_owned()));
        }
        while self.order.len() > MAX_KEYS {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.stored.remove(&oldest);
            }
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.stored.remove(key);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_remembered_for_the_ttl() {
        assert_eq!(check(b"3f2a-retry-1").unwrap(), "3f2a-retry-1");
        for bad in [&b""[..], b"has space", b"\xff", &[b'k'; MAX_KEY_CHARS + 1]] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        let start = Instant::now();
        let mut recent = Recent::new(Duration::from_secs(60));
        let stored = IngestReply {
            accepted: 2,
            changed: 1,
            stale: 0,
        };
        recent.insert("a", stored, start);
        assert_eq!(
            recent.get("a", start + Duration::from_secs(59)),
            Some(stored)
        );
        assert_eq!(recent.get("a", start + Duration::from_secs(60)), None);
    }
}
