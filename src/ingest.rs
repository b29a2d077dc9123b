//! Decoding and checking the body of `POST /api/odds`, apart from HTTP so that the fuzz
//! target (`fuzz/fuzz_targets/ingest_body.rs`) runs exactly what the route runs.

use serde::Deserialize;

use std::sync::Arc;

use crate::cache::{Details, EventDetails, Market, Snapshot};
use crate::config::Config;
use crate::protocol::{HttpError, HttpErrorCode, Timestamp};

/// The body of `POST /api/odds`. Unknown fields are ignored, so clients may send more.
#[derive(Debug, Deserialize)]
struct IngestRequest {
    source: String,
    snapshots: Vec<IngestSnapshot>,
}

#[derive(Debug, Deserialize)]
struct IngestSnapshot {
    event_id: u64,
    #[serde(default)]
    bookmaker_id: Option<i64>,
    /// Checked here rather than by serde, so that a time the server cannot write back is
    /// `invalid_snapshot`, like every other bad value in a snapshot.
    #[serde(default)]
    captured_at: Option<String>,
    markets: Vec<Market>,
    /// Read as any JSON and checked here, so that bad details are `invalid_snapshot`.
    #[serde(default)]
    event: Option<serde_json::Value>,
}

/// The largest event id a JavaScript client (the board, any browser) reads exactly:
/// 2^53 - 1. Larger ids would be silently rounded, and two events would share a row.
pub const MAX_EVENT_ID: u64 = (1 << 53) - 1;

/// Most markets in one snapshot: a bookmaker lists a few hundred per match.
pub const MAX_MARKETS_PER_SNAPSHOT: usize = 1_000;

/// Most outcomes in one market: a correct-score market has about 30.
pub const MAX_OUTCOMES_PER_MARKET: usize = 100;

/// Longest name, in characters: a market's id and name, an outcome's name, and an event's
/// `name` and `competition`.
pub const MAX_NAME_CHARS: usize = 200;

/// A whole request that passed every check, ready for [`crate::OddsCache::put_batch`].
#[derive(Debug)]
pub struct IngestBatch {
    /// A configured source.
    pub source: String,
    /// Event id and snapshot, in request order; at most `max_snapshots_per_request`.
    pub snapshots: Vec<(u64, Snapshot)>,
    /// Snapshots whose `captured_at` was more than `--max-clock-skew` ahead of `now`, and
    /// were taken as captured `now`.
    pub clamped: usize,
}

/// Checks a whole ingest request before any of it touches the cache. Snapshots without
/// `captured_at`, or with one more than `--max-clock-skew` ahead of `now`, get `now`. A
/// refusal is a 400 error: nothing of the request may be applied.
pub fn decode(config: &Config, body: &[u8], now: Timestamp) -> Result<IngestBatch, HttpError> {
    let request: IngestRequest = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() {
            HttpErrorCode::InvalidBody
        } else {
            HttpErrorCode::InvalidJson
        };
        HttpError::new(code, format!("the body is not a valid ingest request: {e}"))
    })?;
    if !config.is_known_source(&request.source) {
        return Err(HttpError::new(
            HttpErrorCode::UnknownSource,
            format!(
                "unknown source `{}`: expected one of {}",
                request.source,
                config.sources().join(", ")
            ),
        ));
    }
    let limit = config.max_snapshots_per_request;
    if request.snapshots.len() > limit {
        return Err(HttpError::new(
            HttpErrorCode::TooManySnapshots,
            format!(
                "{} snapshots in one request; the limit is {limit}",
                request.snapshots.len()
            ),
        ));
    }
    let latest = now.plus(config.max_clock_skew);
    let mut clamped = 0;
    let mut snapshots = Vec::with_capacity(request.snapshots.len());
    for (index, snapshot) in request.snapshots.into_iter().enumerate() {
        let event_id = snapshot.event_id;
        let invalid = |reason: String| {
            HttpError::new(
                HttpErrorCode::InvalidSnapshot,
                format!("snapshots[{index}] (event {event_id}): {reason}"),
            )
        };
        if event_id > MAX_EVENT_ID {
            return Err(invalid(format!(
                "event ids go up to {MAX_EVENT_ID} (2^53 - 1), what JavaScript reads exactly"
            )));
        }
        check_markets(&snapshot.markets).map_err(invalid)?;
        let event = match &snapshot.event {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(Arc::new(Details::new(
                &check_details(value).map_err(invalid)?,
            ))),
        };
        let captured_at = match snapshot.captured_at {
            Some(text) => Timestamp::parse(&text).map_err(invalid)?,
            None => now,
        };
        let captured_at = if captured_at > latest {
            clamped += 1;
            now
        } else {
            captured_at
        };
        snapshots.push((
            event_id,
            Snapshot {
                bookmaker_id: snapshot.bookmaker_id,
                captured_at,
                markets: snapshot.markets,
                event,
            },
        ));
    }
    Ok(IngestBatch {
        source: request.source,
        snapshots,
        clamped,
    })
}

