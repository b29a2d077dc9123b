//! The HTTP API: ingest (`POST /api/odds`), the cache-first reads, stats, health, and the one
//! place where anything that goes wrong becomes the contract's JSON error reply.

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};

use crate::auth::Denied;
use crate::metrics::label;
use crate::protocol::Timestamp;
use crate::server::Broker;
use crate::{ingest, web, ws};

/// Every route of the broker, with errors turned into JSON replies.
pub fn routes(broker: Broker) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_broker = {
        let broker = broker.clone();
        warp::any().map(move || broker.clone())
    };

    let ingest = warp::path!("api" / "odds")
        .and(warp::post())
        .and(with_broker.clone())
        .and(warp::header::headers_cloned())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|broker: Broker, headers, length, body| async move {
            let limit = broker.config.max_body_bytes;
            let reply = match may_ingest(&broker, &headers) {
                Err(denied) => error_reply(denied.status, denied.code, &denied.message),
                Ok(()) => match read_body(length, body, limit).await {
                    Ok(body) => ingest(&broker, &body),
                    Err(reply) => reply,
                },
            };
            let status = reply.status().as_u16().to_string();
            let requests = &broker.manager.metrics().ingest_requests;
            requests.get_or_create(&label("status", status)).inc();
            reply
        });

    let events = warp::path!("api" / "events")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|broker: Broker| {
            json_reply(StatusCode::OK, &json!({ "events": broker.cache.events() }))
        });

    let many_odds = warp::path!("api" / "events" / "odds")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .map(|broker: Broker, query: Vec<(String, String)>| many_event_odds(&broker, &query));

    let event_odds = warp::path!("api" / "events" / String / "odds")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|id: String, broker: Broker| event_odds(&broker, &id));

    let stats = warp::path!("api" / "ws" / "stats")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|broker: Broker| json_reply(StatusCode::OK, &broker.manager.stats()));

    let scrape_stream = warp::path!("api" / "scrape" / "stream")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|broker: Broker| scrape_stream(&broker));

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_broker)
        .map(|broker: Broker| {
            let text = broker.manager.metrics().render();
            let mut reply = text.into_response();
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            if let Ok(value) = content_type.parse() {
                reply
                    .headers_mut()
                    .insert(warp::http::header::CONTENT_TYPE, value);
            }
            reply
        });

    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &json!({ "status": "ok" })));

    let board = web::routes(&broker.config.sources());

    ws::route(broker)
        .or(board)
        .unify()
        .or(stats)
        .unify()
        .or(ingest)
        .unify()
        .or(events)
        .unify()
        .or(many_odds)
        .unify()
        .or(event_odds)
        .unify()
        .or(scrape_stream)
        .unify()
        .or(metrics)
        .unify()
        .or(health)
        .unify()
        .recover(recover)
        .unify()
}

/// A JSON body with a status.
pub fn json_reply(status: StatusCode, body: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The contract's error reply: `{"error":{"code":..,"message":..}}`.
pub fn error_reply(status: StatusCode, code: &str, message: &str) -> Response {
    json_reply(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

/// Turns warp's own rejections (no route, wrong method, bad query) into JSON errors.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let reply = if rejection.is_not_found() {
        error_reply(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method",
        )
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        error_reply(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "the query string could not be decoded",
        )
    } else if let Some(error) = rejection.find::<warp::reject::InvalidHeader>() {
        error_reply(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            &error.to_string(),
        )
    } else {
        tracing::warn!(event = "http.unhandled_rejection", ?rejection);
        error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be handled",
        )
    };
    Ok(reply)
}

/// Reads a whole request body, refusing it with 413 as soon as it is known to exceed `limit`
/// (from `Content-Length` before reading, or while reading a body sent without one).
async fn read_body<S, B>(length: Option<u64>, body: S, limit: u64) -> Result<Bytes, Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    if length.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut collected = BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            error_reply(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("the body could not be read: {e}"),
            )
        })?;
        if (collected.len() + chunk.remaining()) as u64 > limit {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// With tokens required, ingest needs a bearer token with the `ingest` claim.
fn may_ingest(broker: &Broker, headers: &HeaderMap) -> Result<(), Denied> {
    let denied = match broker.auth.claims(headers, None) {
        Ok(claims) if claims.ingest => return Ok(()),
        Ok(_) => Denied::forbidden("the token does not allow ingest (claim `ingest`)"),
        Err(denied) => denied,
    };
    tracing::info!(event = "ingest.refused", code = denied.code, reason = %denied.message);
    Err(denied)
}

fn ingest(broker: &Broker, body: &[u8]) -> Response {
    match ingest::decode(&broker.config, body, Timestamp::now()) {
        Ok(batch) => {
            let outcome = broker.cache.put_batch(&batch.source, batch.snapshots);
            tracing::info!(
                event = "ingest.accepted",
                source = batch.source,
                accepted = outcome.accepted,
                changed = outcome.changed.len(),
            );
            json_reply(
                StatusCode::OK,
                &json!({ "accepted": outcome.accepted, "changed": outcome.changed.len() }),
            )
        }
        Err(refused) => {
            tracing::info!(event = "ingest.refused", code = refused.code, reason = %refused.message);
            error_reply(StatusCode::BAD_REQUEST, refused.code, &refused.message)
        }
    }
}

/// `GET /api/scrape/stream`: joins or starts a run and streams it as SSE until it ends. On
/// shutdown the run stops and reports `failed`, which ends every stream with the reason.
/// The client going away does not stop the run.
fn scrape_stream(broker: &Broker) -> Response {
    let events = broker
        .scrape
        .join_or_start()
        .map(|progress| Event::default().json_data(progress));
    warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
}

/// Most event ids one `GET /api/events/odds` may name.
const MAX_IDS_PER_READ: usize = 500;

/// `GET /api/events/odds?ids=1,2,3`: the odds of several events in one read (ids the cache
/// does not hold are left out). An addition to the contract's reads, so that a client
/// refetching many changed events does not need one request per event.
fn many_event_odds(broker: &Broker, query: &[(String, String)]) -> Response {
    let mut ids = Vec::new();
    for text in query
        .iter()
        .filter(|(key, _)| key == "ids")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        match text.parse::<u64>() {
            Ok(id) => ids.push(id),
            Err(_) => {
                return error_reply(
                    StatusCode::BAD_REQUEST,
                    "invalid_event_id",
                    &format!("`{text}` is not an event id (a non-negative integer)"),
                )
            }
        }
    }
    if ids.len() > MAX_IDS_PER_READ {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "too_many_ids",
            &format!(
                "{} ids in one read; the limit is {MAX_IDS_PER_READ}",
                ids.len()
            ),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    let events: Vec<_> = ids
        .into_iter()
        .filter_map(|id| broker.cache.event_odds(id))
        .collect();
    json_reply(StatusCode::OK, &json!({ "events": events }))
}

fn event_odds(broker: &Broker, id: &str) -> Response {
    let Ok(event_id) = id.parse::<u64>() else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "invalid_event_id",
            &format!("`{id}` is not an event id (a non-negative integer)"),
        );
    };
    match broker.cache.event_odds(event_id) {
        Some(odds) => json_reply(StatusCode::OK, &odds),
        None => error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("event {event_id} is not in the cache"),
        ),
    }
}
