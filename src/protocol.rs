//! The wire contract (`shared/PROTOCOL.md`) as Rust types.
//!
//! Everything that crosses a socket is defined here and encoded or decoded by serde, so the
//! rest of the crate never builds JSON by hand. Server messages are encoded once into a
//! [`Frame`], a reference-counted UTF-8 buffer that every receiving connection shares.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

/// One encoded server message: cloning it bumps a reference count, it never copies the text.
pub type Frame = Utf8Bytes;

/// The home bookmaker's source name; every other source is a competitor.
pub const HOME_SOURCE: &str = "betpawa";

/// A pub/sub topic. The declaration order is the sorted order of the names, which is the
/// order the contract wants topic lists in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Which events changed, from which source.
    OddsUpdates,
    /// Progress of scrape runs.
    ScrapeProgress,
}

impl Topic {
    /// Every topic, sorted by name.
    pub const ALL: [Topic; 2] = [Topic::OddsUpdates, Topic::ScrapeProgress];

    /// The topic's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::OddsUpdates => "odds_updates",
            Topic::ScrapeProgress => "scrape_progress",
        }
    }

    /// Parses a wire name; `None` for a name that is not a topic.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Dense index, for per-topic arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of topics; iterates in sorted order. A bitmask, so it is `Copy` and costs a byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicSet(u8);

impl TopicSet {
    /// The set of every topic.
    pub fn all() -> TopicSet {
        Topic::ALL.into_iter().collect()
    }

    /// Whether `topic` is in the set.
    pub fn contains(self, topic: Topic) -> bool {
        self.0 & (1 << topic.index()) != 0
    }

    /// Adds `topic`.
    pub fn insert(&mut self, topic: Topic) {
        self.0 |= 1 << topic.index();
    }

    /// Removes `topic`.
    pub fn remove(&mut self, topic: Topic) {
        self.0 &= !(1 << topic.index());
    }

    /// The topics in sorted order.
    pub fn iter(self) -> impl Iterator<Item = Topic> {
        Topic::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// The topics in both sets.
    pub fn intersection(self, other: TopicSet) -> TopicSet {
        TopicSet(self.0 & other.0)
    }

    /// Number of topics in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Topic> for TopicSet {
    fn from_iter<I: IntoIterator<Item = Topic>>(iter: I) -> Self {
        let mut set = TopicSet::default();
        for topic in iter {
            set.insert(topic);
        }
        set
    }
}

impl Serialize for TopicSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Splits topic names into the known topics and the names that are not topics.
pub fn parse_topics<'a>(names: impl IntoIterator<Item = &'a str>) -> (TopicSet, Vec<String>) {
    let mut known = TopicSet::default();
    let mut unknown = Vec::new();
    for name in names {
        match Topic::from_name(name) {
            Some(topic) => known.insert(topic),
            None => unknown.push(name.to_owned()),
        }
    }
    (known, unknown)
}

/// An instant in UTC, written as RFC 3339 with milliseconds and a `Z` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to the millisecond the wire carries.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        let millis = now.millisecond();
        Timestamp(now.replace_millisecond(millis).unwrap_or(now))
    }

    /// Parses any RFC 3339 time and normalises it to UTC.
    pub fn parse(text: &str) -> Result<Timestamp, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(|t| Timestamp(t.to_offset(UtcOffset::UTC)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self.0.format(&format).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <&str>::deserialize(deserializer)?;
        Timestamp::parse(text)
            .map_err(|e| D::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
    }
}

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
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Always the first message on a connection.
    ConnectionAck {
        /// The connection's id, as logged and counted by the server.
        connection_id: Uuid,
        /// The subscription set, sorted.
        topics: TopicSet,
    },
    /// Reply to a client `ping`.
    Pong,
    /// Reply to `subscribe`: the whole subscription set after the change.
    Subscribed {
        /// The subscription set, sorted.
        topics: TopicSet,
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
    },
    /// A step of a scrape run.
    ScrapeProgress {
        /// The progress object, as the SSE stream carries it too.
        data: &'a ScrapeProgress,
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
        message: &'a str,
    },
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

/// A well-formed message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Asks for a `pong`.
    Ping,
    /// Adds topics (names as sent; unknown ones are reported, known ones applied).
    Subscribe(Vec<String>),
    /// Removes topics (names as sent).
    Unsubscribe(Vec<String>),
}

/// Why a client's text frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// The contract's code.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
}

impl ClientError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
        }
    }
}

/// Decodes one client text frame.
pub fn decode_client(text: &str) -> Result<ClientMessage, ClientError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ClientError::new(ErrorCode::InvalidJson, format!("not JSON: {e}")))?;
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(ClientError::new(
                ErrorCode::UnknownType,
                "expected an object with a string `type`: ping, subscribe or unsubscribe",
            ))
        }
    };
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "subscribe" => topic_names(&value, kind).map(ClientMessage::Subscribe),
        "unsubscribe" => topic_names(&value, kind).map(ClientMessage::Unsubscribe),
        other => Err(ClientError::new(
            ErrorCode::UnknownType,
            format!("unknown type `{other}`: expected ping, subscribe or unsubscribe"),
        )),
    }
}

fn topic_names(value: &Value, kind: &str) -> Result<Vec<String>, ClientError> {
    let invalid = || {
        ClientError::new(
            ErrorCode::InvalidMessage,
            format!("`{kind}` needs `topics`: an array of topic names (strings)"),
        )
    };
    let items = value
        .get("topics")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    items
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
        .collect()
}

/// The message of an `unknown_topic` error for `names`.
pub fn unknown_topics_message(names: &[String]) -> String {
    let valid: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
    format!(
        "unknown topic(s): {}; valid topics: {}",
        names.join(", "),
        valid.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_millis_with_z() {
        let t = Timestamp::parse("2026-11-21T23:03:00.123456+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T22:03:00.123Z");
        let now = Timestamp::now().to_string();
        assert_eq!(now.len(), "2026-11-21T22:03:00.123Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn topic_sets_serialise_sorted() {
        let set: TopicSet = [Topic::ScrapeProgress, Topic::OddsUpdates]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["odds_updates","scrape_progress"]"#
        );
    }

    #[test]
    fn decoding_maps_each_bad_input_to_its_code() {
        let code = |text: &str| decode_client(text).unwrap_err().code;
        assert_eq!(code("nope"), ErrorCode::InvalidJson);
        for text in [
            "{}",
            r#"{"type":42}"#,
            "[]",
            r#""x""#,
            r#"{"type":"dance"}"#,
        ] {
            assert_eq!(code(text), ErrorCode::UnknownType, "{text}");
        }
        for text in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","topics":"odds_updates"}"#,
            r#"{"type":"unsubscribe","topics":[1]}"#,
        ] {
            assert_eq!(code(text), ErrorCode::InvalidMessage, "{text}");
        }
        assert_eq!(
            decode_client(r#"{"type":"subscribe","topics":[]}"#),
            Ok(ClientMessage::Subscribe(vec![]))
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
        });
        let value: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(value["type"], "odds_update");
        assert_eq!(value["data"]["event_ids"], serde_json::json!([101, 102]));
        assert_eq!(value["data"]["count"], 2);
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
