//! The HTTP side of the contract: error codes, the error body and the reply bodies, so that
//! no route builds JSON by hand.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::Timestamp;

/// Every `code` an HTTP error reply can carry; each has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpErrorCode {
    /// An ingest body that is not JSON.
    InvalidJson,
    /// An ingest body of the wrong shape, or one that could not be read.
    InvalidBody,
    /// An ingest `source` that is not configured.
    UnknownSource,
    /// More snapshots in one ingest than allowed.
    TooManySnapshots,
    /// A snapshot whose markets are not usable prices.
    InvalidSnapshot,
    /// A body over the size limit (413).
    PayloadTooLarge,
    /// An event id that is not a non-negative integer.
    InvalidEventId,
    /// More ids in one bulk read than allowed.
    TooManyIds,
    /// A WebSocket request for more topics than a connection may hold.
    TooManyTopics,
    /// A query string that cannot be decoded.
    InvalidQuery,
    /// A header a route needs that cannot be read.
    InvalidHeader,
    /// No valid token where one is required (401).
    Unauthorized,
    /// A valid request the caller is not allowed to make (403).
    Forbidden,
    /// A browser request from a page on a site that is not allowed (403).
    ForbiddenOrigin,
    /// No such route or no such event (404).
    NotFound,
    /// A known route with another method (405).
    MethodNotAllowed,
    /// A plain request to the WebSocket endpoint (426).
    UpgradeRequired,
    /// The WebSocket connection limit is reached (503).
    TooManyConnections,
    /// As many ingests as `--max-ingests` are being handled (503).
    TooManyIngests,
    /// As many scrape streams as `--max-sse-streams` are open (503).
    TooManyStreams,
    /// `--max-scrapes-per-minute` runs were started in the last minute (429).
    TooManyScrapes,
    /// A cluster member cannot reach Redis in time: nothing was applied (503).
    BackplaneUnavailable,
    /// A cluster member sent a write to Redis and gave up waiting for the answer: it may or
    /// may not be applied; a retry with the same `Idempotency-Key` is safe (503).
    OutcomeUnknown,
    /// `?wait=persisted` on a broker without a database (400).
    NoDatabase,
    /// `?wait=persisted` and the odds were not committed within `--persist-timeout` (503).
    PersistTimeout,
    /// A read that only the database can answer, and it did not answer in time (503).
    DatabaseUnavailable,
    /// The request's headers or body took longer than `--request-timeout` (408).
    RequestTimeout,
    /// A bug (500).
    Internal,
}

impl HttpErrorCode {
    /// The HTTP status this code is always sent with.
    pub fn status(self) -> StatusCode {
        use HttpErrorCode::*;
        match self {
            InvalidJson | InvalidBody | UnknownSource | TooManySnapshots | InvalidSnapshot
            | InvalidEventId | TooManyIds | TooManyTopics | InvalidQuery | InvalidHeader
            | NoDatabase => StatusCode::BAD_REQUEST,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden | ForbiddenOrigin => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            TooManyConnections | TooManyIngests | TooManyStreams | BackplaneUnavailable
            | OutcomeUnknown | PersistTimeout | DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            TooManyScrapes => StatusCode::TOO_MANY_REQUESTS,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The wire name, also used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        use HttpErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            InvalidBody => "invalid_body",
            UnknownSource => "unknown_source",
            TooManySnapshots => "too_many_snapshots",
            InvalidSnapshot => "invalid_snapshot",
            PayloadTooLarge => "payload_too_large",
            InvalidEventId => "invalid_event_id",
            TooManyIds => "too_many_ids",
            TooManyTopics => "too_many_topics",
            InvalidQuery => "invalid_query",
            InvalidHeader => "invalid_header",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            ForbiddenOrigin => "forbidden_origin",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            UpgradeRequired => "upgrade_required",
            TooManyConnections => "too_many_connections",
            TooManyIngests => "too_many_ingests",
            TooManyStreams => "too_many_streams",
            TooManyScrapes => "too_many_scrapes",
            BackplaneUnavailable => "backplane_unavailable",
            OutcomeUnknown => "outcome_unknown",
            NoDatabase => "no_database",
            PersistTimeout => "persist_timeout",
            DatabaseUnavailable => "database_unavailable",
            RequestTimeout => "request_timeout",
            Internal => "internal",
        }
    }
}

