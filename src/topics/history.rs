//! A topic's log: the offset of its latest message, and a bounded history of its recent
//! messages (encoded, shared with every connection), from which a client that reconnects,
//! or a connection that fell behind its channel, gets exactly what it missed.
//!
//! A message takes an offset within the log's offsets of the changes it covers, so offsets
//! may skip: each entry also records the offset before it (`prev`), which is how a gap is
//! told from a skip. (`alerts`, whose messages are numbered one by one, has none.) The
//! history keeps the last `size` offsets' worth of entries, none older than `ttl`, and at
//! most `bytes` of frames; past any bound the oldest entries go.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::protocol::{Frame, ScrapeProgress};

/// How much history a topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most offsets kept (`--history-size`).
    pub size: usize,
    /// Oldest entry kept (`--history-ttl`).
    pub ttl: Duration,
    /// Most frame bytes kept (`--history-bytes`).
    pub bytes: usize,
    /// Most bytes of the topic's messages a subscriber may be behind; past it, it gets
    /// `resync` and continues from the latest (`--max-lag-bytes`).
    pub lag_bytes: u64,
}

impl HistoryLimits {
    /// What the flags say.
    pub fn from_config(config: &Config) -> HistoryLimits {
        HistoryLimits {
            size: config.history_size,
            ttl: config.history_ttl,
            bytes: config.history_bytes,
            lag_bytes: config.max_lag_bytes,
        }
    }
}

/// One published message, as the topic's channel carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Its offset in the topic's log.
    pub offset: u64,
    /// The offset of the topic's message before it: a reader that was given `prev` has
    /// missed nothing. (`offset - 1` on `alerts`.)
    pub prev: u64,
    /// The encoded message, `offset` included.
    pub frame: Frame,
    /// Bytes of the topic's messages published up to and including this one: how far
    /// behind a reader of it is, is the topic's total less this.
    pub end: u64,
    /// On `scrape_progress`, the step the message carries, for the scrape stream.
    pub step: Option<Arc<ScrapeProgress>>,
}

impl Published {
    /// What a topic's channel carries when its log starts over (a new epoch, or a node that
    /// fell behind the shared log and reloaded): its readers get `resync` and continue after
    /// `offset`. Never kept in the history.
    pub fn restart(offset: u64) -> Published {
        Published {
            offset,
            prev: offset,
            frame: Frame::from(""),
            end: 0,
            step: None,
        }
    }

    /// Whether this is [`Published::restart`].
    pub fn is_restart(&self) -> bool {
        self.frame.is_empty()
    }
}

