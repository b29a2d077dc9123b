//! Positions in a topic's log (v1.1): what `positions` in replies carry and what a client
//! sends back as `since` to recover what it missed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Topic, TopicSet};

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

/// Longest epoch a `since` entry may name: the server's are 12 to 36 characters.
pub const MAX_EPOCH_CHARS: usize = 64;

/// Longest `since` in a URL: one entry per topic, each `topic:epoch:offset`, fits easily.
pub const MAX_SINCE_BYTES: usize = 512;

/// Why a whole `since` is refused: it names more entries than there are topics, one topic
/// twice, or is longer than [`MAX_SINCE_BYTES`]. A `since` costs the server work and replies
/// per entry, so its size is bounded by what a client can legitimately send.
fn too_long(entries: usize, bytes: usize) -> Option<BadSince> {
    let most = Topic::ALL.len();
    (entries > most || bytes > MAX_SINCE_BYTES).then(|| {
        BadSince(format!(
            "`since` has {entries} entries in {bytes} bytes; it may name each topic once \
             (at most {most} entries, {MAX_SINCE_BYTES} bytes)"
        ))
    })
}

/// The entries of `since` in a URL: `topic:epoch:offset`, comma-separated; or why the whole
/// of it is refused (see [`too_long`]: the handshake then gets 400).
pub fn since_from_query(text: &str) -> Result<Vec<SinceEntry>, BadSince> {
    let entries: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if let Some(refused) = too_long(entries.len(), text.len()) {
        return Err(refused);
    }
    let entries: Vec<SinceEntry> = entries
        .into_iter()
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
        .collect();
    let mut named = TopicSet::default();
    for (topic, _) in entries.iter().flatten() {
        if named.contains(*topic) {
            return Err(BadSince(format!(
                "`since` names `{}` twice; it may name each topic once",
                topic.name()
            )));
        }
        named.insert(*topic);
    }
    Ok(entries)
}

/// The entries of `since` in a `subscribe`: `{"topic":{"epoch":"..","offset":N}}`. One with
/// more entries than there are topics is one malformed entry (one `invalid_message`).
pub fn since_from_message(value: &Value) -> Vec<SinceEntry> {
    let Some(entries) = value.as_object() else {
        return vec![Err(BadSince(
            "`since` must be an object of topic: {epoch, offset}".into(),
        ))];
    };
    if let Some(refused) = too_long(entries.len(), 0) {
        return vec![Err(refused)];
    }
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
    if epoch.len() > MAX_EPOCH_CHARS {
        return Err(BadSince(format!(
            "`since` epoch of {} bytes: epochs have at most {MAX_EPOCH_CHARS}",
            epoch.len()
        )));
    }
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
        let entries =
            since_from_query("odds_updates:k3f9x:1041, scrape_progress:k3f9x:0,x:y").unwrap();
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
        assert!(entries[2].is_err(), "{entries:?}");
        let entries = since_from_query("odds_updates:e:-1,odds_updates:bad!:3").unwrap();
        assert!(entries.iter().all(Result::is_err), "{entries:?}");
        let long_epoch = format!("odds_updates:{}:1", "e".repeat(MAX_EPOCH_CHARS + 1));
        assert!(since_from_query(&long_epoch).unwrap()[0].is_err());

        let value = serde_json::json!({"odds_updates": {"epoch": "k3f9x", "offset": 7}, "scrape_progress": {"epoch": 5}});
        let entries = since_from_message(&value);
        assert_eq!(entries.iter().filter(|e| e.is_ok()).count(), 1);
        assert_eq!(since_from_message(&serde_json::json!([1])).len(), 1);
    }

    #[test]
    fn a_since_names_each_topic_once_within_its_bytes() {
        assert!(
            since_from_query("a,b,c,d,e").is_err(),
            "more entries than topics"
        );
        assert!(since_from_query("odds_updates:e:1,odds_updates:e:2").is_err());
        let long = format!("odds_updates:e:{}", "1".repeat(MAX_SINCE_BYTES));
        assert!(since_from_query(&long).is_err());
        assert!(since_from_query("").unwrap().is_empty());

        let five: serde_json::Map<String, Value> = (0..5)
            .map(|i| {
                (
                    format!("t{i}"),
                    serde_json::json!({"epoch": "e", "offset": 1}),
                )
            })
            .collect();
        let entries = since_from_message(&Value::Object(five));
        assert_eq!(entries.len(), 1, "one error for the whole since");
        assert!(entries[0].is_err());
    }
}
