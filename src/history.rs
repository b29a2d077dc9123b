//! A topic's log: the offset of its latest message, and a bounded history of its recent
//! messages (encoded, shared with every connection), from which a client that reconnects,
//! or a connection that fell behind its channel, gets exactly what it missed.
//!
//! Every published message is one entry, so offsets are consecutive. The history keeps the
//! last `size` offsets, none older than `ttl`, and at most `bytes` of frames; past any bound
//! the oldest entries go. This is the seam a shared log (Redis, for a cluster) takes over.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::Frame;

/// How much history a topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most offsets kept (`--history-size`).
    pub size: usize,
    /// Oldest entry kept (`--history-ttl`).
    pub ttl: Duration,
    /// Most frame bytes kept (`--history-bytes`).
    pub bytes: usize,
}

/// One published message, as the topic's channel carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Its offset in the topic's log.
    pub offset: u64,
    /// The encoded message, `offset` included.
    pub frame: Frame,
}

/// One topic's log.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    /// Offset of the latest message; 0 before the first.
    top: u64,
    entries: VecDeque<(Instant, Published)>,
    bytes: usize,
}

/// What the history can give a client that has seen everything up to an offset.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// Every message after it, in order (empty when it is the latest).
    Recovered(Vec<Published>),
    /// The offset is past the latest one: it belongs to no log this history knows.
    Ahead,
    /// Messages after it have left the history; `missed` of them are gone for good.
    TooOld {
        /// How many messages after the offset the history no longer holds.
        missed: u64,
    },
}

impl History {
    /// An empty log.
    pub fn new(limits: HistoryLimits) -> History {
        History {
            limits,
            top: 0,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The latest offset (0 before the first message).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Appends the message `encode` makes for the next offset and returns it.
    pub fn append(&mut self, now: Instant, encode: impl FnOnce(u64) -> Frame) -> Published {
        self.top += 1;
        let published = Published {
            offset: self.top,
            frame: encode(self.top),
        };
        self.bytes += published.frame.len();
        self.entries.push_back((now, published.clone()));
        self.trim(now);
        published
    }

    /// Every message after `offset`, if the history still holds all of them.
    pub fn since(&mut self, offset: u64, now: Instant) -> Since {
        self.trim(now);
        if offset > self.top {
            return Since::Ahead;
        }
        let first = self.entries.front().map_or(self.top + 1, |(_, p)| p.offset);
        if offset + 1 < first {
            return Since::TooOld {
                missed: first - offset - 1,
            };
        }
        let skip = (offset + 1 - first) as usize;
        let replay = self.entries.iter().skip(skip).map(|(_, p)| p.clone());
        Since::Recovered(replay.collect())
    }

    /// Whatever the history holds after `offset` (all of it, or only its later part if it
    /// has moved on), in order.
    pub fn after(&mut self, offset: u64, now: Instant) -> Vec<Published> {
        self.trim(now);
        let held = self.entries.iter().map(|(_, p)| p);
        held.filter(|p| p.offset > offset).cloned().collect()
    }

    /// The message at `offset`, if the history still holds it.
    pub fn get(&self, offset: u64) -> Option<&Published> {
        let first = self.entries.front()?.1.offset;
        let index = usize::try_from(offset.checked_sub(first)?).ok()?;
        self.entries.get(index).map(|(_, p)| p)
    }

    /// Entries held, and the age of the oldest.
    pub fn extent(&self, now: Instant) -> (usize, Duration) {
        let oldest = self
            .entries
            .front()
            .map(|(at, _)| now.saturating_duration_since(*at));
        (self.entries.len(), oldest.unwrap_or_default())
    }

    fn trim(&mut self, now: Instant) {
        let limits = self.limits;
        while let Some((at, published)) = self.entries.front() {
            let over = self.entries.len() > limits.size
                || self.bytes > limits.bytes
                || now.saturating_duration_since(*at) > limits.ttl;
            if !over {
                break;
            }
            self.bytes -= published.frame.len();
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(size: usize) -> History {
        History::new(HistoryLimits {
            size,
            ttl: Duration::from_secs(60),
            bytes: 1 << 20,
        })
    }

    fn offsets(since: Since) -> Vec<u64> {
        match since {
            Since::Recovered(replay) => replay.iter().map(|p| p.offset).collect(),
            other => panic!("not recovered: {other:?}"),
        }
    }

    #[test]
    fn offsets_are_consecutive_and_replays_start_after_the_given_one() {
        let now = Instant::now();
        let mut log = history(10);
        for n in 1..=5 {
            let published = log.append(now, |offset| Frame::from(format!("m{offset}")));
            assert_eq!(published.offset, n);
        }
        assert_eq!(offsets(log.since(2, now)), [3, 4, 5]);
        assert_eq!(offsets(log.since(5, now)), Vec::<u64>::new());
        assert_eq!(offsets(log.since(0, now)), [1, 2, 3, 4, 5]);
        assert_eq!(log.since(6, now), Since::Ahead);
    }

    #[test]
    fn the_history_is_bounded_by_size_age_and_bytes() {
        let start = Instant::now();
        let mut log = history(3);
        for _ in 0..5 {
            log.append(start, |_| Frame::from("x"));
        }
        assert_eq!(log.since(1, start), Since::TooOld { missed: 1 });
        assert_eq!(offsets(log.since(2, start)), [3, 4, 5]);
        let later = start + Duration::from_secs(61);
        assert_eq!(log.since(4, later), Since::TooOld { missed: 1 });
        assert_eq!(log.extent(later).0, 0);
        assert_eq!(offsets(log.since(5, later)), Vec::<u64>::new());

        let mut small = History::new(HistoryLimits {
            size: 100,
            ttl: Duration::from_secs(60),
            bytes: 10,
        });
        for _ in 0..4 {
            small.append(start, |_| Frame::from("abcd"));
        }
        assert_eq!(small.extent(start).0, 2, "8 of 10 bytes");
    }
}
