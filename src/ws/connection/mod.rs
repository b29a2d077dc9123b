//! The task that runs one WebSocket connection, on the fan-out runtime (see `server.rs`).
//!
//! It selects over the server's close signal, the client's frames, the connection's topic
//! receivers and its heartbeat. After a wake-up it drains everything that is ready, writes it
//! all and flushes once, so a busy connection makes one write per batch. What a client's text
//! message means is `commands.rs`; how it ends is `closing.rs`; this file only moves frames.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

mod closing;

pub(super) use self::closing::EndReason;
use super::commands::{self, Reply, Subscription};
use crate::broker::Broker;
use crate::bucket::TokenBucket;
use crate::metrics::label;
use crate::protocol::{
    encode, ErrorCode, Frame, Position, Positions, ServerMessage, SinceEntry, Topic, TopicSet,
};
use crate::topics::{Delivery, Subscriber};

/// Bytes the socket reads at a time. Client messages are small (a subscribe with positions
/// for every topic is about 200 bytes; a larger one takes more reads); tungstenite allocates
/// this eagerly per connection (its 128 KiB default would dominate an idle connection's cost)
/// and zero-fills it before every read attempt, which happens on every wake-up.
const READ_BUFFER_SIZE: usize = 512;

/// Bytes of encoded frames gathered before tungstenite writes to the socket on its own;
/// a flush writes whatever is gathered regardless.
const WRITE_BUFFER_SIZE: usize = 64 * 1024;

/// Most frames written between two flushes, so one connection with a deep backlog still
/// reaches the socket (and its other select branches) regularly.
const MAX_DRAIN: usize = 256;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// What follows the `connection_ack`, decided at admission.
#[derive(Debug, Default)]
pub struct Greeting {
    /// Names in `?topics=` that are not topics (an `unknown_topic` error).
    pub unknown: Vec<String>,
    /// The default subscription was cut to `--max-topics-per-connection` (a
    /// `too_many_topics` error).
    pub cut_to_limit: bool,
    /// `since` of the URL, to recover from (v1.1).
    pub since: Vec<SinceEntry>,
}

/// What an admitted connection starts with, boxed while the handshake completes: the task
/// holds only a pointer to it until then.
#[derive(Debug)]
pub struct Setup {
    pub broker: Broker,
    pub subscription: Subscription,
    pub greeting: Greeting,
    /// The token's subject, for the logs.
    pub sub: Option<String>,
    /// How long the token stays valid.
    pub expires: Option<Duration>,
    /// Its place under `--max-connections`, held as long as it lives.
    pub slot: OwnedSemaphorePermit,
}

/// Runs one upgraded connection to its end.
///
/// Every idle connection holds this task's state for its whole life, so it is kept small:
/// nothing is held twice across an await (the connection's parts are moved into it once), and
/// the closing handshake's state is boxed when it is reached (`closing`).
pub async fn serve(setup: Box<Setup>, upgraded: Upgraded) {
    let max_frame = setup.broker.config.max_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let Setup {
        broker,
        subscription,
        greeting,
        sub,
        expires,
        slot,
    } = *setup;
    let subscriber = broker.manager.register();
    let span = tracing::info_span!("ws", connection_id = %subscriber.id(), sub = sub.as_deref());
    let mut connection = Connection {
        socket,
        subscriber,
        pending: 0,
        last_heard: Instant::now(),
        sent_frames: 0,
        sent_bytes: 0,
        rate: TokenBucket::new(
            Duration::from_secs_f64(1.0 / broker.config.client_rate),
            f64::from(broker.config.client_burst),
            Instant::now(),
        ),
        refused: 0,
        subscription,
        lagged_at: None,
        expires: expires.map(|left| tokio::time::Instant::now() + left),
        broker,
        _slot: slot,
    };
    let metrics = connection.broker.metrics.clone();
    let manager = connection.broker.manager.clone();
    let started = Instant::now();
    let reason = connection.run(greeting).instrument(span.clone()).await;
    drop(connection); // leaves the registry before the count below is read
    let _entered = span.enter();
    metrics.active_connections.dec();
    metrics
        .connections_closed
        .get_or_create(&label("reason", reason.as_str()))
        .inc();
    tracing::debug!(
        event = "ws.disconnect",
        reason = reason.as_str(),
        duration_ms = started.elapsed().as_millis() as u64,
        active = manager.active_count(),
    );
}

