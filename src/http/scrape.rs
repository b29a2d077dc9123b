//! `GET /api/scrape/stream`: follow the running scrape run, or start one, as Server-Sent
//! Events until it ends.
//!
//! A stream is read from the `scrape_progress` topic, so every event carries the step's
//! offset there as its SSE `id`. A stream that reconnects with `Last-Event-ID` (as
//! EventSource does by itself) resumes after that step; one whose last step ended its run
//! gets 204, which tells EventSource to stop reconnecting, so no new run starts.
//!
//! Following needs a token that allows `scrape_progress`; starting a run needs the `scrape`
//! claim too, because a run writes thousands of snapshots and, with a real source, calls the
//! bookmakers. Streams are bounded (`--max-sse-streams`) and so are the runs started here
//! (`--max-scrapes-per-minute`). On shutdown the run stops and reports `failed`, which ends
//! every stream with the reason; a client going away does not stop the run.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{stream, Stream, StreamExt};
use sync_wrapper::SyncStream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::sse::Event;
use warp::Reply;

use crate::broker::Broker;
use crate::protocol::{HttpError, HttpErrorCode, ScrapeProgress, Topic};

/// The SSE reply that follows (or starts) a run, 204 when a resumed run is over, or why it
/// cannot.
pub async fn stream(
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
    let resumed = last_event_id(headers).and_then(|offset| resume_point(broker, offset));
    let (run, after) = match resumed {
        Some((step, _)) if step.is_final() => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some((step, offset)) => (step.run_id, offset),
        None => {
            let run = match open_run(broker) {
                Some(run) => run,
                None => {
                    may_start(broker, claims.scrape)?;
                    broker.scrape.start().await?
                }
            };
            (run, 0)
        }
    };
    // Every run ends with a final step (on shutdown, `failed`), which ends the stream.
    let events = steps(broker, run, after).map(move |(offset, progress)| {
        let _open = &slot; // the stream holds its slot until it ends
        Event::default().id(offset.to_string()).json_data(progress)
    });
    let events = SyncStream::new(Box::pin(events));
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response())
}

/// The offset in `Last-Event-ID`, if any.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The run in progress: this node's, or on a cluster, the one whose steps the
/// `scrape_progress` topic carries and that has not ended.
fn open_run(broker: &Broker) -> Option<Uuid> {
    broker.scrape.running().or_else(|| {
        let (_, last) = broker.manager.scrape_step(None)?;
        (!last.is_final()).then_some(last.run_id)
    })
}

/// The step a reconnecting stream saw last, if the history still holds it.
fn resume_point(broker: &Broker, offset: u64) -> Option<(Arc<ScrapeProgress>, u64)> {
    let (offset, step) = broker.manager.scrape_step(Some(offset))?;
    Some((step, offset))
}

/// The steps of run `run` after offset `after`: those the topic's history holds, then live
/// ones, up to and including its final step.
fn steps(broker: &Broker, run: Uuid, after: u64) -> impl Stream<Item = (u64, Arc<ScrapeProgress>)> {
    let (held, receiver) = broker.manager.messages_after(Topic::ScrapeProgress, after);
    let live = stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(published) => return Some((published, receiver)),
                // Progress is a few steps a second; a stream this far behind skips ahead.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let of_run = stream::iter(held).chain(live).filter_map(move |published| {
        let step = published.step.filter(|step| step.run_id == run);
        std::future::ready(step.map(|step| (published.offset, step)))
    });
    // End right after the final step, without waiting for another message.
    stream::unfold((Box::pin(of_run), false), |(mut steps, ended)| async move {
        if ended {
            return None;
        }
        let (offset, progress) = steps.next().await?;
        let ended = progress.is_final();
        Some(((offset, progress), (steps, ended)))
    })
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
