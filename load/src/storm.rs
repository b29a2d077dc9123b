//! Reconnect-storm mode (`--reconnect-storm M`): `--clients` subscribers that each missed M
//! changes come back at once, the two ways a client can catch up, one after the other:
//!
//! - **recover**: reconnect with `since` and take the replay from the topic's history;
//! - **refetch**: reconnect without it and read everything from the cache-first reads
//!   (`GET /api/events`, then the odds in bulk reads of 200 ids, as the board does).
//!
//! For each it reports the time until every client has caught up, and the server's CPU time
//! and memory. `--events` events are put first (the market a refetch has to read).

use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{connect_with, Socket};
use crate::http::{connect, get, post, seed};
use crate::process::ProcessStats;
use crate::{Args, FIRST_ID};

/// Runs both storms and prints the report, the last line one JSON object.
pub async fn run(args: &Args, missed: u64) -> Result<(), String> {
    seed(args).await?;
    let (epoch, before) = position(args).await?;
    change(args, missed).await?;
    let (_, top) = position(args).await?;
    println!(
        "{} events; {} clients missed {missed} changes ({} messages of the log)",
        args.events,
        args.clients,
        top - before
    );

    let since = format!("topics=odds_updates&since=odds_updates:{epoch}:{before}");
    let recover = measure(args, || async {
        let sockets = connect_with(args, &since).await?;
        let caught_up = stream::iter(sockets)
            .map(|socket| read_until(socket, top))
            .buffer_unordered(usize::MAX)
            .collect::<Vec<_>>()
            .await;
        caught_up
            .into_iter()
            .collect::<Result<Vec<_>, String>>()
            .map(|_| ())
    })
    .await?;
    let refetch = measure(args, || async {
        let sockets = connect_with(args, "topics=odds_updates").await?;
        let read = stream::iter(0..sockets.len())
            .map(|_| read_everything(args))
            .buffer_unordered(usize::MAX)
            .collect::<Vec<_>>()
            .await;
        drop(sockets);
        read.into_iter()
            .collect::<Result<Vec<_>, String>>()
            .map(|_| ())
    })
    .await?;
    for (name, (secs, cpu, rss)) in [
        ("recover with since", recover),
        ("refetch everything", refetch),
    ] {
        println!(
            "{name}: all caught up in {secs:.2} s, server CPU {cpu:.2} s, RSS {:.1} MiB",
            rss as f64 / 1048576.0
        );
    }
    let figures = |(secs, cpu, rss): (f64, f64, u64)| json!({"seconds": secs, "server_cpu_secs": cpu, "server_rss_bytes": rss});
    println!(
        "{}",
        json!({
            "mode": "reconnect_storm", "clients": args.clients, "events": args.events,
            "missed_changes": missed, "missed_messages": top - before,
            "recover": figures(recover), "refetch": figures(refetch),
        })
    );
    Ok(())
}

/// Times `storm`, with the server's CPU time over it and its memory after.
async fn measure<F, Fut>(args: &Args, storm: F) -> Result<(f64, f64, u64), String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let pid = args
        .server_pid
        .ok_or("--reconnect-storm needs --server-pid")?;
    let before = ProcessStats::read(pid)?;
    let started = Instant::now();
    storm().await?;
    let secs = started.elapsed().as_secs_f64();
    let after = ProcessStats::read(pid)?;
    Ok((secs, after.cpu_secs - before.cpu_secs, after.rss_bytes))
}

/// The epoch and latest offset of `odds_updates`, from a connection's ack.
async fn position(args: &Args) -> Result<(String, u64), String> {
    let url = format!("ws://{}/api/ws?topics=odds_updates", args.server);
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let Some(Ok(Message::Text(ack))) = socket.next().await else {
        return Err("no connection_ack".into());
    };
    let ack: Value = serde_json::from_str(&ack).map_err(|e| e.to_string())?;
    let position = &ack["positions"]["odds_updates"];
    match (position["epoch"].as_str(), position["offset"].as_u64()) {
        (Some(epoch), Some(offset)) => Ok((epoch.to_owned(), offset)),
        _ => Err(format!("no position in {ack}")),
    }
}

/// `count` changes, one event per request, as a scraper would make them.
async fn change(args: &Args, count: u64) -> Result<(), String> {
    let mut client = connect(args).await?;
    for i in 0..count {
        let id = FIRST_ID + i % args.events.max(1);
        let price = 2.0 + (i % 50) as f64 / 100.0 + 0.001;
        let body = json!({"source": "betpawa", "snapshots": [{"event_id": id, "markets": [
            {"market_id": "1x2", "name": "1X2", "outcomes": [{"name": "1", "odds": price}]}]}]});
        post(&mut client, &body).await?;
    }
    // Let the dispatcher publish the last of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Reads a recovering client's messages until it has the one at offset `top`.
async fn read_until(mut socket: Socket, top: u64) -> Result<(), String> {
    while let Some(message) = socket.next().await {
        let Ok(Message::Text(text)) = message else {
            continue;
        };
        if text.contains("\"resync\"") {
            return Err("a client was told to resync".into());
        }
        let offset = text
            .find("\"offset\":")
            .and_then(|at| text[at + 9..].split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<u64>().ok());
        if text.contains("\"odds_update\"") && offset.is_some_and(|offset| offset >= top) {
            return Ok(());
        }
    }
    Err("a recovering client was cut off".into())
}

/// What a client without a position does: list every event, then read them in bulk.
async fn read_everything(args: &Args) -> Result<(), String> {
    let mut client = connect(args).await?;
    let list: Value = serde_json::from_slice(&get(&mut client, "/api/events").await?)
        .map_err(|e| e.to_string())?;
    let ids: Vec<u64> = list["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["event_id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    for chunk in ids.chunks(200) {
        let ids: Vec<String> = chunk.iter().map(u64::to_string).collect();
        get(
            &mut client,
            &format!("/api/events/odds?ids={}", ids.join(",")),
        )
        .await?;
    }
    Ok(())
}
