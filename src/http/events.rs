//! The cache-first reads: `GET /api/events[?limit=&after=]`, `GET /api/events/{id}/odds`
//! and the bulk read `GET /api/events/odds?ids=`.
//!
//! Every reply is joined from the snapshots' JSON as the cache stored it, and carries an
//! `ETag` (see [`Tag`]): a client that sends it back in `If-None-Match` gets `304 Not
//! Modified` while the odds are the same.
//!
//! The list of every event can be long, so it is copied out of the cache and written on the
//! blocking pool, at most `--max-large-reads` at once: however many clients ask for it, the
//! runtime that accepts connections, handles ingests and runs the dispatcher is never held
//! up by one. The odds reads
//! are at most 500 events of bytes to join, and run in place.

use warp::reply::Response;
use warp::Reply;

use crate::broker::Broker;
use crate::cache::{EventOdds, Tag};
use crate::protocol::{HttpError, HttpErrorCode};
use crate::reply;

/// Most event ids one `GET /api/events/odds` (or `/api/events/fair`) may name.
const MAX_IDS_PER_READ: usize = 500;

/// Most events one page of `GET /api/events?limit=` may hold.
const MAX_PAGE: usize = 10_000;

/// `GET /api/events`: every cached event by id, or one page of them with `?limit=N`
/// (and `&after=ID` for the events after an id).
pub async fn list(
    broker: Broker,
    query: Vec<(String, String)>,
    if_none_match: Option<String>,
) -> Response {
    let (after, limit) = match page(&query) {
        Ok(page) => page,
        Err(error) => return error.into_response(),
    };
    large_read(broker, move |broker| {
        let (events, more) = broker.cache.events_page(after, limit.unwrap_or(usize::MAX));
        let next_after = more.then(|| events.last().map(|e| e.event_id)).flatten();
        let mut tag = Tag::default();
        events.iter().for_each(|event| event.tag(&mut tag));
        tag.add_value(next_after.unwrap_or(u64::MAX));
        reply::validated(&tag.etag(), if_none_match.as_deref(), |out| {
            write_list(out, &events, next_after, |out, event| event.write_json(out))
        })
    })
    .await
}

/// `GET /api/events/{id}/odds`: from the cache, or, for an event it does not hold, from the
/// database (`--database-url`).
pub async fn odds(id: String, broker: Broker, if_none_match: Option<String>) -> Response {
    let event_id = match parse_id(&id) {
        Ok(event_id) => event_id,
        Err(error) => return error.into_response(),
    };
    let odds = match broker.cache.event_odds(event_id) {
        Some(odds) => Some(odds),
        // Not (or no longer) in the cache: the database may have it.
        None => from_store(&broker, &[event_id]).await.pop(),
    };
    let Some(odds) = odds else {
        let message = format!("event {event_id} is not in the cache");
        return HttpError::new(HttpErrorCode::NotFound, message).into_response();
    };
    let mut tag = Tag::default();
    odds.tag(&mut tag);
    reply::validated(&tag.etag(), if_none_match.as_deref(), |out| {
        odds.write_json(out)
    })
}

/// `GET /api/events/odds?ids=1,2,3`: the odds of several events in one read (ids neither
/// the cache nor the database holds are left out). An addition to the contract's reads, so
/// that a client refetching many changed events does not need one request per event.
pub async fn many_odds(
    broker: Broker,
    query: Vec<(String, String)>,
    if_none_match: Option<String>,
) -> Response {
    let ids = match requested_ids(&query) {
        Ok(ids) => ids,
        Err(error) => return error.into_response(),
    };
    let mut events = broker.cache.many_event_odds(&ids);
    if events.len() < ids.len() && broker.store.is_some() {
        let held: std::collections::HashSet<u64> = events.iter().map(|e| e.event_id).collect();
        let missing: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !held.contains(id))
            .collect();
        events.extend(from_store(&broker, &missing).await);
        // By id, as the ids are asked of the cache.
        events.sort_by_key(|event| event.event_id);
    }
    let mut tag = Tag::default();
    events.iter().for_each(|event| event.tag(&mut tag));
    reply::validated(&tag.etag(), if_none_match.as_deref(), |out| {
        write_list(out, &events, None, |out, event| event.write_json(out))
    })
}

/// Events the cache does not hold, from the database if there is one (a database that fails
/// to answer is logged: the read answers what the cache has).
async fn from_store(broker: &Broker, event_ids: &[u64]) -> Vec<EventOdds> {
    let Some(store) = &broker.store else {
        return Vec::new();
    };
    store.events(event_ids).await.unwrap_or_else(|error| {
        tracing::warn!(event = "store.read_failed", %error);
        Vec::new()
    })
}

/// `{"events":[..]}` (with `"next_after"` when a page has one), each item written by `write`.
fn write_list<T>(
    out: &mut Vec<u8>,
    items: &[T],
    next_after: Option<u64>,
    write: impl Fn(&mut Vec<u8>, &T),
) {
    out.extend_from_slice(b"{\"events\":[");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
    if let Some(after) = next_after {
        out.extend_from_slice(b",\"next_after\":");
        out.extend_from_slice(itoa::Buffer::new().format(after).as_bytes());
    }
    out.push(b'}');
}

/// Runs `read` on the blocking pool once one of the large-read slots is free.
pub(super) async fn large_read(
    broker: Broker,
    read: impl FnOnce(&Broker) -> Response + Send + 'static,
) -> Response {
    blocking_read(broker, read)
        .await
        .unwrap_or_else(|error| error)
}

/// What `read` returns, run as [`large_read`] runs it; `Err` is the error reply.
pub(super) async fn blocking_read<T: Send + 'static>(
    broker: Broker,
    read: impl FnOnce(&Broker) -> T + Send + 'static,
) -> Result<T, Response> {
    let slots = broker.slots.large_reads.clone();
    // The semaphore is never closed, so acquiring only waits.
    let Ok(_slot) = slots.acquire_owned().await else {
        let error = HttpError::new(HttpErrorCode::Internal, "the read could not start");
        return Err(error.into_response());
    };
    tokio::task::spawn_blocking(move || read(&broker))
        .await
        .map_err(|error| {
            tracing::error!(event = "http.read_failed", %error);
            HttpError::new(HttpErrorCode::Internal, "the read failed").into_response()
        })
}

/// `?after=ID&limit=N` of `GET /api/events`: both optional.
fn page(query: &[(String, String)]) -> Result<(Option<u64>, Option<usize>), HttpError> {
    let mut page = (None, None);
    for (key, value) in query {
        let invalid = |what: &str| {
            HttpError::new(
                HttpErrorCode::InvalidQuery,
                format!("`{key}={value}`: expected {what}"),
            )
        };
        match key.as_str() {
            "after" => page.0 = Some(value.parse().map_err(|_| invalid("an event id"))?),
            "limit" => {
                let limit = value.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n));
                page.1 = Some(limit.ok_or_else(|| invalid("a number from 1 to 10000"))?);
            }
            _ => {}
        }
    }
    Ok(page)
}

/// The distinct ids of `?ids=`, sorted.
pub(super) fn requested_ids(query: &[(String, String)]) -> Result<Vec<u64>, HttpError> {
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

pub(super) fn parse_id(text: &str) -> Result<u64, HttpError> {
    text.parse().map_err(|_| {
        HttpError::new(
            HttpErrorCode::InvalidEventId,
            format!("`{text}` is not an event id (a non-negative integer)"),
        )
    })
}
