//! The HTTP API: every route of the broker, and the one place where warp's own rejections
//! become the contract's JSON error replies.
//!
//! `ingest.rs` holds `POST /api/odds`, `events.rs` the cache-first reads, `history.rs` the
//! price history, `alerts.rs` the odds analysis, `scrape.rs` the scrape stream, `cors.rs`
//! what lets other sites' pages read them; the WebSocket endpoint is `crate::ws`, the board
//! `crate::web`. The small routes (stats, health, metrics) are here.

mod alerts;
pub mod cors;
mod events;
mod history;
mod ingest;
mod scrape;

use std::convert::Infallible;

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::broker::Broker;
use crate::engine::Member;
use crate::protocol::{Health, HttpError, HttpErrorCode};
use crate::store::Store;
use crate::{reply, web, ws};

/// Every route of the broker, with errors turned into JSON replies.
pub fn routes(broker: Broker) -> BoxedFilter<(Response,)> {
    let with_broker = {
        let broker = broker.clone();
        warp::any().map(move || broker.clone())
    };

    let ingest = warp::path!("api" / "odds")
        .and(warp::post())
        .and(with_broker.clone())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(ingest::handle);

    let events = warp::path!("api" / "events")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::optional::<String>("if-none-match"))
        .then(events::list);

    let many_odds = warp::path!("api" / "events" / "odds")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::optional::<String>("if-none-match"))
        .then(events::many_odds);

    let event_odds = warp::path!("api" / "events" / String / "odds")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::header::optional::<String>("if-none-match"))
        .then(events::odds);

    let history = warp::path!("api" / "events" / String / "history")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .then(history::history);

    let moves = warp::path!("api" / "moves")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .then(history::moves);

    // One boxed filter for the analysis's reads: each `or` deepens the chain's type, and the
    // compile time grows far faster than the chain.
    let analysis = warp::path!("api" / "alerts")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .then(alerts::alerts)
        .or(warp::path!("api" / "surebets")
            .and(warp::get())
            .and(with_broker.clone())
            .then(alerts::surebets))
        .unify()
        .or(warp::path!("api" / "events" / String / "fair")
            .and(warp::get())
            .and(with_broker.clone())
            .then(alerts::fair))
        .unify()
        .or(warp::path!("api" / "events" / "fair")
            .and(warp::get())
            .and(with_broker.clone())
            .and(warp::query::<Vec<(String, String)>>())
            .then(alerts::many_fair))
        .unify()
        .boxed();

    let stats = warp::path!("api" / "ws" / "stats")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|broker: Broker| reply::ok(&broker.manager.stats()));

    let scrape_stream = warp::path!("api" / "scrape" / "stream")
        .and(warp::get())
        .and(with_broker.clone())
        .and(warp::header::headers_cloned())
        .and(warp::query::<Vec<(String, String)>>())
        .then(
            |broker: Broker, headers, query: Vec<(String, String)>| async move {
                let followed = scrape::stream(&broker, &headers, &query).await;
                followed.unwrap_or_else(|e| e.into_response())
            },
        );

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|broker: Broker| {
            let mut reply = broker.metrics.render().into_response();
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            reply
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            reply
        });

    let health = warp::path!("healthz")
        .and(warp::get())
        .and(with_broker.clone())
        .map(|broker: Broker| health(&broker));

    let cluster = warp::path!("api" / "cluster")
        .and(warp::get())
        .and(with_broker)
        .and(warp::header::headers_cloned())
        .map(|broker: Broker, headers: HeaderMap| cluster(&broker, &headers));

    let board = web::routes(&broker.config.sources(), broker.store.is_some());

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
        .or(history)
        .unify()
        .or(moves)
        .unify()
        .or(analysis)
        .unify()
        .or(scrape_stream)
        .unify()
        .or(metrics)
        .unify()
        .or(health)
        .unify()
        .or(cluster)
        .unify()
        .recover(recover)
        .unify()
        // Boxed: wrapped in the CORS layer, the chain's future type is too deep for the
        // compiler to prove it `Unpin`.
        .boxed()
}

/// `GET /healthz`: `ok`, or 503 `degraded` when a cluster member's delivery path through
/// Redis is broken (reads still serve its cache, WebSockets stay open).
fn health(broker: &Broker) -> Response {
    let degraded = broker.engine.health().err();
    let database = broker.store.as_ref().map(Store::health);
    match degraded {
        None => reply::ok(&Health {
            status: "ok",
            reason: None,
            database,
        }),
        Some(reason) => reply::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Health {
                status: "degraded",
                reason: Some(reason),
                database,
            },
        ),
    }
}

/// `GET /api/cluster`: this node and the live members; on a single node, only itself. It
/// names the nodes' addresses, so with tokens on it needs one (any valid token).
fn cluster(broker: &Broker, headers: &HeaderMap) -> Response {
    if let Err(error) = broker.auth.claims(headers, None) {
        return error.into_response();
    }
    #[derive(serde::Serialize)]
    struct ClusterReply {
        node: Option<Arc<str>>,
        epoch: Arc<str>,
        members: Vec<Member>,
    }
    let reply = ClusterReply {
        node: broker.engine.node(),
        epoch: broker.manager.epoch(),
        members: broker.engine.members(),
    };
    reply::ok(&reply)
}

/// Turns warp's own rejections (no route, wrong method, bad query) into JSON errors.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if rejection.is_not_found() {
        HttpError::new(HttpErrorCode::NotFound, "no such endpoint")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        HttpError::new(
            HttpErrorCode::MethodNotAllowed,
            "this endpoint does not take that method",
        )
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        HttpError::new(
            HttpErrorCode::InvalidQuery,
            "the query string could not be decoded",
        )
    } else if let Some(error) = rejection.find::<warp::reject::InvalidHeader>() {
        HttpError::new(HttpErrorCode::InvalidHeader, error.to_string())
    } else {
        tracing::warn!(event = "http.unhandled_rejection", ?rejection);
        HttpError::new(HttpErrorCode::Internal, "the request could not be handled")
    };
    Ok(error.into_response())
}
