//! What the odds analysis holds: `GET /api/alerts` (the recent alerts, and with a database
//! the older ones), `GET /api/surebets`
//! (the open ones), and `GET /api/events/{id}/fair` and `GET /api/events/fair?ids=` (fair
//! prices, the home bookmaker's edge, opening prices). They take the analysis's locks, so
//! they run on the blocking pool, as the large reads do.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::events::{blocking_read, large_read, parse_id, requested_ids};
use crate::analysis::AlertQuery;
use crate::broker::Broker;
use crate::protocol::{AlertKind, HttpError, HttpErrorCode, Severity, Timestamp};
use crate::reply;

/// Longest window of `GET /api/alerts` without a database, in minutes: a day, as long as a
/// node keeps alerts in memory. With one, the retention's days.
const MAX_MINUTES: u64 = 1440;

/// Most alerts one `GET /api/alerts` returns.
const MAX_ALERTS: usize = 1000;

/// `GET /api/alerts[?minutes=60][&kind=a,b][&severity=a,b][&limit=100]`: from the node's
/// memory, and with a database, the older part of the window from it.
pub async fn alerts(broker: Broker, query: Vec<(String, String)>) -> Response {
    let days = broker.store.as_ref().map_or(1, |_| broker.config.retention);
    let query = match alert_query(&query, u64::from(days) * MAX_MINUTES) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    let asked = query.clone();
    let read = blocking_read(broker.clone(), move |broker| broker.analysis.alerts(&asked));
    let (recent, complete_from) = match read.await {
        Ok(read) => read,
        Err(error) => return error,
    };
    let rest = query.limit - recent.len();
    let older = match &broker.store {
        Some(store) if rest > 0 && query.since < complete_from => {
            match store.alerts(&query, complete_from, rest).await {
                Ok(older) => older,
                Err(error) => {
                    tracing::warn!(event = "store.read_failed", %error);
                    let message = "older alerts are in the database, which did not answer";
                    let error = HttpError::new(HttpErrorCode::DatabaseUnavailable, message);
                    return error.into_response();
                }
            }
        }
        _ => Vec::new(),
    };
    let recent = recent.iter().map(|json| &**json);
    let alerts: Vec<&str> = recent.chain(older.iter().map(String::as_str)).collect();
    let json = format!(
        "{{\"alerts\":[{}],\"count\":{}}}",
        alerts.join(","),
        alerts.len()
    );
    reply::encoded(StatusCode::OK, json.into_bytes())
}

fn alert_query(query: &[(String, String)], most_minutes: u64) -> Result<AlertQuery, HttpError> {
    let mut minutes = 60;
    let mut asked = AlertQuery {
        since: 0,
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
            "minutes" => minutes = number(most_minutes)?,
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
    asked.since = Timestamp::now().unix_millis() - (minutes * 60_000) as i64;
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
