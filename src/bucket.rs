//! A token bucket: at most `burst` events at once, then one per `per_token` on average. The
//! dispatcher paces publications with it (`reserve`) and each WebSocket connection limits its
//! client's messages with it (`try_take`).

use std::time::{Duration, Instant};

/// A token bucket refilled continuously.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_token: Duration,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled at one per `per_token` (which must be more
    /// than zero).
    pub fn new(per_token: Duration, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            per_token,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned =
            now.saturating_duration_since(self.last).as_secs_f64() / self.per_token.as_secs_f64();
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
    }

    /// Tokens the bucket holds when full.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token even if none is there yet, and returns how long until it would have been:
    /// zero when one was available.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.per_token.mul_f64(-self.tokens)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_through_then_one_per_period() {
        let start = Instant::now();
        let period = Duration::from_millis(4);
        let mut bucket = TokenBucket::new(period, 4.0, start);
        for _ in 0..4 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(start), period);
        // A quiet spell refills it.
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(1)),
            Duration::ZERO
        );
        // A steady stream slower than one per period never waits.
        let mut now = start + Duration::from_secs(2);
        for _ in 0..100 {
            now += Duration::from_millis(5);
            assert_eq!(bucket.reserve(now), Duration::ZERO);
        }
    }

    #[test]
    fn try_take_refuses_without_borrowing() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Duration::from_millis(100), 2.0, start);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start));
        assert!(!bucket.try_take(start), "a refusal costs nothing");
        assert!(bucket.try_take(start + Duration::from_millis(100)));
    }
}
