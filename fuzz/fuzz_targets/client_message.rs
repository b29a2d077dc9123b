//! Any text a WebSocket client sends: decoding never panics, and what it decides is
//! consistent with the contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oddsbus::{decode_client, encode, parse_topics, ClientMessage, ErrorCode, ServerMessage};

fuzz_target!(|data: &[u8]| {
    // A frame that is not UTF-8 never reaches the decoder: tungstenite refuses it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client(text) {
        Ok(ClientMessage::Ping) => {}
        Ok(ClientMessage::Subscribe(names, _) | ClientMessage::Unsubscribe(names)) => {
            // Every name ends up either a known topic or reported as unknown.
            let (known, unknown) = parse_topics(names.iter().map(String::as_str));
            for name in &names {
                let is_known = known.iter().any(|topic| topic.name() == name);
                assert_ne!(
                    is_known,
                    unknown.contains(name),
                    "{name:?} classified twice"
                );
            }
        }
        Err(error) => {
            assert!(!error.message.is_empty());
            // The reply the connection sends back is itself valid JSON with the code.
            let frame = encode(&ServerMessage::error(error.code, error.message.clone()));
            let reply: serde_json::Value =
                serde_json::from_str(frame.as_str()).expect("error reply is JSON");
            assert_eq!(reply["type"], "error");
            assert_eq!(reply["message"], error.message.as_str());
            let expected = serde_json::to_value(error.code).expect("codes serialise");
            assert_eq!(reply["code"], expected);
            assert!(matches!(
                error.code,
                ErrorCode::InvalidJson | ErrorCode::UnknownType | ErrorCode::InvalidMessage
            ));
        }
    }
});
