//! The wire contract (`docs/PROTOCOL.md`) as Rust types.
//!
//! Everything that crosses a socket is defined here and encoded or decoded by serde, so the
//! rest of the crate never builds JSON by hand. The one exception is the odds themselves:
//! the cache encodes each snapshot once, when it stores it, and reads and `odds_change`
//! messages join those bytes. Server messages are encoded once into a [`Frame`], a
//! reference-counted UTF-8 buffer that every receiving connection shares.

mod alert;
mod client;
mod http;
mod position;
mod time;
mod topic;

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tungstenite::Utf8Bytes;
use uuid::Uuid;

#[cfg(feature = "server")]
pub use self::alert::{
    rounded, AlertKind, Availability, Detail, Leg, PriceMove, Severity, SurebetState, EPSILON,
};
pub use self::alert::{Alert, Thresholds};
pub use self::client::{decode_client, ClientError, ClientMessage};
pub use self::http::{
    Health, HistoryQuery, HistoryReply, HttpError, HttpErrorCode, IngestReply, PricePoint,
    PriceSeries,
};
pub use self::position::{since_from_query, BadSince, Position, Positions, SinceEntry};
pub use self::time::Timestamp;
pub use self::topic::{parse_topics, Topic, TopicSet};

/// One encoded server message: cloning it bumps a reference count, it never copies the text.
pub type Frame = Utf8Bytes;

/// The home bookmaker's source name; every other source is a competitor.
pub const HOME_SOURCE: &str = "betpawa";

/// The payload of an `odds_update`: distinct event ids that changed, all from one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OddsUpdate<'a> {
    /// Distinct ids, in order of first change.
    pub event_ids: &'a [u64],
    /// The source the changes came from.
    pub source: &'a str,
    /// Always `event_ids.len()`.
    pub count: usize,
}

/// Where a scrape run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrapePhase {
    /// The run began.
    Started,
    /// One platform's scrape began.
    PlatformStarted,
    /// How far one platform's scrape has got: its own counts, at most every 250 ms.
    PlatformProgress,
    /// One platform's scrape ended (successfully or not: see `message`).
    PlatformCompleted,
    /// The run ended and every platform succeeded.
    Completed,
    /// A platform failed (with `platform`), or the run ended with failures (without).
    Failed,
}

/// One step of a scrape run: the SSE `data:` object and the `scrape_progress` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrapeProgress {
    /// Same for every step of one run.
    pub run_id: Uuid,
    /// Which step this is.
    pub phase: ScrapePhase,
    /// The platform the step is about; `None` for run-level steps.
    pub platform: Option<String>,
    /// Events stored so far in this run.
    pub events_scraped: u64,
    /// Events the run expects, as far as it knows yet.
    pub events_total: u64,
    /// A human-readable line.
    pub message: String,
}

impl ScrapePhase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScrapePhase::Started => "started",
            ScrapePhase::PlatformStarted => "platform_started",
            ScrapePhase::PlatformProgress => "platform_progress",
            ScrapePhase::PlatformCompleted => "platform_completed",
            ScrapePhase::Completed => "completed",
            ScrapePhase::Failed => "failed",
        }
    }
}

impl ScrapeProgress {
    /// Whether this is the last step of its run: `completed`, or `failed` for the whole run
    /// (a `failed` that names a platform is followed by the next platform).
    pub fn is_final(&self) -> bool {
        match self.phase {
            ScrapePhase::Completed => true,
            ScrapePhase::Failed => self.platform.is_none(),
            _ => false,
        }
    }
}

/// The `error` codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not JSON.
    InvalidJson,
    /// JSON, but not an object with a known `type`.
    UnknownType,
    /// A known `type` whose fields are wrong.
    InvalidMessage,
    /// A topic name that does not exist.
    UnknownTopic,
    /// A binary frame.
    UnsupportedFrame,
    /// The client sends messages faster than its allowed rate; this one was dropped.
    RateLimited,
    /// The subscription would exceed the topics allowed per connection; nothing changed.
    TooManyTopics,
    /// The connection's token does not allow a topic it asked for.
    Forbidden,
}

