//! JSON replies, for the HTTP routes and the WebSocket handshake alike. The bodies are the
//! typed values of `protocol`; this module only turns them into responses.

use serde::Serialize;
use warp::http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::protocol::{HttpError, HttpErrorCode};

/// `body` as JSON with `status`. The body ends with a newline, so that a reply read in a
/// terminal (`curl`) leaves the prompt on a line of its own.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let mut bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(error) => {
            // Only a map with non-string keys can fail; no reply type has one.
            tracing::error!(event = "http.encode_failed", %error);
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    bytes.push(b'\n');
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `body` as JSON with 200.
pub fn ok(body: &impl Serialize) -> Response {
    json(StatusCode::OK, body)
}

impl Reply for HttpError {
    fn into_response(self) -> Response {
        let mut response = json(self.status(), &self);
        let headers = response.headers_mut();
        match self.code {
            // A busy broker: say when to try again.
            HttpErrorCode::TooManyConnections
            | HttpErrorCode::TooManyIngests
            | HttpErrorCode::TooManyStreams => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            HttpErrorCode::TooManyScrapes => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("10"));
            }
            // The rest of a slow body is not worth waiting for: close instead of draining it.
            HttpErrorCode::RequestTimeout => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
