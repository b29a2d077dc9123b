//! Connecting the subscribers, spread over several loopback source addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::Args;

/// One subscriber's connection.
pub type Socket = WebSocketStream<TcpStream>;

/// Connects every subscriber and waits for each `connection_ack`.
pub async fn connect_all(args: &Args) -> Result<Vec<Socket>, String> {
    connect_with(args, "topics=odds_updates").await
}

/// Connects `--clients` subscribers to `/api/ws?{query}` (on `--nodes` in turn, or on
/// `--server`), 256 at a time, and waits for each `connection_ack`.
pub async fn connect_with(args: &Args, query: &str) -> Result<Vec<Socket>, String> {
    let servers = match args.nodes.as_slice() {
        [] => std::slice::from_ref(&args.server),
        nodes => nodes,
    };
    let results = futures_util::stream::iter(0..args.clients)
        .map(|i| {
            let server = servers[i % servers.len()];
            let url = format!("ws://{server}/api/ws?{query}");
            let local = Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(args.source_addrs.max(1))) as u8,
            );
            async move {
                // A server out of file descriptors leaves connections in its backlog: give up
                // instead of waiting forever.
                tokio::time::timeout(
                    Duration::from_secs(10),
                    connect_one(&url, local, server, None),
                )
                .await
                .map_err(|_| format!("connect from {local} timed out after 10 s"))?
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// Connects `--stuck-clients` subscribers that will never read, each with a 4 KiB receive
/// buffer like a phone on a bad link: the server's writes to them soon stall.
pub async fn connect_stuck(args: &Args) -> Result<Vec<Socket>, String> {
    let url = format!("ws://{}/api/ws?topics=odds_updates", args.server);
    let mut stuck = Vec::with_capacity(args.stuck_clients);
    for _ in 0..args.stuck_clients {
        stuck.push(connect_one(&url, Ipv4Addr::LOCALHOST, args.server, Some(4096)).await?);
    }
    Ok(stuck)
}

async fn connect_one(
    url: &str,
    local: Ipv4Addr,
    server: SocketAddr,
    receive_buffer: Option<u32>,
) -> Result<Socket, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(bytes) = receive_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .map_err(|e| e.to_string())?;
    }
    socket
        .bind(SocketAddr::new(IpAddr::V4(local), 0))
        .map_err(|e| format!("bind {local}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect {server} from {local}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains("connection_ack") => Ok(ws),
        other => Err(format!("expected connection_ack, got {other:?}")),
    }
}
