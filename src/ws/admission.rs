//! Admission to `GET /api/ws`: the handshake, the origin and token checks, the topics asked
//! for, and the connection limit. A refused request gets a JSON error before any upgrade and
//! is counted in `connections_refused_total{reason}`; an admitted one gets `101` and a
//! connection task on the fan-out runtime.

use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::commands::Subscription;
use super::connection::{self, Greeting, Setup};
use crate::auth::{subprotocol_token, BEARER_PROTOCOL};
use crate::broker::Broker;
use crate::metrics::label;
use crate::protocol::{parse_topics, since_from_query, HttpError, HttpErrorCode, TopicSet};

/// Answers the handshake and spawns the connection task, or explains why it cannot.
pub fn upgrade(
    broker: &Broker,
    headers: &HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    query: &[(String, String)],
) -> Response {
    match admit(broker, headers, on_upgrade, query) {
        Ok(response) => response,
        Err(refused) => {
            tracing::info!(
                event = "ws.refused",
                reason = refused.code.as_str(),
                detail = %refused.message
            );
            let reason = label("reason", refused.code.as_str());
            broker
                .metrics
                .connections_refused
                .get_or_create(&reason)
                .inc();
            refused.into_response()
        }
    }
}

fn admit(
    broker: &Broker,
    headers: &HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    query: &[(String, String)],
) -> Result<Response, HttpError> {
    let upgrade_required = || {
        HttpError::new(
            HttpErrorCode::UpgradeRequired,
            "this is a WebSocket endpoint: connect with a WebSocket client, \
             e.g. `websocat ws://HOST/api/ws?topics=odds_updates`",
        )
    };
    let key = handshake_key(headers).ok_or_else(upgrade_required)?;
    let on_upgrade = on_upgrade.ok_or_else(upgrade_required)?;
    let claims = broker.auth.admit(headers, query)?;
    let (subscription, mut greeting) = initial_subscription(
        requested_topics(query),
        claims.allowed_topics(),
        broker.config.max_topics_per_connection,
    )?;
    let since: Vec<&str> = query
        .iter()
        .filter(|(key, _)| key == "since")
        .map(|(_, value)| value.as_str())
        .collect();
    greeting.since = since_from_query(&since.join(","))
        .map_err(|refused| HttpError::new(HttpErrorCode::InvalidQuery, refused.0))?;
    let slot = broker
        .slots
        .connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            HttpError::new(
                HttpErrorCode::TooManyConnections,
                "the broker is at its connection limit; retry later",
            )
        })?;
    let setup = Box::new(Setup {
        broker: broker.clone(),
        subscription,
        greeting,
        expires: claims.valid_for(),
        sub: claims.sub,
        slot,
    });
    let task = async move {
        match on_upgrade.await {
            Ok(upgraded) => connection::serve(setup, upgraded).await,
            Err(error) => tracing::debug!(event = "ws.upgrade_failed", %error),
        }
    };
    broker.connections.spawn_on(task, &broker.fanout);
    Ok(switching_protocols(
        key,
        subprotocol_token(headers).is_some(),
    ))
}

/// The connection's first subscription from `?topics=` (known and unknown names; `None`
/// for every topic), what its token allows and the per-connection limit; and what the
/// greeting must say after the ack.
fn initial_subscription(
    requested: Option<(TopicSet, Vec<String>)>,
    allowed: TopicSet,
    max_topics: usize,
) -> Result<(Subscription, Greeting), HttpError> {
    let subscription = |topics| Subscription {
        topics,
        allowed,
        max_topics,
    };
    let Some((topics, unknown)) = requested else {
        // The default topics the token allows, as many as fit.
        let wanted = TopicSet::defaults().intersection(allowed);
        let topics = wanted.first(max_topics);
        let greeting = Greeting {
            cut_to_limit: topics != wanted,
            ..Greeting::default()
        };
        return Ok((subscription(topics), greeting));
    };
    let forbidden: Vec<&str> = topics
        .iter()
        .filter(|t| !allowed.contains(*t))
        .map(|t| t.name())
        .collect();
    if !forbidden.is_empty() {
        let message = format!("the token does not allow: {}", forbidden.join(", "));
        return Err(HttpError::new(HttpErrorCode::Forbidden, message));
    }
    if topics.len() > max_topics {
        return Err(HttpError::new(
            HttpErrorCode::TooManyTopics,
            format!("at most {max_topics} topics per connection"),
        ));
    }
    let greeting = Greeting {
        unknown,
        ..Greeting::default()
    };
    Ok((subscription(topics), greeting))
}

/// The `101 Switching Protocols` reply for the client's key.
/// The 101 reply; it selects `oddsbus.bearer` when the client offered its token that way.
fn switching_protocols(key: &HeaderValue, bearer: bool) -> Response {
    let mut response = warp::reply().into_response();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    if bearer {
        let protocol = HeaderValue::from_static(BEARER_PROTOCOL);
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// The client's `Sec-WebSocket-Key` if the headers ask for a version-13 WebSocket upgrade.
fn handshake_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let upgrade = has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    upgrade
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY))
        .flatten()
}

/// Topics named by `?topics=a,b` (known, unknown); `None` when absent or empty, which
/// means every topic.
fn requested_topics(query: &[(String, String)]) -> Option<(TopicSet, Vec<String>)> {
    let names: Vec<&str> = query
        .iter()
        .filter(|(key, _)| key == "topics")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    (!names.is_empty()).then(|| parse_topics(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Topic;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn absent_or_empty_topics_mean_the_default() {
        assert_eq!(requested_topics(&[]), None);
        assert_eq!(requested_topics(&query(&[("topics", "")])), None);
    }

    #[test]
    fn unknown_names_are_reported_and_skipped() {
        let (topics, unknown) =
            requested_topics(&query(&[("topics", "odds_updates, nope,")])).unwrap();
        assert_eq!(topics.names(), ["odds_updates"]);
        assert_eq!(unknown, ["nope"]);
    }

    #[test]
    fn the_default_set_is_cut_to_the_limit_and_says_so() {
        let (sub, greeting) = initial_subscription(None, TopicSet::all(), 1).unwrap();
        assert_eq!(sub.topics.names(), ["odds_updates"]);
        assert!(greeting.cut_to_limit);
        let (sub, greeting) = initial_subscription(None, TopicSet::all(), 16).unwrap();
        assert_eq!(sub.topics.names(), ["odds_updates", "scrape_progress"]);
        assert!(
            !greeting.cut_to_limit,
            "odds_changes is not a default topic"
        );
    }

    #[test]
    fn named_topics_over_the_limit_or_forbidden_are_refused() {
        let both = Some((TopicSet::all(), Vec::new()));
        let refused = initial_subscription(both.clone(), TopicSet::all(), 1).unwrap_err();
        assert_eq!(refused.code, HttpErrorCode::TooManyTopics);
        let progress_only = [Topic::ScrapeProgress].into_iter().collect();
        let refused = initial_subscription(both, progress_only, 16).unwrap_err();
        assert_eq!(refused.code, HttpErrorCode::Forbidden);
    }
}
