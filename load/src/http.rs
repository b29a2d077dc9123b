//! A plain HTTP/1.1 client on one keep-alive connection, and putting a market in place.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use crate::{Args, FIRST_ID};

/// Puts `--events` events, as three sources with three markets each, 5,000 per request.
pub async fn seed(args: &Args) -> Result<(), String> {
    let mut client = connect(args).await?;
    let market = |id: &str, outcomes: &[&str]| {
        let outcomes: Vec<_> = outcomes
            .iter()
            .map(|name| json!({"name": name, "odds": 1.9}))
            .collect();
        json!({"market_id": id, "name": id, "outcomes": outcomes})
    };
    let markets = json!([
        market("1x2", &["1", "X", "2"]),
        market("ou_2.5", &["Over", "Under"]),
        market("btts", &["Yes", "No"]),
    ]);
    for source in ["betpawa", "sportybet", "bet9ja"] {
        for first in (0..args.events).step_by(5_000) {
            let last = (first + 5_000).min(args.events);
            let snapshots: Vec<_> = (first..last)
                .map(|i| json!({"event_id": FIRST_ID + i, "markets": markets}))
                .collect();
            let body = json!({"source": source, "snapshots": snapshots});
            post(&mut client, &body).await?;
        }
    }
    Ok(())
}

/// POSTs `body` to `/api/odds`; anything but 200 is an error.
pub async fn post(client: &mut Client, body: &serde_json::Value) -> Result<(), String> {
    let request = hyper::Request::post("/api/odds")
        .header("host", "oddsbus")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    match send(client, request).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, body) => Err(format!(
            "ingest refused: {status} {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

pub type Client = SendRequest<Full<Bytes>>;

pub async fn connect(args: &Args) -> Result<Client, String> {
    let stream = TcpStream::connect(args.server)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("oddsbus-load: an HTTP connection failed: {error:?}");
        }
    });
    Ok(sender)
}

/// Sends `request` once the connection is ready for it (a keep-alive connection is not
/// until the previous response is done) and returns the response's status and body.
pub async fn send(
    client: &mut Client,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    client.ready().await.map_err(|e| e.to_string())?;
    let response = client
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

/// GETs `path` and returns the body.
pub async fn get(client: &mut Client, path: &str) -> Result<Bytes, String> {
    let request = hyper::Request::get(path)
        .header("host", "oddsbus")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    Ok(send(client, request).await?.1)
}
