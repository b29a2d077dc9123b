//! The WebSocket endpoint `GET /api/ws`: the upgrade filter and the per-connection task.
//!
//! warp routes the request; the upgrade itself is done here with tokio-tungstenite (the
//! library under warp's own `ws` filter) because warp's `Message::text` takes a `String`, which
//! would copy every published frame once per connection. Here a frame published once is
//! written to every socket from the same shared bytes.
//!
//! Each connection is one task, spawned on the fan-out runtime (see `server.rs`). It selects over the server's close signal, the client's
//! frames and the connection's topic receivers; after a wake-up it drains everything that is
//! ready, writes it all and flushes once, so a busy connection makes one write per batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Denied;
use crate::bucket::TokenBucket;
use crate::http::error_reply;
use crate::manager::{Delivery, Subscriber};
use crate::metrics::{label, Metrics};
use crate::protocol::{
    decode_client, encode, parse_topics, unknown_topics_message, ClientMessage, ErrorCode, Frame,
    ServerMessage, TopicSet,
};
use crate::server::Broker;

/// Bytes the socket reads at a time. Client messages are small; tungstenite allocates this
/// eagerly per connection (its 128 KiB default would dominate an idle connection's cost) and
/// zero-fills it before every read attempt, which happens on every wake-up.
const READ_BUFFER_SIZE: usize = 1024;

/// Bytes of encoded frames gathered before tungstenite writes to the socket on its own;
/// a flush writes whatever is gathered regardless.
const WRITE_BUFFER_SIZE: usize = 64 * 1024;

/// How long a closing frame may take to leave before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most frames written between two flushes, so one connection with a deep backlog still
/// reaches the socket (and its other select branches) regularly.
const MAX_DRAIN: usize = 256;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// `GET /api/ws[?topics=a,b]`.
pub fn route(broker: Broker) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "ws")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::query::<Vec<(String, String)>>())
        .map(
            move |headers: HeaderMap, on_upgrade, query: Vec<(String, String)>| {
                upgrade(&broker, &headers, on_upgrade, &query)
            },
        )
}

/// Answers the handshake and spawns the connection task, or explains why it cannot.
fn upgrade(
    broker: &Broker,
    headers: &HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    query: &[(String, String)],
) -> Response {
    let key = match handshake_key(headers) {
        Some(key) => key,
        None => {
            return error_reply(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "this is a WebSocket endpoint: connect with a WebSocket client, \
                 e.g. `websocat ws://HOST/api/ws?topics=odds_updates`",
            )
        }
    };
    let Some(on_upgrade) = on_upgrade else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "upgrade_required",
            "this connection cannot be upgraded",
        );
    };

    if let Err(denied) = broker.auth.check_origin(headers) {
        return denied_reply(denied);
    }
    let token = query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    let claims = match broker.auth.claims(headers, token) {
        Ok(claims) => claims,
        Err(denied) => return denied_reply(denied),
    };
    let allowed = claims.allowed_topics();
    let (topics, unknown) = match requested_topics(query) {
        // Every topic by default means every topic the token allows.
        None => (allowed, Vec::new()),
        Some((topics, unknown)) => {
            let forbidden: Vec<&str> = topics
                .iter()
                .filter(|t| !allowed.contains(*t))
                .map(|t| t.name())
                .collect();
            if !forbidden.is_empty() {
                let message = format!("the token does not allow: {}", forbidden.join(", "));
                return denied_reply(Denied::forbidden(message));
            }
            (topics, unknown)
        }
    };
    let most = broker.config.max_topics_per_connection;
    if topics.len() > most {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "too_many_topics",
            &format!("at most {most} topics per connection"),
        );
    }
    let Ok(slot) = broker.connection_slots.clone().try_acquire_owned() else {
        tracing::warn!(event = "ws.refused", reason = "max_connections");
        let refused = &broker.manager.metrics().connections_refused;
        refused
            .get_or_create(&label("reason", "max_connections"))
            .inc();
        return error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the broker is at its connection limit; retry later",
        );
    };
    let broker = broker.clone();
    let (tasks, fanout) = (broker.tasks.clone(), broker.fanout.clone());
    tasks.spawn_on(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(broker, upgraded, topics, allowed, unknown).await,
                Err(error) => tracing::debug!(event = "ws.upgrade_failed", %error),
            }
            drop(slot);
        },
        &fanout,
    );

    let mut response = warp::reply().into_response();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
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

