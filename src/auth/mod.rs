//! Access control: HS256 JSON Web Tokens for WebSocket connections, ingest and scrape runs
//! (off unless `--auth-secret` is set), and the origins browsers may act from (always on).
//!
//! Claims (all but `exp` optional):
//! - `exp`: expiry, seconds since the Unix epoch (required); `nbf`: not before;
//! - `sub`: who the token is for (logged);
//! - `topics`: the topics the bearer may subscribe to and follow; absent means every topic;
//! - `ingest`: `true` lets the bearer `POST /api/odds`;
//! - `scrape`: `true` lets the bearer start a scrape run.
//!
//! Origins: a page on another site can make a browser send requests to a broker on the
//! operator's machine. A WebSocket upgrade, an ingest or a scrape trigger whose `Origin` is
//! neither the broker's own (the request's `Host`) nor in `--allowed-origins` is refused;
//! requests without `Origin` (curl, scrapers) are not browsers and pass.

mod hs256;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use warp::http::{header, HeaderMap};

use crate::config::Config;
use crate::protocol::{parse_topics, HttpError, HttpErrorCode, TopicSet};

/// What a valid token allows.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// When it expires, in seconds since the Unix epoch (`None` when tokens are off).
    #[serde(default)]
    pub exp: Option<u64>,
    /// Who the token is for.
    #[serde(default)]
    pub sub: Option<String>,
    /// Topics the bearer may subscribe to; `None` means every topic.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Whether the bearer may push odds.
    #[serde(default)]
    pub ingest: bool,
    /// Whether the bearer may start scrape runs.
    #[serde(default)]
    pub scrape: bool,
}

/// How long past its `exp` a token is still taken: clocks differ a little.
pub const LEEWAY_SECS: u64 = 5;

impl Claims {
    /// How long the token stays valid from now (its `exp` plus [`LEEWAY_SECS`]); `None` when
    /// tokens are off. A connection admitted with it is closed then.
    pub fn valid_for(&self) -> Option<std::time::Duration> {
        let exp = self.exp?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let end = std::time::Duration::from_secs(exp.saturating_add(LEEWAY_SECS));
        Some(end.saturating_sub(now))
    }

    /// The topics these claims allow (unknown names in the claim allow nothing).
    pub fn allowed_topics(&self) -> TopicSet {
        match &self.topics {
            None => TopicSet::all(),
            Some(names) => parse_topics(names.iter().map(String::as_str)).0,
        }
    }
}

/// The access rules the configuration asks for.
pub struct Auth {
    key: Option<DecodingKey>,
    validation: Validation,
    origins: Vec<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.key.is_some())
            .field("origins", &self.origins)
            .finish()
    }
}

impl Auth {
    /// Tokens are required when `--auth-secret` is set; origins are always checked.
    pub fn from_config(config: &Config) -> Auth {
        hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        Auth {
            key: config
                .auth_secret
                .as_deref()
                .map(|secret| DecodingKey::from_secret(secret.as_bytes())),
            validation,
            origins: config.allowed_origins.clone(),
        }
    }

    /// The claims of the request's token (`token` query parameter or `Authorization: Bearer`),
    /// or every right when tokens are not required.
    /// A refusal is `unauthorized` (401).
    pub fn claims(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Claims, HttpError> {
        let Some(key) = &self.key else {
            return Ok(Claims {
                exp: None,
                sub: None,
                topics: None,
                ingest: true,
                scrape: true,
            });
        };
        let token = query_token.or_else(|| bearer(headers)).ok_or_else(|| {
            HttpError::new(
                HttpErrorCode::Unauthorized,
                "a token is required: `?token=` or `Authorization: Bearer`",
            )
        })?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| HttpError::new(HttpErrorCode::Unauthorized, format!("invalid token: {e}")))
    }

    /// The claims of a request browsers make with no way to set headers (a WebSocket, an
    /// EventSource): its origin checked, its token in `?token=`, in the WebSocket
    /// subprotocols (see [`subprotocol_token`]) or a bearer header.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Claims, HttpError> {
        self.check_origin(headers)?;
        let token = query
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_str())
            .or_else(|| subprotocol_token(headers));
        self.claims(headers, token)
    }

    /// Refuses a browser request made from another site's page with `forbidden_origin`.
    /// The broker's own pages (same host as the request) and `--allowed-origins` pass, and
    /// so does a request without `Origin`, which does not come from a browser page.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("(not text)");
        if self.allows_origin(origin, headers) {
            return Ok(());
        }
        Err(HttpError::new(
            HttpErrorCode::ForbiddenOrigin,
            format!(
                "requests from pages at {origin:?} are not allowed; the operator can add it \
                 to --allowed-origins"
            ),
        ))
    }

    /// Whether pages at `origin` may use the broker: its own pages (same host as the
    /// request's) and `--allowed-origins`. The one rule for WebSockets, writes and CORS.
    pub fn allows_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        let own = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .is_some_and(|host| is_same_host(origin, host));
        own || self.origins.iter().any(|allowed| allowed == origin)
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the server reached as `host`. The scheme
/// is not compared: behind a TLS proxy the broker sees `http` where the page saw `https`.
fn is_same_host(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// The subprotocol a WebSocket client offers to say it sends its token in the next one.
pub const BEARER_PROTOCOL: &str = "oddsbus.bearer";

/// A browser cannot set headers on a WebSocket, but it can offer subprotocols: a client that
/// offers `oddsbus.bearer` and `oddsbus.token.JWT` sends its token where no URL (and so no
/// proxy's access log) carries it. The server answers with `oddsbus.bearer`.
pub fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    let offered = || {
        let values = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).into_iter();
        values
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
    };
    if !offered().any(|p| p == BEARER_PROTOCOL) {
        return None;
    }
    offered().find_map(|p| p.strip_prefix("oddsbus.token."))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_pages_are_its_host_whatever_the_scheme() {
        assert!(is_same_host("http://127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(is_same_host("https://Odds.Example", "odds.example"));
        assert!(!is_same_host("http://127.0.0.1:8001", "127.0.0.1:8000"));
        assert!(!is_same_host("https://odds.example.evil", "odds.example"));
        assert!(!is_same_host("null", "odds.example"));
    }
}
