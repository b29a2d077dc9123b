//! What the odds analysis holds: `GET /api/alerts` (the recent alerts), `GET /api/surebets`
//! (the open ones), and `GET /api/events/{id}/fair` and `GET /api/events/fair?ids=` (fair
//! prices, the home bookmaker's edge, opening prices). They take the analysis's locks, so
//! they run on the blocking pool, as the large reads do.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::events::{large_read, parse_id, requested_ids};
use crate::analysis::AlertQuery;
use crate::broker::Broker;
use crate::protocol::{AlertKind, HttpError, HttpErrorCode, Severity};
use crate::reply;

/// Longest window of `GET /api/alerts`, in minutes: a day, as long as alerts are kept.
const MAX_MINUTES: u64 = 1440;

/// Most alerts one `GET /api/alerts` returns.
const MAX_ALERTS: usize = 1000;

/// `GET /api/alerts[?minutes=60][&kind=a,b][&severity=a,b][&limit=100]`.
pub async fn alerts(broker: Broker, query: Vec<(String, String)>) -> Response {
    let query = match alert_query(&query) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    large_read(broker, move |broker| {
        let json = broker.analysis.alerts(&query);
        reply::encoded(StatusCode::OK, json.into_bytes())
    })
    .await
}

fn alert_query(query: &[(String, String)]) -> Result<AlertQuery, HttpError> {
    let mut asked = AlertQuery {
        minutes: 60,
        kinds: Vec::new(),
        severities: Vec::new(),
        limit: 100,
    };
    for (key, value) in query {
        let invalid = |what: String| {
            let message = format!("`{key}={value}`: expected {what}");
            HttpError::new(HttpErrorCode::InvalidQuery, message)
        };
        let number = |most: u64| match value.parse::<u64>() {
            Ok(n) if (1..=most).contains(&n) => Ok(n),
            _ => Err(invalid(format!("an integer from 1 to {most}"))),
        };
        let names = |valid: &[&str]| {
            let list = valid.join(", ");
            value
                .split(',')
                .map(|name| {
                    let name = name.trim();
                    match valid.contains(&name) {
                        true => Ok(name),
                        false => Err(invalid(format!("names among {list}"))),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        match key.as_str() {
            "minutes" => asked.minutes = number(MAX_MINUTES)?,
            "limit" => asked.limit = number(MAX_ALERTS as u64)? as usize,
            "kind" => {
                let kinds = names(&AlertKind::ALL.map(AlertKind::name))?;
                asked.kinds = kinds.into_iter().filter_map(AlertKind::from_name).collect();
            }
            "severity" => {
                let severities = names(&Severity::ALL.map(Severity::name))?;
                let parsed = severities.into_iter().filter_map(Severity::from_name);
                asked.severities = parsed.collect();
            }
            _ => {}
        }
    }
    Ok(asked)
}

/// `GET /api/surebets`: the open surebets, best profit first.
pub async fn surebets(broker: Broker) -> Response {
    large_read(broker, |broker| {
        let surebets = broker.analysis.surebets();
        reply::ok(&serde_json::json!({ "count": surebets.len(), "surebets": surebets }))
    })
    .await
}

/// `GET /api/events/{id}/fair`: per primary market and outcome, the best price, the fair
/// probability and odds, each bookmaker's margin, the home bookmaker's edge, and every
/// bookmaker's price and opening price.
pub async fn fair(id: String, broker: Broker) -> Response {
    let event_id = match parse_id(&id) {
        Ok(event_id) => event_id,
        Err(error) => return error.into_response(),
    };
    large_read(broker, move |broker| match broker.analysis.fair(event_id) {
        Some(markets) => {
            reply::ok(&serde_json::json!({ "event_id": event_id, "markets": markets }))
        }
        None => {
            let message = format!("event {event_id} has no prices of a primary market");
            HttpError::new(HttpErrorCode::NotFound, message).into_response()
        }
    })
    .await
}

/// `GET /api/events/fair?ids=1,2,3`: what `GET /api/events/{id}/fair` says of each of several
/// events, in one read (events without a primary market priced are left out), so that a
/// board can show every row's movement since opening without a request per row.
pub async fn many_fair(broker: Broker, query: Vec<(String, String)>) -> Response {
    let ids = match requested_ids(&query) {
        Ok(ids) => ids,
        Err(error) => return error.into_response(),
    };
    large_read(broker, move |broker| {
        // One event at a time under the analysis's lock, which its thread also takes.
        let events: Vec<_> = ids
            .iter()
            .filter_map(|&event_id| {
                let markets = broker.analysis.fair(event_id)?;
                Some(serde_json::json!({ "event_id": event_id, "markets": markets }))
            })
            .collect();
        reply::ok(&serde_json::json!({ "events": events }))
    })
    .await
}
