//! The WebSocket endpoint `GET /api/ws`.
//!
//! - `admission.rs`: the handshake, origin and token checks, the topics asked for and the
//!   connection limit; refusals are JSON errors before any upgrade.
//! - `connection.rs`: the task that runs each admitted connection.
//! - `commands.rs`: what a client's message does to its subscription, as a pure function.
//!
//! warp routes the request; the upgrade itself is done with tokio-tungstenite (the library
//! under warp's own `ws` filter) because warp's `Message::text` takes a `String`, which would
//! copy every published frame once per connection. Here a frame published once is written to
//! every socket from the same shared bytes.

mod admission;
mod commands;
mod connection;

use hyper::upgrade::OnUpgrade;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::broker::Broker;
use crate::metrics::{known, Metrics};
use crate::protocol::HttpErrorCode;

/// The WebSocket families' series, at 0 from the start: how connections end, why upgrades
/// are refused, how recoveries go, and what a subscriber too far behind gets.
pub fn known_metrics(metrics: &Metrics) {
    let closed = connection::EndReason::ALL.map(connection::EndReason::as_str);
    known(&metrics.connections_closed, "reason", closed);
    let refusals = [
        HttpErrorCode::UpgradeRequired,
        HttpErrorCode::ForbiddenOrigin,
        HttpErrorCode::Unauthorized,
        HttpErrorCode::InvalidQuery,
        HttpErrorCode::TooManyConnections,
    ];
    known(
        &metrics.connections_refused,
        "reason",
        refusals.map(HttpErrorCode::as_str),
    );
    let outcomes = ["recovered", "epoch", "too_old", "malformed"];
    known(&metrics.recoveries, "outcome", outcomes);
    known(&metrics.lag_limit, "action", ["resync", "close"]);
}

/// `GET /api/ws[?topics=a,b][&token=..]`.
pub fn route(broker: Broker) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::query::<Vec<(String, String)>>())
        .map(
            move |headers: HeaderMap, on_upgrade, query: Vec<(String, String)>| {
                admission::upgrade(&broker, &headers, on_upgrade, &query)
            },
        )
}
