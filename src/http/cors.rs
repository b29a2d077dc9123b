//! CORS, so that pages on the sites `--allowed-origins` names (and the broker's own) can read
//! the broker from the browser: tower-http's layer around every route, deciding by the same
//! rule as WebSockets and writes (`Auth::allows_origin`). Other origins get no
//! `Access-Control-Allow-Origin`, and their requests are served as before: reads answer,
//! writes refuse them with `forbidden_origin`.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};
use warp::http::header::{
    HeaderName, ACCESS_CONTROL_ALLOW_METHODS, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    ORIGIN,
};
use warp::http::{Method, Request, StatusCode};
use warp::reply::Response;

use crate::broker::Broker;

/// Every route of `broker`. A request with `Origin` goes through the CORS layer; one without
/// is no CORS request (curl, a scraper, a backend) and skips it: the layer costs the busiest
/// reads a tenth of their rate.
pub fn service(
    broker: Broker,
) -> impl Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    let routes = super::routes(broker.clone());
    let plain = warp::service(routes.clone());
    let cors = ServiceBuilder::new()
        .map_response(no_content)
        .layer(layer(broker))
        .service(warp::service(routes));
    tower::service_fn(move |request: Request<Incoming>| {
        let (plain, cors) = (plain.clone(), cors.clone());
        async move {
            if request.headers().contains_key(ORIGIN) {
                cors.oneshot(request).await
            } else {
                plain.oneshot(request).await
            }
        }
    })
}

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layer for `broker`'s routes. Every `OPTIONS` request is a preflight, answered here.
fn layer(broker: Broker) -> CorsLayer {
    let allowed = AllowOrigin::predicate(move |origin, request| {
        origin
            .to_str()
            .is_ok_and(|origin| broker.auth.allows_origin(origin, &request.headers))
    });
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([ETAG])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// A preflight's answer has no content: 204, where tower-http answers 200.
fn no_content(mut response: Response) -> Response {
    let preflight = response
        .headers()
        .contains_key(ACCESS_CONTROL_ALLOW_METHODS);
    if preflight && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}
