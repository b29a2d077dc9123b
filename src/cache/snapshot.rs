//! What the cache stores: the snapshot a writer hands in, and the same snapshot as the cache
//! keeps it, encoded once as the JSON every read and every `odds_change` serves.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize};

use super::details::Details;
use crate::protocol::Timestamp;

/// A market or outcome name, shared by every snapshot that uses it (see [`intern`]).
pub type Name = Arc<str>;

/// One selectable result of a market and its decimal price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// e.g. `"1"`, `"X"`, `"Over"`.
    #[serde(deserialize_with = "interned")]
    pub name: Name,
    /// Decimal odds.
    pub odds: f64,
}

/// One market of an event, e.g. 1X2 or over/under 2.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Market {
    /// Stable id of the market kind, e.g. `"1x2"`.
    #[serde(deserialize_with = "interned")]
    pub market_id: Name,
    /// Display name.
    #[serde(deserialize_with = "interned")]
    pub name: Name,
    /// The handicap or total line, for markets that have one.
    #[serde(default)]
    pub line: Option<f64>,
    /// The prices.
    pub outcomes: Vec<Outcome>,
}

/// Most distinct names kept for sharing. Past it names are still stored, each on its own,
/// so a client sending endless new names costs memory per snapshot, not in the table.
const MAX_INTERNED: usize = 4096;

/// The shared copy of `name`. A market has the same few names in every event and from every
/// source ("1x2", "Over", ...): sharing them saves two allocations per name and snapshot.
pub fn intern(name: &str) -> Name {
    static NAMES: OnceLock<Mutex<HashSet<Name>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock();
    if let Some(shared) = names.get(name) {
        return shared.clone();
    }
    let shared = Name::from(name);
    if names.len() < MAX_INTERNED {
        names.insert(shared.clone());
    }
    shared
}

fn interned<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
    Cow::<str>::deserialize(deserializer).map(|name| intern(&name))
}

/// What a source says about one event at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The bookmaker's own id for the event, where it has one.
    pub bookmaker_id: Option<i64>,
    /// When the odds were read at the source.
    pub captured_at: Timestamp,
    /// Every market offered.
    pub markets: Vec<Market>,
    /// What the match is, if the source says; kept per event, not in the snapshot's JSON.
    #[serde(skip)]
    pub event: Option<Arc<Details>>,
}

/// A snapshot as the cache holds it: only its JSON, encoded once when it is stored, exactly
/// as reads and `odds_change` messages send it:
/// `{"snapshot_id":..,"event_id":..,"bookmaker_id":..,"captured_at":"..","markets":[..]}`.
/// Cloning it is a reference count, so a read copies it out of the lock for free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Assigned by the cache, increasing; a new id means the markets changed.
    pub snapshot_id: u64,
    /// When the odds were read at the source; an older snapshot is stale.
    pub captured_at: Timestamp,
    /// The snapshot's JSON.
    pub json: Bytes,
    /// Where the markets array sits in `json`: two snapshots with the same markets bytes
    /// have the same odds, which is how a change is told from a refresh.
    markets: Range<usize>,
}

impl StoredSnapshot {
    /// The encoded markets array.
    pub fn markets(&self) -> &[u8] {
        &self.json[self.markets.clone()]
    }
}

/// A snapshot encoded before the cache's lock is taken, but for its `snapshot_id`, which is
/// only known under the lock: `"event_id":..,"bookmaker_id":..,"captured_at":..,"markets":[..]}`.
#[derive(Debug)]
pub struct Encoded {
    captured_at: Timestamp,
    tail: Vec<u8>,
    markets: Range<usize>,
    /// The event's details, if the snapshot carried them.
    pub event: Option<Arc<Details>>,
}

impl Encoded {
    /// Encodes everything of `snapshot` but its id. Field order and number formats are
    /// serde_json's, as the contract's examples show them.
    pub fn new(event_id: u64, snapshot: &Snapshot) -> Encoded {
        let mut tail = Vec::with_capacity(128 + 128 * snapshot.markets.len());
        tail.extend_from_slice(b"\"event_id\":");
        tail.extend_from_slice(itoa::Buffer::new().format(event_id).as_bytes());
        tail.extend_from_slice(b",\"bookmaker_id\":");
        match snapshot.bookmaker_id {
            Some(id) => tail.extend_from_slice(itoa::Buffer::new().format(id).as_bytes()),
            None => tail.extend_from_slice(b"null"),
        }
        tail.extend_from_slice(b",\"captured_at\":\"");
        tail.extend_from_slice(snapshot.captured_at.to_string().as_bytes());
        tail.extend_from_slice(b"\",\"markets\":");
        let start = tail.len();
        // Writing checked values into a vector: serde_json cannot fail here (no maps, every
        // float finite), and if it ever did the markets would read as an empty list.
        if serde_json::to_writer(&mut tail, &snapshot.markets).is_err() {
            tail.truncate(start);
            tail.extend_from_slice(b"[]");
        }
        let markets = start..tail.len();
        tail.push(b'}');
        Encoded {
            captured_at: snapshot.captured_at,
            tail,
            markets,
            event: snapshot.event.clone(),
        }
    }

    /// An encoding as a cluster's shared log carries it (see `crate::engine`'s Redis
    /// engine): `None` if `markets` does not lie within `tail`.
    #[cfg(feature = "server")]
    pub fn from_parts(
        captured_at: Timestamp,
        tail: Vec<u8>,
        markets: Range<usize>,
    ) -> Option<Encoded> {
        let valid = markets.start <= markets.end && markets.end <= tail.len();
        valid.then_some(Encoded {
            captured_at,
            tail,
            markets,
            event: None,
        })
    }

    /// When the odds were read at the source.
    pub fn captured_at(&self) -> Timestamp {
        self.captured_at
    }

    /// Everything after the snapshot id, and where the markets lie in it.
    #[cfg(feature = "server")]
    pub fn tail(&self) -> (&[u8], Range<usize>) {
        (&self.tail, self.markets.clone())
    }

    /// The encoded markets array.
    pub fn markets(&self) -> &[u8] {
        &self.tail[self.markets.clone()]
    }

    /// The stored snapshot under `snapshot_id`.
    pub fn stored(&self, snapshot_id: u64) -> StoredSnapshot {
        let mut buffer = itoa::Buffer::new();
        let id = buffer.format(snapshot_id).as_bytes();
        let head = b"{\"snapshot_id\":".len() + id.len() + 1;
        let mut json = Vec::with_capacity(head + self.tail.len());
        json.extend_from_slice(b"{\"snapshot_id\":");
        json.extend_from_slice(id);
        json.push(b',');
        json.extend_from_slice(&self.tail);
        StoredSnapshot {
            snapshot_id,
            captured_at: self.captured_at,
            json: Bytes::from(json),
            markets: head + self.markets.start..head + self.markets.end,
        }
    }
}