fn denied_reply(denied: Denied) -> Response {
    tracing::info!(event = "ws.refused", reason = denied.code, detail = %denied.message);
    error_reply(denied.status, denied.code, &denied.message)
}

/// Runs one upgraded connection to its end.
async fn serve(
    broker: Broker,
    upgraded: Upgraded,
    topics: TopicSet,
    allowed: TopicSet,
    unknown: Vec<String>,
) {
    let max_frame = broker.config.max_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let subscriber = broker.manager.register(topics);
    let id = subscriber.id();
    let span = tracing::info_span!("ws", connection_id = %id);
    let metrics = broker.manager.metrics().clone();
    async move {
        metrics.connections_opened.inc();
        metrics.active_connections.inc();
        tracing::info!(
            event = "ws.connect",
            topics = ?topics.iter().map(|t| t.name()).collect::<Vec<_>>(),
            active = broker.manager.active_count(),
        );
        let started = Instant::now();
        let mut connection = Connection {
            socket,
            subscriber,
            pending: 0,
            stuck_timeout: broker.config.stuck_timeout,
            last_heard: Instant::now(),
            sent_frames: 0,
            sent_bytes: 0,
            metrics: metrics.clone(),
            rate: TokenBucket::new(
                Duration::from_secs_f64(1.0 / broker.config.client_rate),
                f64::from(broker.config.client_burst),
                Instant::now(),
            ),
            refused: 0,
            max_topics: broker.config.max_topics_per_connection,
            allowed,
        };
        let reason = connection.run(&broker, unknown).await;
        drop(connection); // leaves the registry before the count below is read
        metrics.active_connections.dec();
        metrics
            .connections_closed
            .get_or_create(&label("reason", reason.as_str()))
            .inc();
        tracing::info!(
            event = "ws.disconnect",
            reason = reason.as_str(),
            duration_ms = started.elapsed().as_millis() as u64,
            active = broker.manager.active_count(),
        );
    }
    .instrument(span)
    .await;
}

/// Why a connection ended, for the `ws.disconnect` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    ClientClosed,
    MessageTooLarge,
    ServerShutdown,
    SocketError,
    /// A write made no progress for the stuck timeout: the client stopped reading.
    TooSlow,
    /// The client went on flooding after being told `rate_limited`.
    RateLimited,
    /// The client sent nothing, not even a pong, for the heartbeat timeout.
    HeartbeatTimeout,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::MessageTooLarge => "message_too_large",
            EndReason::ServerShutdown => "server_shutdown",
            EndReason::SocketError => "socket_error",
            EndReason::TooSlow => "too_slow",
            EndReason::RateLimited => "rate_limited",
            EndReason::HeartbeatTimeout => "heartbeat_timeout",
        }
    }
}

struct Connection {
    socket: Socket,
    subscriber: Subscriber,
    /// Frames fed to the socket since the last flush.
    pending: usize,
    /// Longest a write may make no progress before the client counts as stuck.
    stuck_timeout: Duration,
    /// When the client last sent anything; heartbeats drop it once this is too old.
    last_heard: Instant,
    /// Frames and payload bytes written since the last flush, added to the metrics then.
    sent_frames: u64,
    sent_bytes: u64,
    metrics: Arc<Metrics>,
    /// The client's message rate limit.
    rate: TokenBucket,
    /// Messages refused in a row; a client that ignores `rate_limited` is closed.
    refused: u32,
    /// Most topics this connection may hold.
    max_topics: usize,
    /// Topics its token allows.
    allowed: TopicSet,
}