/// A message from server to client. Serialised with the `type` tag and a `timestamp`
/// added by [`encode`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Always the first message on a connection.
    ConnectionAck {
        /// The connection's id, as logged and counted by the server.
        connection_id: Uuid,
        /// The subscription set, sorted.
        topics: TopicSet,
        /// Where each subscribed topic starts on this connection (v1.1).
        positions: Positions,
        /// The topics whose `since` was honoured (v1.1).
        recovered: TopicSet,
    },
    /// Reply to a client `ping`.
    Pong,
    /// Reply to `subscribe`: the whole subscription set after the change.
    Subscribed {
        /// The subscription set, sorted.
        topics: TopicSet,
        /// Where each topic the request named stands on this connection (v1.1).
        positions: Positions,
        /// The named topics whose `since` was honoured (v1.1).
        recovered: TopicSet,
    },
    /// Reply to `unsubscribe`: the whole subscription set after the change.
    Unsubscribed {
        /// The subscription set, sorted.
        topics: TopicSet,
    },
    /// Events changed in the cache.
    OddsUpdate {
        /// Which events, from which source.
        data: OddsUpdate<'a>,
        /// Its place in the `odds_updates` log (v1.1).
        offset: u64,
    },
    /// A step of a scrape run.
    ScrapeProgress {
        /// The progress object, as the SSE stream carries it too.
        data: &'a ScrapeProgress,
        /// Its place in the `scrape_progress` log (v1.1).
        offset: u64,
    },
    /// Something the odds analysis raised (*extension*).
    OddsAlert {
        /// The alert.
        data: &'a Alert,
        /// Its place in the `alerts` log.
        offset: u64,
    },
    /// The connection fell behind on `topic` and `missed` messages were dropped for it.
    Resync {
        /// The topic the messages were dropped from.
        topic: Topic,
        /// How many were dropped.
        missed: u64,
    },
    /// Something the client sent was wrong; the connection stays open.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable reason.
        message: Cow<'a, str>,
    },
}

impl ServerMessage<'static> {
    /// An `error` message with `code` and a reason for people.
    pub fn error(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> ServerMessage<'static> {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct Stamped<'a> {
    #[serde(flatten)]
    message: &'a ServerMessage<'a>,
    timestamp: Timestamp,
}

/// Encodes a server message with the current time into a shareable frame.
pub fn encode(message: &ServerMessage<'_>) -> Frame {
    let stamped = Stamped {
        message,
        timestamp: Timestamp::now(),
    };
    // Serialising these types cannot fail: every map key is a string and no value is a float
    // NaN, so an error here is a bug in this module.
    let text = serde_json::to_string(&stamped).expect("server messages always serialise");
    Frame::from(text)
}

/// Encodes an `odds_change` (*extension*) at `offset` of the `odds_changes` log:
/// `{"type":"odds_change","data":{"source":..,"snapshots":[..],"count":N},"offset":..,"timestamp":..}`.
/// `snapshots` are the changed snapshots' JSON as the cache stored them: joined, not encoded
/// again.
pub fn encode_odds_change(source: &str, snapshots: &[Bytes], offset: u64) -> Frame {
    let size: usize = snapshots.iter().map(|s| s.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 160);
    out.extend_from_slice(b"{\"type\":\"odds_change\",\"data\":{\"source\":");
    // A configured source name: a string always serialises.
    let _ = serde_json::to_writer(&mut out, source);
    out.extend_from_slice(b",\"snapshots\":[");
    for (index, snapshot) in snapshots.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(snapshot);
    }
    out.extend_from_slice(b"],\"count\":");
    out.extend_from_slice(itoa::Buffer::new().format(snapshots.len()).as_bytes());
    out.extend_from_slice(b"},\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(Timestamp::now().to_string().as_bytes());
    out.extend_from_slice(b"\"}");
    // Every piece is serde_json output, so the text is UTF-8.
    let text = String::from_utf8(out)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
    Frame::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn odds_change_joins_the_stored_snapshots() {
        let snapshots = [
            Bytes::from_static(br#"{"snapshot_id":1}"#),
            Bytes::from_static(br#"{"snapshot_id":2}"#),
        ];
        let frame = encode_odds_change("bet9ja", &snapshots, 42);
        let (head, stamp) = frame.as_str().split_at(frame.len() - 39);
        assert_eq!(
            head,
            r#"{"type":"odds_change","data":{"source":"bet9ja","snapshots":[{"snapshot_id":1},{"snapshot_id":2}],"count":2},"offset":42,"#
        );
        assert!(
            stamp.starts_with(r#""timestamp":""#) && stamp.ends_with(r#"Z"}"#),
            "{stamp}"
        );
    }

    #[test]
    fn encode_adds_type_and_timestamp() {
        let frame = encode(&ServerMessage::OddsUpdate {
            data: OddsUpdate {
                event_ids: &[101, 102],
                source: "betpawa",
                count: 2,
            },
            offset: 7,
        });
        let value: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(value["type"], "odds_update");
        assert_eq!(value["data"]["event_ids"], serde_json::json!([101, 102]));
        assert_eq!(value["data"]["count"], 2);
        assert_eq!(value["offset"], 7);
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
