//! `POST /api/odds`: check the caller may ingest (origin, token), take one of the ingest
//! slots, read the body within its size and time limits, decode it whole (`crate::ingest`),
//! then store it in one write (`crate::engine`: the cache, or the cluster's log).

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Reply;

use crate::broker::Broker;
use crate::engine::check_idempotency_key;
use crate::ingest;
use crate::metrics::label;
use crate::protocol::{HttpError, HttpErrorCode, IngestReply, Timestamp};
use crate::reply;
use crate::store::Store;

/// Handles one ingest request and counts it by status.
pub async fn handle<S, B>(
    broker: Broker,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    length: Option<u64>,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let reply = match accept(&broker, &headers, &query, length, body).await {
        Ok((stored, false)) => reply::ok(&stored),
        Ok((stored, true)) => {
            let mut reply = reply::ok(&stored);
            let replayed = HeaderValue::from_static("true");
            reply.headers_mut().insert("idempotent-replayed", replayed);
            reply
        }
        Err(refused) => {
            tracing::info!(event = "ingest.refused", code = refused.code.as_str(), reason = %refused.message);
            refused.into_response()
        }
    };
    let status = reply.status().as_u16().to_string();
    let requests = &broker.metrics.ingest_requests;
    requests.get_or_create(&label("status", status)).inc();
    reply
}

async fn accept<S, B>(
    broker: &Broker,
    headers: &HeaderMap,
    query: &[(String, String)],
    length: Option<u64>,
    body: S,
) -> Result<(IngestReply, bool), HttpError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    broker.auth.check_origin(headers)?;
    let claims = broker.auth.claims(headers, None)?;
    if !claims.ingest {
        return Err(HttpError::new(
            HttpErrorCode::Forbidden,
            "the token does not allow ingest (claim `ingest`)",
        ));
    }
    let durable = wait_for_store(broker, query)?;
    let key = match headers.get("idempotency-key") {
        Some(key) => Some(check_idempotency_key(key.as_bytes())?),
        None => None,
    };
    let _slot = broker.slots.ingests.try_acquire().map_err(|_| {
        HttpError::new(
            HttpErrorCode::TooManyIngests,
            "as many ingests as the broker handles at once are in progress; retry later",
        )
    })?;
    let deadline = broker.config.request_timeout;
    let read = read_body(length, body, broker.config.max_body_bytes);
    let body = tokio::time::timeout(deadline, read).await.map_err(|_| {
        HttpError::new(
            HttpErrorCode::RequestTimeout,
            format!("the body did not arrive within {deadline:?} (--request-timeout)"),
        )
    })??;
    let batch = ingest::decode(&broker.config, &body, Timestamp::now())?;
    if batch.clamped > 0 {
        let clamped = batch.clamped as u64;
        broker.metrics.captured_at_clamped.inc_by(clamped);
        tracing::debug!(event = "ingest.clamped", source = batch.source, clamped);
    }
    let source: Arc<str> = Arc::from(batch.source.as_str());
    let keys: Vec<(u64, Arc<str>)> = match durable {
        Some(_) => batch
            .snapshots
            .iter()
            .map(|(id, _)| (*id, source.clone()))
            .collect(),
        None => Vec::new(),
    };
    let stored = broker
        .engine
        .put(&batch.source, batch.snapshots, key)
        .await?;
    if let Some(store) = durable {
        let timeout = broker.config.persist_timeout;
        if !store
            .persisted(&keys, stored.position.as_ref(), timeout)
            .await
        {
            return Err(HttpError::new(
                HttpErrorCode::PersistTimeout,
                format!(
                    "the odds are in the cache but were not committed to the database within \
                     {timeout:?} (--persist-timeout)"
                ),
            ));
        }
    }
    let counts = stored.counts;
    tracing::debug!(
        event = "ingest.accepted",
        source = batch.source,
        accepted = counts.accepted,
        changed = counts.changed,
        stale = counts.stale,
        replayed = stored.replayed,
    );
    Ok((counts, stored.replayed))
}

/// The store an ingest with `?wait=persisted` waits for: `None` without `wait`; 400 for
/// another `wait`, or for `persisted` without a database.
fn wait_for_store<'a>(
    broker: &'a Broker,
    query: &[(String, String)],
) -> Result<Option<&'a Store>, HttpError> {
    let Some((_, wait)) = query.iter().find(|(name, _)| name == "wait") else {
        return Ok(None);
    };
    if wait != "persisted" {
        return Err(HttpError::new(
            HttpErrorCode::InvalidQuery,
            format!("`wait={wait}`: the only wait is `persisted`"),
        ));
    }
    match &broker.store {
        Some(store) => Ok(Some(store)),
        None => Err(HttpError::new(
            HttpErrorCode::NoDatabase,
            "`wait=persisted` needs a database (--database-url); nothing was applied",
        )),
    }
}

/// Reads a whole request body, refusing it with 413 as soon as it is known to exceed `limit`
/// (from `Content-Length` before reading, or while reading a body sent without one).
async fn read_body<S, B>(length: Option<u64>, body: S, limit: u64) -> Result<Bytes, HttpError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = || {
        HttpError::new(
            HttpErrorCode::PayloadTooLarge,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    if length.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut collected = BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            HttpError::new(
                HttpErrorCode::InvalidBody,
                format!("the body could not be read: {e}"),
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
