//! How the odds moved: `GET /api/events/{id}/history` (from the database when there is one,
//! over its whole retention; else from the in-memory price history) and `GET /api/moves`
//! (the in-memory history's biggest moves). The in-memory history's reads take its lock, so
//! they run on the blocking pool, as the large reads do.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::events::{large_read, parse_id};
use crate::broker::Broker;
use crate::prices::MAX_MOVES;
use crate::protocol::{HistoryQuery, HttpError, HttpErrorCode, Timestamp};
use crate::reply;

/// Most market rows in one page of a history read from the database, and the default.
const MAX_HISTORY_ROWS: usize = 10_000;

/// Longest `source` or `market` a history read may name (longer ones match nothing).
const MAX_NAME: usize = 256;

/// Longest window of `GET /api/moves`: the history holds about an hour.
const MAX_MOVES_WINDOW: u64 = 3600;

/// `GET /api/events/{id}/history[?from=&to=&source=&market=&limit=]`.
pub async fn history(id: String, broker: Broker, query: Vec<(String, String)>) -> Response {
    let asked = parse_id(&id).and_then(|event_id| Ok((event_id, history_query(&query)?)));
    let (event_id, query) = match asked {
        Ok(asked) => asked,
        Err(error) => return error.into_response(),
    };
    let not_found = move || {
        let message = format!("no price of event {event_id} was recorded");
        HttpError::new(HttpErrorCode::NotFound, message).into_response()
    };
    if let Some(store) = &broker.store {
        return match store.history(event_id, &query).await {
            Ok(Some(history)) => reply::ok(&history),
            Ok(None) => not_found(),
            Err(error) => {
                tracing::warn!(event = "store.read_failed", %error);
                let message = "the price history is in the database, which did not answer";
                HttpError::new(HttpErrorCode::DatabaseUnavailable, message).into_response()
            }
        };
    }
    large_read(broker, move |broker| {
        match broker.prices.event(event_id, &query) {
            Some(history) => reply::ok(&history),
            None => not_found(),
        }
    })
    .await
}

/// The window, filters and page size of a history read.
fn history_query(query: &[(String, String)]) -> Result<HistoryQuery, HttpError> {
    let mut asked = HistoryQuery {
        from: None,
        to: None,
        source: None,
        market: None,
        limit: MAX_HISTORY_ROWS,
    };
    for (key, value) in query {
        let invalid = |what: &str| {
            let message = format!("`{key}={value}`: expected {what}");
            HttpError::new(HttpErrorCode::InvalidQuery, message)
        };
        let time = || Timestamp::parse(value).map_err(|_| invalid("an RFC 3339 time"));
        let name = || match value.len() {
            1..=MAX_NAME => Ok(value.clone()),
            _ => Err(invalid("a name of 1 to 256 bytes")),
        };
        match key.as_str() {
            "from" => asked.from = Some(time()?),
            "to" => asked.to = Some(time()?),
            "source" => asked.source = Some(name()?),
            "market" => asked.market = Some(name()?),
            "limit" => {
                let limit = value.parse().ok();
                let limit = limit.filter(|n| (1..=MAX_HISTORY_ROWS).contains(n));
                asked.limit = limit.ok_or_else(|| invalid("a number from 1 to 10000"))?;
            }
            _ => {}
        }
    }
    if let (Some(from), Some(to)) = (asked.from, asked.to) {
        if from >= to {
            let message = format!("`from` ({from}) must be earlier than `to` ({to})");
            return Err(HttpError::new(HttpErrorCode::InvalidQuery, message));
        }
    }
    Ok(asked)
}

/// `GET /api/moves[?minutes=M][&limit=N]`: the biggest moves of the last M minutes (10; 1 to
/// 60), at most N (20; 1 to 500), on the blocking pool.
pub async fn moves(broker: Broker, query: Vec<(String, String)>) -> Response {
    let number = |name: &str, default: u64, most: u64| -> Result<u64, HttpError> {
        match query.iter().find(|(key, _)| key == name) {
            None => Ok(default),
            Some((_, value)) => match value.parse::<u64>() {
                Ok(n) if (1..=most).contains(&n) => Ok(n),
                _ => Err(HttpError::new(
                    HttpErrorCode::InvalidQuery,
                    format!("`{name}` must be an integer from 1 to {most}"),
                )),
            },
        }
    };
    let asked = number("minutes", 10, MAX_MOVES_WINDOW / 60)
        .and_then(|minutes| Ok((minutes, number("limit", 20, MAX_MOVES as u64)?)));
    let (minutes, limit) = match asked {
        Ok(asked) => asked,
        Err(error) => return error.into_response(),
    };
    let window = std::time::Duration::from_secs(minutes * 60);
    large_read(broker, move |broker| {
        reply::encoded(StatusCode::OK, broker.prices.moves(window, limit as usize))
    })
    .await
}
