//! Positions in a topic's log (v1.1): what `positions` in replies carry and what a client
//! sends back as `since` to recover what it missed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Topic;

/// A place in a topic's log: its epoch and an offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The log's epoch: ASCII letters, digits, `-` and `_`.
    pub epoch: Arc<str>,
    /// An offset in it; 0 before the first message.
    pub offset: u64,
}

/// `positions` of a reply: one per topic.
pub type Positions = BTreeMap<Topic, Position>;

/// A `since` entry that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSince(pub String);

/// One `since` entry: a topic and where the client was, or why it could not be read.
pub type SinceEntry = Result<(Topic, Position), BadSince>;

/// The entries of `since` in a URL: `topic:epoch:offset`, comma-separated.
pub fn since_from_query(text: &str) -> Vec<SinceEntry> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let (topic, epoch, offset) = (parts.next(), parts.next(), parts.next());
            match (topic, epoch, offset) {
                (Some(topic), Some(epoch), Some(offset)) => {
                    let offset = offset.parse().map_err(|_| bad_offset(entry))?;
                    entry_for(topic, epoch, offset)
                }
                _ => Err(BadSince(format!(
                    "`since` entry `{entry}`: expected topic:epoch:offset"
                ))),
            }
        })
        .collect()
}

/// The entries of `since` in a `subscribe`: `{"topic":{"epoch":"..","offset":N}}`.
pub fn since_from_message(value: &Value) -> Vec<SinceEntry> {
    let Some(entries) = value.as_object() else {
        return vec![Err(BadSince(
            "`since` must be an object of topic: {epoch, offset}".into(),
        ))];
    };
    entries
        .iter()
        .map(|(topic, position)| {
            let epoch = position.get("epoch").and_then(Value::as_str);
            let offset = position.get("offset").and_then(Value::as_u64);
            match (epoch, offset) {
                (Some(epoch), Some(offset)) => entry_for(topic, epoch, offset),
                _ => Err(BadSince(format!(
                    "`since.{topic}` must be {{\"epoch\": string, \"offset\": integer >= 0}}"
                ))),
            }
        })
        .collect()
}

fn entry_for(topic: &str, epoch: &str, offset: u64) -> SinceEntry {
    let topic = Topic::from_name(topic)
        .ok_or_else(|| BadSince(format!("`since` names `{topic}`, which is not a topic")))?;
    let valid = !epoch.is_empty()
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(BadSince(format!(
            "`since` epoch `{epoch}`: expected ASCII letters, digits, `-` and `_`"
        )));
    }
    Ok((
        topic,
        Position {
            epoch: Arc::from(epoch),
            offset,
        },
    ))
}

fn bad_offset(entry: &str) -> BadSince {
    BadSince(format!(
        "`since` entry `{entry}`: the offset must be an integer >= 0"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_each_entry_on_its_own() {
        let entries = since_from_query("odds_updates:k3f9x:1041, scrape_progress:k3f9x:0,x:y,odds_updates:e:-1,odds_updates:bad!:3");
        assert_eq!(
            entries[0],
            Ok((
                Topic::OddsUpdates,
                Position {
                    epoch: "k3f9x".into(),
                    offset: 1041
                }
            ))
        );
        assert!(entries[1].is_ok());
        assert!(entries[2..].iter().all(Result::is_err), "{entries:?}");

        let value = serde_json::json!({"odds_updates": {"epoch": "k3f9x", "offset": 7}, "scrape_progress": {"epoch": 5}});
        let entries = since_from_message(&value);
        assert_eq!(entries.iter().filter(|e| e.is_ok()).count(), 1);
        assert_eq!(since_from_message(&serde_json::json!([1])).len(), 1);
    }
}
