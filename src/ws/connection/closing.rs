//! How a connection ends: why (for the log and `/metrics`), what the client is told (a
//! close code), and closing so that the client hears it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::Connection;

/// How long closing may take: our close frame leaving, then the client's close arriving.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// While closing, how long a client that sends nothing more counts as done.
const QUIET: Duration = Duration::from_millis(50);

/// Why a connection ended, for the `ws.disconnect` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
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
    /// The token the connection was admitted with expired.
    TokenExpired,
}

impl EndReason {
    /// Every reason, for `/metrics` to list from the start.
    pub const ALL: [EndReason; 8] = [
        EndReason::ClientClosed,
        EndReason::MessageTooLarge,
        EndReason::ServerShutdown,
        EndReason::SocketError,
        EndReason::TooSlow,
        EndReason::RateLimited,
        EndReason::HeartbeatTimeout,
        EndReason::TokenExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::MessageTooLarge => "message_too_large",
            EndReason::ServerShutdown => "server_shutdown",
            EndReason::SocketError => "socket_error",
            EndReason::TooSlow => "too_slow",
            EndReason::RateLimited => "rate_limited",
            EndReason::HeartbeatTimeout => "heartbeat_timeout",
            EndReason::TokenExpired => "token_expired",
        }
    }
}

impl Connection {
    /// Says why the connection ends, where the client can still hear it, and returns `reason`.
    pub(super) async fn end(&mut self, reason: EndReason) -> EndReason {
        let close = match reason {
            EndReason::MessageTooLarge => Some((CloseCode::Size, "message too large")),
            EndReason::TooSlow => Some((
                CloseCode::Policy,
                "too slow: the connection stopped reading its messages",
            )),
            EndReason::RateLimited => Some((CloseCode::Policy, "message rate limit exceeded")),
            EndReason::ServerShutdown => Some((CloseCode::Away, "server shutting down")),
            EndReason::TokenExpired => Some((
                CloseCode::Policy,
                "token_expired: reconnect with a new token",
            )),
            // Gone, dead or already answered: there is nobody to tell.
            EndReason::ClientClosed | EndReason::SocketError | EndReason::HeartbeatTimeout => None,
        };
        if let Some((code, why)) = close {
            self.close(code, why).await;
        }
        tracing::debug!(event = "ws.closing", reason = reason.as_str());
        reason
    }

    /// Sends a close frame, writes nothing after it, and reads (discarding) until the
    /// client's close or [`CLOSE_TIMEOUT`]. Dropping a socket that still holds unread data
    /// makes the kernel send a reset, which can destroy the close frame before the client
    /// reads it; reading first lets it arrive.
    async fn close(&mut self, code: CloseCode, reason: &'static str) {
        let closing = async {
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            if self.socket.send(frame).await.is_err() {
                return;
            }
            // Until the client's close, or until tungstenite reads no further (after an
            // oversized frame it stops at once)...
            while let Some(Ok(_)) = self.socket.next().await {}
            // ...then whatever is left, as bytes, until the client goes quiet.
            let mut discard = [0u8; 4096];
            let raw = self.socket.get_mut();
            while let Ok(Ok(read)) = tokio::time::timeout(QUIET, raw.read(&mut discard)).await {
                if read == 0 {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }

    /// Delivers what is already queued for this connection, then says goodbye with 1001.
    pub(super) async fn close_for_shutdown(&mut self) -> EndReason {
        match self.drain_ready().await {
            Ok(()) => self.end(EndReason::ServerShutdown).await,
            Err(end) => self.end(end).await,
        }
    }
}