impl Serialize for HttpErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A refused request: sent as `{"error":{"code":..,"message":..}}` with the code's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// For programs.
    pub code: HttpErrorCode,
    /// For people.
    pub message: String,
}

impl HttpError {
    /// An error with `code` and a message for people.
    pub fn new(code: HttpErrorCode, message: impl Into<String>) -> HttpError {
        HttpError {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status of the reply.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for HttpError {}

impl Serialize for HttpError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Detail<'a> {
            code: HttpErrorCode,
            message: &'a str,
        }
        let mut body = serializer.serialize_struct("HttpError", 1)?;
        body.serialize_field(
            "error",
            &Detail {
                code: self.code,
                message: &self.message,
            },
        )?;
        body.end()
    }
}

/// The reply to an accepted `POST /api/odds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestReply {
    /// Snapshots stored (changed or refreshed).
    pub accepted: usize,
    /// Distinct events notified as changed.
    pub changed: usize,
    /// Snapshots older than the one stored for their event and source: not applied.
    /// `accepted + stale` is the number of snapshots sent.
    pub stale: usize,
}

/// What `GET /api/events/{id}/history` asks for: the prices captured in `[from, to)`, of one
/// source and one market if named, at most `limit` market rows per page (read from a
/// database; the in-memory history answers whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The earliest capture time asked for.
    pub from: Option<Timestamp>,
    /// The capture time the window ends before.
    pub to: Option<Timestamp>,
    /// Only this source's series.
    pub source: Option<String>,
    /// Only this market's series.
    pub market: Option<String>,
    /// Most market rows in one page.
    pub limit: usize,
}

impl HistoryQuery {
    /// Whether a price captured at `at` (Unix ms) is in the window.
    pub fn holds(&self, at: i64) -> bool {
        self.from.is_none_or(|from| at >= from.unix_millis())
            && self.to.is_none_or(|to| at < to.unix_millis())
    }

    /// Whether a series of `source` and `market` is asked for.
    pub fn wants(&self, source: &str, market: &str) -> bool {
        self.source.as_deref().is_none_or(|s| s == source)
            && self.market.as_deref().is_none_or(|m| m == market)
    }
}

/// The reply of `GET /api/events/{id}/history`: each outcome's prices, per source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryReply {
    /// The event.
    pub event_id: u64,
    /// By source, market, line and outcome.
    pub history: Vec<PriceSeries>,
    /// Where the next page starts (ask again with `from` set to it), when this one is not
    /// the last of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_from: Option<Timestamp>,
}

/// One outcome's prices from one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceSeries {
    /// Where the prices come from.
    pub source: Arc<str>,
    /// The market.
    pub market_id: Arc<str>,
    /// The market's line, if it has one.
    pub line: Option<f64>,
    /// The outcome's name.
    pub outcome: Arc<str>,
    /// The first price seen of the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opening: Option<PricePoint>,
    /// Oldest first, each a price that differs from the one before.
    pub points: Vec<PricePoint>,
}

/// A price, at the `captured_at` of the snapshot that brought it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PricePoint {
    /// When the price was captured.
    pub at: Timestamp,
    /// The decimal price.
    pub odds: f64,
}

/// The reply of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` (503) when a cluster member cannot use Redis.
    pub status: &'static str,
    /// Why it is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `--database-url`: `ok`, or `degraded` while writes to the database fail (the
    /// node still serves: the cache has the odds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_serialise_as_the_contract_says() {
        let error = HttpError::new(HttpErrorCode::NotFound, "event 9 is not in the cache");
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":{"code":"not_found","message":"event 9 is not in the cache"}}"#
        );
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
    }
}