/// Checks a name: `least` to [`MAX_NAME_CHARS`] characters, none of them a control character.
fn check_name(what: &str, text: &str, least: usize) -> Result<(), String> {
    let length = text.chars().count();
    if length < least || length > MAX_NAME_CHARS {
        return Err(format!(
            "{what} must have {least} to {MAX_NAME_CHARS} characters"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{what} has a control character"));
    }
    Ok(())
}

/// Event details are an object of optional `name`, `competition` (names, see
/// [`MAX_NAME_CHARS`]) and `kickoff` (RFC 3339); other fields are ignored, as everywhere in
/// a request.
pub fn check_details(value: &serde_json::Value) -> Result<EventDetails, String> {
    let object = value
        .as_object()
        .ok_or("`event` must be an object of `name`, `competition` and `kickoff`")?;
    let text = |field: &str| -> Result<Option<String>, String> {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => {
                check_name(&format!("`event.{field}`"), text, 1)?;
                Ok(Some(text.clone()))
            }
            Some(_) => Err(format!("`event.{field}` must be a string")),
        }
    };
    let kickoff = match text("kickoff")? {
        Some(time) => Some(Timestamp::parse(&time).map_err(|e| format!("`event.kickoff`: {e}"))?),
        None => None,
    };
    Ok(EventDetails {
        name: text("name")?,
        competition: text("competition")?,
        kickoff,
    })
}

/// Odds must be usable prices: finite decimal odds of at least 1.0, under named outcomes,
/// and a snapshot is bounded: at most [`MAX_MARKETS_PER_SNAPSHOT`] markets of at most
/// [`MAX_OUTCOMES_PER_MARKET`] outcomes, every name within [`MAX_NAME_CHARS`].
pub fn check_markets(markets: &[Market]) -> Result<(), String> {
    if markets.len() > MAX_MARKETS_PER_SNAPSHOT {
        return Err(format!(
            "{} markets; a snapshot has at most {MAX_MARKETS_PER_SNAPSHOT}",
            markets.len()
        ));
    }
    for (index, market) in markets.iter().enumerate() {
        check_name(&format!("markets[{index}].market_id"), &market.market_id, 1)?;
        check_name(&format!("markets[{index}].name"), &market.name, 0)?;
        if market.outcomes.len() > MAX_OUTCOMES_PER_MARKET {
            return Err(format!(
                "market `{}` has {} outcomes; a market has at most {MAX_OUTCOMES_PER_MARKET}",
                market.market_id,
                market.outcomes.len()
            ));
        }
        if market.line.is_some_and(|line| !line.is_finite()) {
            return Err(format!(
                "market `{}` has a non-finite line",
                market.market_id
            ));
        }
        for (at, outcome) in market.outcomes.iter().enumerate() {
            let what = format!("market `{}` outcome {at}'s name", market.market_id);
            check_name(&what, &outcome.name, 1)?;
            if !(outcome.odds.is_finite() && outcome.odds >= 1.0) {
                return Err(format!(
                    "market `{}` outcome `{}` has odds {}; decimal odds are at least 1.0",
                    market.market_id, outcome.name, outcome.odds
                ));
            }
        }
    }
    Ok(())
}
