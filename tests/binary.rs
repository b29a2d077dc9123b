//! The `oddsbus` binary itself: flags, JSON logs, and a graceful exit on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_zero() {
    let args = [
        "--competitors",
        "sportybet,bet9ja",
        "--auth-secret",
        common::SECRET,
    ];
    // A connection's lines are at debug (the default level logs one line per scrape run and
    // per refused or failed request).
    let (mut child, addr, lines) = common::spawn_binary(&args, "info,oddsbus=debug");
    let logs = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());

    let token = common::token(serde_json::json!({"sub": "board-7"}), common::SECRET);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/ws?token={token}"))
            .await
            .unwrap();
    let ack = socket.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // Periodic scrapes are on, so updates may arrive before the close frame.
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no close frame");
        match next {
            Some(Ok(Message::Text(_))) => continue,
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Away);
                break;
            }
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    let logs = logs.join().unwrap();
    let events: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let connect = events.iter().find(|e| e["event"] == "ws.connect").unwrap();
    let disconnect = events
        .iter()
        .find(|e| e["event"] == "ws.disconnect")
        .unwrap();
    assert!(connect["connection_id"].is_string() || connect["span"]["connection_id"].is_string());
    // Who the connection is, from its token, is on every line of the connection.
    assert_eq!(connect["span"]["sub"], "board-7", "{connect}");
    assert_eq!(disconnect["span"]["sub"], "board-7", "{disconnect}");
    assert_eq!(disconnect["reason"], "server_shutdown");
    assert!(events.iter().any(|e| e["event"] == "server.stopped"));
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_oddsbus"))
        .args(["--competitors", "betpawa"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("home bookmaker"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_oddsbus"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// What a newcomer types works: a host name in `--listen`, the usual words for an on/off
/// variable, and pretty logs written to a pipe carry no colour codes.
#[test]
fn host_names_boolean_words_and_plain_logs_in_a_pipe() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_oddsbus"))
        .args(["--listen", "localhost:0", "--scrape-interval", "0"])
        .env("ODDSBUS_NO_COALESCE", "yes")
        .env("ODDSBUS_LOG_FORMAT", "pretty")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let listening = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if line.contains("server.listening") {
            break line;
        }
    };
    assert!(
        !listening.contains('\u{1b}'),
        "colour codes in a pipe: {listening:?}"
    );
    assert!(
        listening.contains("127.0.0.1:") || listening.contains("[::1]:"),
        "{listening}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}
