//! What the cache-first reads copy out of the cache, and how it is written as JSON: by
//! joining the snapshots' stored bytes, never by encoding them again.

use std::hash::Hasher;
use std::sync::Arc;

use fnv::FnvHasher;

use super::{Details, StoredSnapshot};
use crate::protocol::HOME_SOURCE;

/// Every snapshot of one event: the body of `GET /api/events/{id}/odds`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOdds {
    /// The event.
    pub event_id: u64,
    /// What the match is, if a source said.
    pub details: Option<Arc<Details>>,
    /// Each source's snapshot: the home bookmaker first, then competitors by name.
    pub sources: Vec<(Arc<str>, StoredSnapshot)>,
}

impl EventOdds {
    /// The snapshot of `source`, if it has one.
    pub fn source(&self, source: &str) -> Option<&StoredSnapshot> {
        self.sources
            .iter()
            .find(|(name, _)| &**name == source)
            .map(|(_, snapshot)| snapshot)
    }

    /// `{"event_id":..,["event":{..},]"betpawa":{..}|null,"competitors":{"name":{..},..}}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"event_id\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.event_id).as_bytes());
        write_details(out, self.details.as_deref());
        out.extend_from_slice(b",\"betpawa\":");
        let competitors = match self.sources.split_first() {
            Some(((name, home), rest)) if &**name == HOME_SOURCE => {
                out.extend_from_slice(&home.json);
                rest
            }
            _ => {
                out.extend_from_slice(b"null");
                &self.sources[..]
            }
        };
        out.extend_from_slice(b",\"competitors\":{");
        for (index, (name, snapshot)) in competitors.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_str(out, name);
            out.push(b':');
            out.extend_from_slice(&snapshot.json);
        }
        out.extend_from_slice(b"}}");
    }

    /// Adds the event to a read's validator.
    pub fn tag(&self, tag: &mut Tag) {
        let details = self.details.as_ref().map(|d| d.tag);
        let ids = self.sources.iter().map(|(_, s)| s.snapshot_id);
        tag.add(self.event_id, details.into_iter().chain(ids));
    }
}

/// One row of `GET /api/events`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    /// The event.
    pub event_id: u64,
    /// What the match is, if a source said.
    pub details: Option<Arc<Details>>,
    /// Each source that has a snapshot of it, with that snapshot's id: the home bookmaker
    /// first, then competitors by name.
    pub sources: Vec<(Arc<str>, u64)>,
    /// When the cache last stored a snapshot of it, as the contract writes times.
    pub updated_at: Arc<str>,
}

impl EventSummary {
    /// `{"event_id":..,["event":{..},]"sources":[..],"updated_at":".."}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"event_id\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.event_id).as_bytes());
        write_details(out, self.details.as_deref());
        out.extend_from_slice(b",\"sources\":[");
        for (index, (name, _)) in self.sources.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_str(out, name);
        }
        out.extend_from_slice(b"],\"updated_at\":");
        write_str(out, &self.updated_at);
        out.push(b'}');
    }

    /// Adds the event to a read's validator.
    pub fn tag(&self, tag: &mut Tag) {
        let details = self.details.as_ref().map(|d| d.tag);
        let ids = self.sources.iter().map(|&(_, id)| id);
        tag.add(self.event_id, details.into_iter().chain(ids));
    }
}

/// The validator of a read, sent as its `ETag`: a hash of the event ids it returns and of
/// their snapshot ids. It changes when a snapshot's odds change (a new snapshot id), a source
/// or an event comes or goes; not when only `captured_at` is refreshed. So it is a weak tag:
/// equal tags mean the same odds. Snapshot ids are the cache's own, so every node that holds
/// the same snapshots gives the same tag.
#[derive(Default)]
pub struct Tag(FnvHasher);

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Tag").field(&self.0.finish()).finish()
    }
}

impl Tag {
    fn add(&mut self, event_id: u64, snapshot_ids: impl Iterator<Item = u64>) {
        self.0.write_u64(event_id);
        for id in snapshot_ids {
            self.0.write_u64(id);
        }
        // Ends the event, so that ids cannot slide from one event to the next.
        self.0.write_u64(u64::MAX);
    }

    /// Adds a number that is part of the reply, such as a page's `next_after`.
    pub fn add_value(&mut self, value: u64) {
        self.0.write_u64(value);
    }

    /// The `ETag` header's value: `W/"<16 hex digits>"`.
    pub fn etag(&self) -> String {
        format!("W/\"{:016x}\"", self.0.finish())
    }
}

/// `,"event":{..}` when a source gave details; nothing otherwise.
fn write_details(out: &mut Vec<u8>, details: Option<&Details>) {
    if let Some(details) = details {
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(&details.json);
    }
}

/// `text` as a JSON string. Source names are configured and plain, but escaping costs
/// nothing at this size and keeps the reply valid whatever an operator names a source.
fn write_str(out: &mut Vec<u8>, text: &str) {
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}