struct Connection {
    socket: Socket,
    subscriber: Subscriber,
    /// Frames fed to the socket since the last flush.
    pending: usize,
    /// When the client last sent anything; heartbeats drop it once this is too old.
    last_heard: Instant,
    /// Frames and payload bytes written since the last flush, added to the metrics then.
    sent_frames: u64,
    sent_bytes: u64,
    /// The client's message rate limit.
    rate: TokenBucket,
    /// Messages refused in a row; a client that ignores `rate_limited` is closed.
    refused: u32,
    /// What the client is subscribed to and may subscribe to; `subscriber` follows it.
    subscription: Subscription,
    /// When it last fell more than `--max-lag-bytes` behind.
    lagged_at: Option<Instant>,
    /// When its token expires (plus the leeway): it is closed then.
    expires: Option<tokio::time::Instant>,
    broker: Broker,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(&mut self, greeting: Greeting) -> EndReason {
        let metrics = &self.broker.metrics;
        metrics.connections_opened.inc();
        metrics.active_connections.inc();
        tracing::debug!(
            event = "ws.connect",
            topics = ?self.subscription.topics.names(),
            active = self.broker.manager.active_count(),
        );
        if let Err(end) = self.greet(greeting).await {
            return self.closing(end).await;
        }
        let config = self.broker.config.clone();
        let ws_close = self.broker.ws_close.clone();
        let beats = config.heartbeat_interval;
        // A zero period would spin; with heartbeats off the branch below is disabled anyway.
        let period = beats.max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With tokens off there is no timer, and the branch below is disabled (boxed: most
        // connections have none, and an idle connection's state is what each one costs).
        let mut expiry = self
            .expires
            .map(|at| Box::pin(tokio::time::sleep_until(at)));

        loop {
            let step = tokio::select! {
                biased;
                () = ws_close.cancelled() => {
                    return Box::pin(self.close_for_shutdown()).await;
                }
                incoming = self.socket.next() => {
                    self.last_heard = Instant::now();
                    // Boxed: a client message is rare, and its handling's state would
                    // otherwise be part of every idle connection's.
                    Box::pin(self.on_incoming(incoming)).await
                }
                delivery = self.subscriber.recv() => self.on_delivery(delivery).await,
                _ = heartbeat.tick(), if !beats.is_zero() => {
                    self.on_heartbeat(config.heartbeat_timeout).await
                }
                () = async { if let Some(expiry) = &mut expiry { expiry.await } }, if expiry.is_some() => {
                    Err(EndReason::TokenExpired)
                }
            };
            let outcome = match step {
                Ok(()) => self.flush().await,
                Err(end) => Err(end),
            };
            if let Err(end) = outcome {
                return self.closing(end).await;
            }
        }
    }

    /// [`Connection::end`], on the heap: the closing handshake's state is about 4 KiB, which
    /// every idle connection's task would otherwise hold for its whole life.
    async fn closing(&mut self, end: EndReason) -> EndReason {
        Box::pin(self.end(end)).await
    }

    /// Pings the client, or gives up on it if it has been silent too long. A half-open TCP
    /// connection never answers, and would otherwise stay in the registry for ever.
    async fn on_heartbeat(&mut self, timeout: Duration) -> Result<(), EndReason> {
        if self.last_heard.elapsed() >= timeout {
            return Err(EndReason::HeartbeatTimeout);
        }
        self.write(Message::Ping(Default::default())).await
    }

    /// Joins the first topics, then says so: `connection_ack` with their positions, then the
    /// errors about what the query asked for. A recovery's replay or `resync` follows.
    async fn greet(&mut self, greeting: Greeting) -> Result<(), EndReason> {
        let (join, bad_since) = commands::since_for(self.subscription.topics, greeting.since);
        let (positions, recovered) = self.join(join);
        let mut messages = vec![ServerMessage::ConnectionAck {
            connection_id: self.subscriber.id(),
            topics: self.subscription.topics,
            positions,
            recovered,
        }];
        if !greeting.unknown.is_empty() {
            messages.push(commands::unknown_topic_error(&greeting.unknown));
        }
        if greeting.cut_to_limit {
            let message = format!(
                "at most {} topics per connection: subscribed to {} only",
                self.subscription.max_topics,
                self.subscription.topics.names().join(", ")
            );
            messages.push(ServerMessage::error(ErrorCode::TooManyTopics, message));
        }
        self.malformed_since(&bad_since);
        messages.extend(bad_since);
        for message in &messages {
            self.feed(encode(message)).await?;
        }
        self.flush().await
    }

    /// Joins each topic (recovering from its `since`), and returns their positions and the
    /// topics recovered.
    fn join(&mut self, topics: Vec<(Topic, Option<Position>)>) -> (Positions, TopicSet) {
        let mut positions = Positions::new();
        let mut recovered = TopicSet::default();
        for (topic, since) in topics {
            let joined = self.subscriber.join(topic, since.as_ref());
            positions.insert(
                topic,
                Position {
                    epoch: joined.epoch,
                    offset: joined.position,
                },
            );
            if joined.recovered {
                recovered.insert(topic);
            }
        }
        tracing::debug!(event = "ws.topics", topics = ?self.subscription.topics.names());
        (positions, recovered)
    }

    /// Counts `since` entries that could not be read.
    fn malformed_since(&self, errors: &[ServerMessage<'_>]) {
        let outcome = label("outcome", "malformed");
        let recoveries = self.broker.metrics.recoveries.get_or_create(&outcome);
        recoveries.inc_by(errors.len() as u64);
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
                let refusal = ServerMessage::error(
                    ErrorCode::RateLimited,
                    "too many messages: this one was dropped; slow down",
                );
                return self.feed(encode(&refusal)).await;
            }
            self.refused = 0;
            // Whatever the topics already hold goes out before the replies, so a `pong`
            // follows every message published before its `ping` (a barrier for clients).
            self.drain_ready().await?;
        }
        let replies = match message {
            Message::Text(text) => commands::apply(text.as_str(), &mut self.subscription),
            Message::Binary(_) => vec![Reply::Message(ServerMessage::error(
                ErrorCode::UnsupportedFrame,
                "binary frames are not supported: send JSON in text frames",
            ))],
            // tungstenite answers pings and close frames itself; the stream ends after a close.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                Vec::new()
            }
        };
        let wanted = self.subscription.topics;
        for topic in self
            .subscriber
            .topics()
            .iter()
            .filter(|t| !wanted.contains(*t))
        {
            self.subscriber.leave(topic);
        }
        for reply in replies {
            let message = match reply {
                Reply::Message(message) => message,
                Reply::Subscribed { topics, join } => {
                    let (positions, recovered) = self.join(join);
                    ServerMessage::Subscribed {
                        topics,
                        positions,
                        recovered,
                    }
                }
            };
            if let ServerMessage::Error {
                code: ErrorCode::InvalidMessage,
                ..
            } = message
            {
                self.malformed_since(std::slice::from_ref(&message));
            }
            self.feed(encode(&message)).await?;
        }
        Ok(())
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
                Delivery::Resync { topic, missed } => self.resync(topic, missed),
                Delivery::Lagged { topic, missed } => {
                    // A reader that falls too far behind again within the stuck timeout
                    // reads slower than the topic is published: resyncing it again would
                    // only repeat, so it is closed.
                    let now = Instant::now();
                    let again = self.lagged_at.replace(now).is_some_and(|at| {
                        now.duration_since(at) < self.broker.config.stuck_timeout
                    });
                    let action = if again { "close" } else { "resync" };
                    let lag = label("action", action);
                    self.broker.metrics.lag_limit.get_or_create(&lag).inc();
                    if again {
                        return Err(EndReason::TooSlow);
                    }
                    self.resync(topic, missed)
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

    /// The `resync` telling the client it will not get `missed` messages of `topic`.
    fn resync(&self, topic: Topic, missed: u64) -> Frame {
        tracing::debug!(event = "ws.resync", topic = topic.name(), missed);
        self.broker.metrics.resyncs.inc();
        self.broker.metrics.resync_missed.inc_by(missed);
        encode(&ServerMessage::Resync { topic, missed })
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
        let fed =
            tokio::time::timeout(self.broker.config.stuck_timeout, self.socket.feed(message)).await;
        progress(fed)
    }

    async fn flush(&mut self) -> Result<(), EndReason> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        self.broker
            .metrics
            .frames_sent
            .inc_by(std::mem::take(&mut self.sent_frames));
        self.broker
            .metrics
            .bytes_sent
            .inc_by(std::mem::take(&mut self.sent_bytes));
        let flushed =
            tokio::time::timeout(self.broker.config.stuck_timeout, self.socket.flush()).await;
        progress(flushed)
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