impl Connection {
    async fn run(&mut self, broker: &Broker, unknown: Vec<String>) -> EndReason {
        if let Err(end) = self.greet(&unknown).await {
            return self.end(end).await;
        }
        let beats = broker.config.heartbeat_interval;
        // A zero period would spin; with heartbeats off the branch below is disabled anyway.
        let period = beats.max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let step = tokio::select! {
                biased;
                () = broker.ws_close.cancelled() => return self.close_for_shutdown().await,
                incoming = self.socket.next() => {
                    self.last_heard = Instant::now();
                    self.on_incoming(incoming).await
                }
                delivery = self.subscriber.recv() => self.on_delivery(delivery).await,
                _ = heartbeat.tick(), if !beats.is_zero() => {
                    self.on_heartbeat(broker.config.heartbeat_timeout).await
                }
            };
            let outcome = match step {
                Ok(()) => self.flush().await,
                Err(end) => Err(end),
            };
            if let Err(end) = outcome {
                return self.end(end).await;
            }
        }
    }

    /// Pings the client, or gives up on it if it has been silent too long. A half-open TCP
    /// connection never answers, and would otherwise stay in the registry for ever.
    async fn on_heartbeat(&mut self, timeout: Duration) -> Result<(), EndReason> {
        if self.last_heard.elapsed() >= timeout {
            return Err(EndReason::HeartbeatTimeout);
        }
        self.write(Message::Ping(Default::default())).await
    }

    /// Says why the connection ends, where the client can still hear it, and returns `reason`.
    async fn end(&mut self, reason: EndReason) -> EndReason {
        let close = match reason {
            EndReason::MessageTooLarge => Some(close_message(CloseCode::Size, "message too large")),
            EndReason::TooSlow => Some(close_message(
                CloseCode::Policy,
                "too slow: the connection stopped reading its messages",
            )),
            EndReason::RateLimited => Some(close_message(
                CloseCode::Policy,
                "message rate limit exceeded",
            )),
            // Gone, dead or already answered: there is nobody to tell.
            EndReason::ClientClosed
            | EndReason::SocketError
            | EndReason::HeartbeatTimeout
            | EndReason::ServerShutdown => None,
        };
        if let Some(close) = close {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.send(close)).await;
        }
        tracing::info!(event = "ws.closing", reason = reason.as_str());
        reason
    }

    /// `connection_ack` first, then the `unknown_topic` error for names the query got wrong.
    async fn greet(&mut self, unknown: &[String]) -> Result<(), EndReason> {
        let ack = encode(&ServerMessage::ConnectionAck {
            connection_id: self.subscriber.id(),
            topics: self.subscriber.topics(),
        });
        self.feed(ack).await?;
        if !unknown.is_empty() {
            self.feed(unknown_topic_error(unknown)).await?;
        }
        self.flush().await
    }

    /// Handles one client frame (or the end of the stream).
    async fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), EndReason> {
        let message = match incoming {
            None => return Err(EndReason::ClientClosed),
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(error))) => {
                tracing::info!(event = "ws.message_too_large", %error);
                return Err(EndReason::MessageTooLarge);
            }
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                return Err(EndReason::ClientClosed)
            }
            Some(Err(error)) => {
                tracing::debug!(event = "ws.read_error", %error);
                return Err(EndReason::SocketError);
            }
        };
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            if !self.rate.try_take(Instant::now()) {
                self.refused += 1;
                if self.refused > self.rate_burst() {
                    return Err(EndReason::RateLimited);
                }
                let refusal = error_frame(
                    ErrorCode::RateLimited,
                    "too many messages: this one was dropped; slow down",
                );
                return self.feed(refusal).await;
            }
            self.refused = 0;
            // Whatever the topics already hold goes out before the replies, so a `pong`
            // follows every message published before its `ping` (a barrier for clients).
            self.drain_ready().await?;
        }
        let replies = match message {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(_) => vec![error_frame(
                ErrorCode::UnsupportedFrame,
                "binary frames are not supported: send JSON in text frames",
            )],
            // tungstenite answers pings and close frames itself; the stream ends after a close.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                Vec::new()
            }
        };
        for reply in replies {
            self.feed(reply).await?;
        }
        Ok(())
    }

    /// Applies one client text message and returns the replies, in order.
    fn on_text(&mut self, text: &str) -> Vec<Frame> {
        let message = match decode_client(text) {
            Ok(message) => message,
            Err(error) => return vec![error_frame(error.code, &error.message)],
        };
        let (names, subscribe) = match message {
            ClientMessage::Ping => return vec![encode(&ServerMessage::Pong)],
            ClientMessage::Subscribe(names) => (names, true),
            ClientMessage::Unsubscribe(names) => (names, false),
        };
        let (named, unknown) = parse_topics(names.iter().map(String::as_str));
        let mut topics = self.subscriber.topics();
        let forbidden: Vec<&str> = named
            .iter()
            .filter(|t| subscribe && !self.allowed.contains(*t))
            .map(|t| t.name())
            .collect();
        for topic in named
            .iter()
            .filter(|t| !subscribe || self.allowed.contains(*t))
        {
            if subscribe {
                topics.insert(topic);
            } else {
                topics.remove(topic);
            }
        }
        if topics.len() > self.max_topics {
            let message = format!(
                "at most {} topics per connection; the subscription is unchanged",
                self.max_topics
            );
            return vec![error_frame(ErrorCode::TooManyTopics, &message)];
        }
        self.subscriber.set_topics(topics);
        tracing::debug!(event = "ws.topics", subscribe, topics = ?topics);
        let reply = if subscribe {
            ServerMessage::Subscribed { topics }
        } else {
            ServerMessage::Unsubscribed { topics }
        };
        let mut replies = vec![encode(&reply)];
        if !unknown.is_empty() {
            replies.push(unknown_topic_error(&unknown));
        }
        if !forbidden.is_empty() {
            let message = format!("the token does not allow: {}", forbidden.join(", "));
            replies.push(error_frame(ErrorCode::Forbidden, &message));
        }
        replies
    }

    /// How many refusals in a row end the connection: a whole burst's worth.
    fn rate_burst(&self) -> u32 {
        self.rate.burst() as u32
    }

    /// Writes one delivery, then whatever else is ready, without flushing.
    async fn on_delivery(&mut self, first: Delivery) -> Result<(), EndReason> {
        let mut next = Some(first);
        let mut drained = 0;
        while let Some(delivery) = next {
            let frame = match delivery {
                Delivery::Frame(frame) => frame,
                Delivery::Lagged { topic, missed } => {
                    tracing::info!(event = "ws.resync", topic = topic.name(), missed);
                    self.metrics.resyncs.inc();
                    self.metrics.resync_missed.inc_by(missed);
                    encode(&ServerMessage::Resync { topic, missed })
                }
            };
            self.feed(frame).await?;
            drained += 1;
            next = (drained < MAX_DRAIN)
                .then(|| self.subscriber.try_recv())
                .flatten();
        }
        Ok(())
    }

    /// Writes everything the topic receivers hold right now.
    async fn drain_ready(&mut self) -> Result<(), EndReason> {
        while let Some(delivery) = self.subscriber.try_recv() {
            self.on_delivery(delivery).await?;
        }
        Ok(())
    }

    /// Queues a frame in the socket's write buffer (tungstenite writes it out by itself once
    /// the buffer passes `WRITE_BUFFER_SIZE`).
    async fn feed(&mut self, frame: Frame) -> Result<(), EndReason> {
        self.sent_frames += 1;
        self.sent_bytes += frame.len() as u64;
        self.write(Message::Text(frame)).await
    }

    async fn write(&mut self, message: Message) -> Result<(), EndReason> {
        self.pending += 1;
        let fed = tokio::time::timeout(self.stuck_timeout, self.socket.feed(message)).await;
        progress(fed)
    }

    async fn flush(&mut self) -> Result<(), EndReason> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        self.metrics
            .frames_sent
            .inc_by(std::mem::take(&mut self.sent_frames));
        self.metrics
            .bytes_sent
            .inc_by(std::mem::take(&mut self.sent_bytes));
        let flushed = tokio::time::timeout(self.stuck_timeout, self.socket.flush()).await;
        progress(flushed)
    }

    /// Delivers what is already queued for this connection, then says goodbye with 1001.
    async fn close_for_shutdown(&mut self) -> EndReason {
        if self.drain_ready().await.is_err() {
            return EndReason::ServerShutdown;
        }
        let _ = self
            .socket
            .send(close_message(CloseCode::Away, "server shutting down"))
            .await;
        EndReason::ServerShutdown
    }
}

/// A write that timed out made no progress: the client is stuck.
fn progress(
    outcome: Result<Result<(), tungstenite::Error>, tokio::time::error::Elapsed>,
) -> Result<(), EndReason> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(EndReason::SocketError),
        Err(_) => Err(EndReason::TooSlow),
    }
}

fn close_message(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn error_frame(code: ErrorCode, message: &str) -> Frame {
    encode(&ServerMessage::Error { code, message })
}

fn unknown_topic_error(names: &[String]) -> Frame {
    error_frame(ErrorCode::UnknownTopic, &unknown_topics_message(names))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            topics.iter().map(|t| t.name()).collect::<Vec<_>>(),
            ["odds_updates"]
        );
        assert_eq!(unknown, ["nope"]);
    }
}
