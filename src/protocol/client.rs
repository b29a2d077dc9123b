//! Messages from WebSocket clients, decoded from text frames.

use serde_json::Value;

use super::position::since_from_message;
use super::{ErrorCode, SinceEntry};

/// A well-formed message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Asks for a `pong`.
    Ping,
    /// Adds topics (names as sent; unknown ones are reported, known ones applied), each
    /// recovering from its `since` entry if there is one (v1.1; a malformed entry is
    /// reported on its own).
    Subscribe(Vec<String>, Vec<SinceEntry>),
    /// Removes topics (names as sent).
    Unsubscribe(Vec<String>),
}

/// Why a client's text frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// The contract's code.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
}

impl ClientError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
        }
    }
}

/// Decodes one client text frame.
pub fn decode_client(text: &str) -> Result<ClientMessage, ClientError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ClientError::new(ErrorCode::InvalidJson, format!("not JSON: {e}")))?;
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(ClientError::new(
                ErrorCode::UnknownType,
                "expected an object with a string `type`: ping, subscribe or unsubscribe",
            ))
        }
    };
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "subscribe" => {
            let names = topic_names(&value, kind)?;
            let since = value
                .get("since")
                .map(since_from_message)
                .unwrap_or_default();
            Ok(ClientMessage::Subscribe(names, since))
        }
        "unsubscribe" => topic_names(&value, kind).map(ClientMessage::Unsubscribe),
        other => Err(ClientError::new(
            ErrorCode::UnknownType,
            format!("unknown type `{other}`: expected ping, subscribe or unsubscribe"),
        )),
    }
}

fn topic_names(value: &Value, kind: &str) -> Result<Vec<String>, ClientError> {
    let invalid = || {
        ClientError::new(
            ErrorCode::InvalidMessage,
            format!("`{kind}` needs `topics`: an array of topic names (strings)"),
        )
    };
    let items = value
        .get("topics")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    items
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_maps_each_bad_input_to_its_code() {
        let code = |text: &str| decode_client(text).unwrap_err().code;
        assert_eq!(code("nope"), ErrorCode::InvalidJson);
        for text in [
            "{}",
            r#"{"type":42}"#,
            "[]",
            r#""x""#,
            r#"{"type":"dance"}"#,
        ] {
            assert_eq!(code(text), ErrorCode::UnknownType, "{text}");
        }
        for text in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","topics":"odds_updates"}"#,
            r#"{"type":"unsubscribe","topics":[1]}"#,
        ] {
            assert_eq!(code(text), ErrorCode::InvalidMessage, "{text}");
        }
        assert_eq!(
            decode_client(r#"{"type":"subscribe","topics":[]}"#),
            Ok(ClientMessage::Subscribe(vec![], vec![]))
        );
    }
}
