//! The cache-first reads: `GET /api/events`, `GET /api/events/{id}/odds` and the bulk read
//! `GET /api/events/odds?ids=`.

use warp::reply::Response;
use warp::Reply;

use crate::broker::Broker;
use crate::protocol::{Events, HttpError, HttpErrorCode};
use crate::reply;

/// Most event ids one `GET /api/events/odds` may name.
const MAX_IDS_PER_READ: usize = 500;

/// `GET /api/events`: every cached event, by id.
pub fn list(broker: &Broker) -> Response {
    reply::ok(&Events {
        events: broker.cache.events(),
    })
}

/// `GET /api/events/{id}/odds`.
pub fn odds(broker: &Broker, id: &str) -> Response {
    let read = parse_id(id).and_then(|event_id| {
        broker.cache.event_odds(event_id).ok_or_else(|| {
            HttpError::new(
                HttpErrorCode::NotFound,
                format!("event {event_id} is not in the cache"),
            )
        })
    });
    match read {
        Ok(odds) => reply::ok(&odds),
        Err(error) => error.into_response(),
    }
}

/// `GET /api/events/odds?ids=1,2,3`: the odds of several events in one read (ids the cache
/// does not hold are left out). An addition to the contract's reads, so that a client
/// refetching many changed events does not need one request per event.
pub fn many_odds(broker: &Broker, query: &[(String, String)]) -> Response {
    match requested_ids(query) {
        Ok(ids) => reply::ok(&Events {
            events: ids
                .into_iter()
                .filter_map(|id| broker.cache.event_odds(id))
                .collect(),
        }),
        Err(error) => error.into_response(),
    }
}

/// The distinct ids of `?ids=`, sorted.
fn requested_ids(query: &[(String, String)]) -> Result<Vec<u64>, HttpError> {
    let mut ids = query
        .iter()
        .filter(|(key, _)| key == "ids")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(parse_id)
        .collect::<Result<Vec<u64>, HttpError>>()?;
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > MAX_IDS_PER_READ {
        return Err(HttpError::new(
            HttpErrorCode::TooManyIds,
            format!(
                "{} distinct ids in one read; the limit is {MAX_IDS_PER_READ}",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

fn parse_id(text: &str) -> Result<u64, HttpError> {
    text.parse().map_err(|_| {
        HttpError::new(
            HttpErrorCode::InvalidEventId,
            format!("`{text}` is not an event id (a non-negative integer)"),
        )
    })
}
