//! Optional access control, off unless `--auth-secret` is set: HS256 JSON Web Tokens for
//! WebSocket connections and for ingest, and an allowed-origins list for browsers.
//!
//! Claims (all but `exp` optional):
//! - `exp`: expiry, seconds since the Unix epoch (required);
//! - `sub`: who the token is for (logged);
//! - `topics`: the topics the bearer may subscribe to; absent means every topic;
//! - `ingest`: `true` lets the bearer `POST /api/odds`.

mod hs256;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use warp::http::HeaderMap;

use crate::config::Config;
use crate::protocol::{parse_topics, HttpError, HttpErrorCode, TopicSet};

/// What a valid token allows.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// Who the token is for.
    #[serde(default)]
    pub sub: Option<String>,
    /// Topics the bearer may subscribe to; `None` means every topic.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Whether the bearer may push odds.
    #[serde(default)]
    pub ingest: bool,
}

impl Claims {
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
    /// Tokens are required when `--auth-secret` is set; origins are checked when
    /// `--allowed-origins` is.
    pub fn from_config(config: &Config) -> Auth {
        hs256::install();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
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
                sub: None,
                topics: None,
                ingest: true,
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

    /// Refuses browsers from origins not on the list with `forbidden` (requests without
    /// `Origin`, i.e. not from a browser, pass).
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), HttpError> {
        if self.origins.is_empty() {
            return Ok(());
        }
        match headers.get(warp::http::header::ORIGIN).map(|o| o.to_str()) {
            None => Ok(()),
            Some(Ok(origin)) if self.origins.iter().any(|allowed| allowed == origin) => Ok(()),
            Some(origin) => Err(HttpError::new(
                HttpErrorCode::Forbidden,
                format!("origin {:?} is not allowed", origin.unwrap_or("(not text)")),
            )),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(warp::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
