//! `GET /api/scrape/stream`: follow the running scrape run, or start one, as Server-Sent
//! Events until it ends.
//!
//! Following needs a token that allows `scrape_progress`; starting a run needs the `scrape`
//! claim too, because a run writes thousands of snapshots and, with a real source, calls the
//! bookmakers. Streams are bounded (`--max-sse-streams`) and so are the runs started here
//! (`--max-scrapes-per-minute`). On shutdown the run stops and reports `failed`, which ends
//! every stream with the reason; a client going away does not stop the run.

use std::time::Instant;

use futures_util::StreamExt;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::sse::Event;
use warp::Reply;

use crate::broker::Broker;
use crate::protocol::{HttpError, HttpErrorCode, Topic};

/// The SSE reply that follows (or starts) a run, or why it cannot.
pub fn follow(
    broker: &Broker,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Response, HttpError> {
    let claims = broker.auth.admit(headers, query)?;
    if !claims.allowed_topics().contains(Topic::ScrapeProgress) {
        return Err(HttpError::new(
            HttpErrorCode::Forbidden,
            "the token does not allow following scrape runs (topic `scrape_progress`)",
        ));
    }
    let slot = broker
        .slots
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            HttpError::new(
                HttpErrorCode::TooManyStreams,
                "as many scrape streams as the broker follows at once are open; retry later",
            )
        })?;
    let steps = match broker.scrape.follow() {
        Some(running) => running,
        None => {
            may_start(broker, claims.scrape)?;
            broker.scrape.join_or_start()
        }
    };
    let events = steps.map(move |progress| {
        let _open = &slot; // the stream holds its slot until it ends
        Event::default().json_data(progress)
    });
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
}

/// Whether this request may start a run: the `scrape` claim, and a start left this minute.
fn may_start(broker: &Broker, allowed: bool) -> Result<(), HttpError> {
    if !allowed {
        return Err(HttpError::new(
            HttpErrorCode::Forbidden,
            "no scrape run is running, and starting one needs a token with `\"scrape\": true`",
        ));
    }
    if !broker.slots.scrape_starts.lock().try_take(Instant::now()) {
        let most = broker.config.max_scrapes_per_minute;
        return Err(HttpError::new(
            HttpErrorCode::TooManyScrapes,
            format!("at most {most} scrape runs may be started per minute; retry later"),
        ));
    }
    Ok(())
}