/// One topic's log.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    /// Offset of the latest message; 0 before the first.
    top: u64,
    entries: VecDeque<(Instant, Published)>,
    bytes: usize,
    /// Bytes of every message appended since the start.
    total: u64,
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
            total: 0,
        }
    }

    /// Bytes of every message appended since the start.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The latest offset (0 before the first message).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Appends the message `encode` makes for the next offset and returns it.
    pub fn append(&mut self, now: Instant, encode: impl FnOnce(u64) -> Frame) -> Published {
        let next = self.top + 1;
        match self.append_at(now, next, encode) {
            Some(published) => published,
            None => unreachable!("the next offset is always past the top"),
        }
    }

    /// Appends the message `encode` makes for `offset`, a shared log's offset, and returns
    /// it; `None` (nothing appended) if `offset` is not past the latest one.
    pub fn append_at(
        &mut self,
        now: Instant,
        offset: u64,
        encode: impl FnOnce(u64) -> Frame,
    ) -> Option<Published> {
        self.append_step_at(now, offset, encode, None)
    }

    /// [`History::append_at`] for a message that carries a scrape step.
    pub fn append_step_at(
        &mut self,
        now: Instant,
        offset: u64,
        encode: impl FnOnce(u64) -> Frame,
        step: Option<Arc<ScrapeProgress>>,
    ) -> Option<Published> {
        if offset <= self.top {
            return None;
        }
        let frame = encode(offset);
        self.total += frame.len() as u64;
        let published = Published {
            offset,
            prev: self.top,
            frame,
            end: self.total,
            step,
        };
        self.top = offset;
        self.bytes += published.frame.len();
        self.entries.push_back((now, published.clone()));
        self.trim(now);
        Some(published)
    }

    /// Forgets every entry and carries on from `top` (a new epoch starts at 0).
    pub fn restart(&mut self, top: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.top = top;
    }

    /// Every message after `offset`, if the history still holds all of them.
    pub fn since(&mut self, offset: u64, now: Instant) -> Since {
        self.trim(now);
        if offset > self.top {
            return Since::Ahead;
        }
        // Everything after `offset` is held if the first entry held follows it directly.
        let first_prev = self.entries.front().map_or(self.top, |(_, p)| p.prev);
        if offset < first_prev {
            return Since::TooOld {
                missed: first_prev - offset,
            };
        }
        Since::Recovered(self.held_after(offset))
    }

    /// Whatever the history holds after `offset` (all of it, or only its later part if it
    /// has moved on), in order.
    pub fn after(&mut self, offset: u64, now: Instant) -> Vec<Published> {
        self.trim(now);
        self.held_after(offset)
    }

    /// The messages held after `offset`, found by their offsets' order, not by a scan: a
    /// recovery runs under the topic's lock, which every publication needs.
    fn held_after(&self, offset: u64) -> Vec<Published> {
        let first = self.entries.partition_point(|(_, p)| p.offset <= offset);
        let held = self.entries.range(first..).map(|(_, p)| p);
        held.cloned().collect()
    }

    /// Where the open scrape run's steps begin, as far as the history holds them: the offset
    /// before the first of them, when the latest step is not a run's last.
    pub fn open_run_start(&mut self, now: Instant) -> Option<u64> {
        self.trim(now);
        let latest = self.entries.back()?.1.step.clone()?;
        if latest.is_final() {
            return None;
        }
        let of_run = |p: &Published| p.step.as_ref().is_some_and(|s| s.run_id == latest.run_id);
        let held = self.entries.iter().rev().map(|(_, p)| p);
        held.take_while(|p| of_run(p))
            .last()
            .map(|first| first.prev)
    }

    /// The message at `offset`, if the history still holds it.
    pub fn get(&self, offset: u64) -> Option<&Published> {
        let at = self.entries.partition_point(|(_, p)| p.offset < offset);
        let (_, published) = self.entries.get(at)?;
        (published.offset == offset).then_some(published)
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
            let over = published.offset.saturating_add(limits.size as u64) <= self.top
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
            lag_bytes: 1 << 20,
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
    fn shared_log_offsets_may_skip_and_still_replay_exactly() {
        let now = Instant::now();
        let mut log = history(100);
        for offset in [3, 7, 8, 20] {
            log.append_at(now, offset, |o| Frame::from(format!("m{o}")));
        }
        assert!(log.append_at(now, 8, |_| Frame::from("late")).is_none());
        assert_eq!(log.get(7).map(|p| p.prev), Some(3));
        assert_eq!(log.get(9), None);
        assert_eq!(offsets(log.since(7, now)), [8, 20]);
        assert_eq!(offsets(log.since(5, now)), [7, 8, 20], "inside a skip");
        assert_eq!(log.since(21, now), Since::Ahead);
        assert_eq!(offsets(log.since(0, now)), [3, 7, 8, 20]);
        log.restart(0);
        assert_eq!(offsets(log.since(0, now)), Vec::<u64>::new());

        // `size` counts offsets: with 10, only those above 20 - 10 stay.
        let mut small = history(10);
        for offset in [3, 7, 8, 20] {
            small.append_at(now, offset, |_| Frame::from("x"));
        }
        assert_eq!(offsets(small.since(8, now)), [20]);
        assert_eq!(small.since(7, now), Since::TooOld { missed: 1 });
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
            lag_bytes: 1 << 20,
        });
        for _ in 0..4 {
            small.append(start, |_| Frame::from("abcd"));
        }
        assert_eq!(small.extent(start).0, 2, "8 of 10 bytes");
    }
}
