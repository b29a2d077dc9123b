//! JSON replies, for the HTTP routes and the WebSocket handshake alike. The bodies are the
//! typed values of `protocol`; this module only turns them into responses.

use serde::Serialize;
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, ETAG, RETRY_AFTER};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::protocol::{HttpError, HttpErrorCode};

/// `body` as JSON with `status`. The body ends with a newline, so that a reply read in a
/// terminal (`curl`) leaves the prompt on a line of its own.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => encoded(status, bytes),
        Err(error) => {
            // Only a map with non-string keys can fail; no reply type has one.
            tracing::error!(event = "http.encode_failed", %error);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// JSON already encoded (without the final newline, which this adds) with `status`.
pub fn encoded(status: StatusCode, mut bytes: Vec<u8>) -> Response {
    bytes.push(b'\n');
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A read of the cache with its validator `etag`: `304 Not Modified` when the request's
/// `If-None-Match` names it already, else the JSON `write` produces. Either way caches are
/// told to ask again before reusing it (`no-cache`): odds go stale in seconds.
pub fn validated(
    etag: &str,
    if_none_match: Option<&str>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Response {
    let mut response = if if_none_match.is_some_and(|tags| names(tags, etag)) {
        let mut response = Response::default();
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut bytes = Vec::with_capacity(4096);
        write(&mut bytes);
        encoded(StatusCode::OK, bytes)
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether an `If-None-Match` value (`*` or a list of entity tags) names `etag`, compared
/// weakly, as RFC 9110 wants for `If-None-Match`: `W/` prefixes are ignored.
fn names(if_none_match: &str, etag: &str) -> bool {
    fn opaque(tag: &str) -> &str {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag)
    }
    if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == opaque(etag))
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
            | HttpErrorCode::TooManyStreams
            | HttpErrorCode::BackplaneUnavailable
            | HttpErrorCode::OutcomeUnknown
            | HttpErrorCode::PersistTimeout => {
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

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_stars() {
        let etag = r#"W/"00ff""#;
        assert!(names(r#"W/"00ff""#, etag));
        assert!(names(r#""00ff""#, etag));
        assert!(names(r#""0001", W/"00ff""#, etag));
        assert!(names("*", etag));
        assert!(!names(r#"W/"00fe""#, etag));
        assert!(!names("", etag));
    }
}
