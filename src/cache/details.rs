//! What the match is: the optional event details a snapshot may carry (its name, its
//! competition, its kickoff). The cache keeps the latest details given for each event, encoded
//! once, and every read of the event serves them.

use std::hash::Hasher;

use bytes::Bytes;
use fnv::FnvHasher;
use serde::Serialize;

use crate::protocol::Timestamp;

/// Event details as a snapshot carries them: `{"name":..,"competition":..,"kickoff":..}`,
/// each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventDetails {
    /// e.g. `"Arsenal v Chelsea"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// e.g. `"England: Premier League"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub competition: Option<String>,
    /// When the match starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kickoff: Option<Timestamp>,
}

/// Event details as the cache keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// The JSON every read serves.
    pub json: Bytes,
    /// For the rule that drops matches long over.
    pub kickoff: Option<Timestamp>,
    /// A hash of `json`, for the reads' `ETag`.
    pub tag: u64,
}

impl Details {
    /// Encodes `details` once.
    pub fn new(details: &EventDetails) -> Details {
        // Strings and a time: serde_json cannot fail on them.
        let json = serde_json::to_vec(details).unwrap_or_else(|_| b"{}".to_vec());
        Details::from_json(Bytes::from(json), details.kickoff)
    }

    /// Details as they were kept encoded (the cluster's log, the database): their JSON.
    pub fn decode(json: &[u8]) -> Result<Details, String> {
        #[derive(serde::Deserialize)]
        struct Kickoff {
            kickoff: Option<Timestamp>,
        }
        let read: Kickoff =
            serde_json::from_slice(json).map_err(|e| format!("event details: {e}"))?;
        Ok(Details::from_json(
            Bytes::copy_from_slice(json),
            read.kickoff,
        ))
    }

    /// Details already encoded (as the cluster's log carries them).
    pub fn from_json(json: Bytes, kickoff: Option<Timestamp>) -> Details {
        let mut hash = FnvHasher::default();
        hash.write(&json);
        Details {
            tag: hash.finish(),
            json,
            kickoff,
        }
    }
}
