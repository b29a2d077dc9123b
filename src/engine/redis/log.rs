//! What the cluster keeps in Redis, and how it is written and read back: the log's entries,
//! the state's values and the snapshots an ingest hands the append script (`append.lua`).
//!
//! A snapshot travels as text: `SID MS M0 M1 TAIL` in the state, `c|r EVENT SID MS M0 M1
//! TAIL` in a log entry (a change or a refresh), `EVENT MS M0 M1 TAIL` to the script. TAIL is
//! the snapshot's JSON after its id (`crate::cache::Encoded`), M0..M1 where its markets lie in
//! TAIL, MS its `captured_at` in milliseconds since the year 0 (never negative, so the
//! script compares plain digits). JSON holds no raw newline, so entries join them by lines.

use std::fmt;
use std::str::FromStr;

use std::sync::Arc;

use crate::cache::{Details, Encoded, Logged, StoredSnapshot};
use crate::protocol::{ScrapeProgress, Timestamp, HOME_SOURCE};

/// Milliseconds from 0000-01-01 to 1970-01-01: MS is never negative.
const YEAR_ZERO_MS: i64 = 62_167_219_200_000;

/// A stream entry id, `TOP-SEQ`: TOP is the log's offset after the entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    /// The log's offset after this entry.
    pub top: u64,
    /// Tells apart entries that took no offset (refreshes only).
    pub seq: u64,
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(text: &str) -> Result<EntryId, String> {
        let parsed = text
            .split_once('-')
            .and_then(|(top, seq)| Some((top.parse().ok()?, seq.parse().ok()?)));
        match parsed {
            Some((top, seq)) => Ok(EntryId { top, seq }),
            None => Err(format!("`{text}` is not a stream entry id")),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.top, self.seq)
    }
}

/// One entry of the log, read back.
#[derive(Debug)]
pub struct Entry {
    /// Its id.
    pub id: EntryId,
    /// The id of the entry before it: a follower that applied that one missed nothing.
    pub prev: EntryId,
    /// Whether it closes its group: what the group holds is published then, alike on every
    /// member (`append.lua`).
    pub closes: bool,
    /// What it says.
    pub body: Body,
}

/// What an entry says.
#[derive(Debug)]
pub enum Body {
    /// An ingest: its source, each snapshot stored (changes with their offsets), and the
    /// event details it gave.
    Odds(String, Vec<Logged>, Vec<(u64, Arc<Details>)>),
    /// A scrape run's step, at the entry's offset.
    Progress(ScrapeProgress),
    /// The end of a group that stayed open: nothing else.
    Cut,
}

/// The text the append script takes for one snapshot.
pub fn item(event_id: u64, encoded: &Encoded) -> Vec<u8> {
    let (tail, markets) = encoded.tail();
    let head = format!(
        "{event_id} {} {} {} ",
        encoded.captured_at().unix_millis() + YEAR_ZERO_MS,
        markets.start,
        markets.end
    );
    [head.as_bytes(), tail].concat()
}

/// Reads a state value, `SID MS M0 M1 TAIL`, of `event_id`.
pub fn state_value(event_id: u64, value: &[u8]) -> Result<Logged, String> {
    let snapshot = snapshot(value)?;
    Ok(Logged {
        event_id,
        snapshot,
        offset: None,
    })
}

/// Reads one entry from its id and fields.
pub fn entry(id: &str, field: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Entry, String> {
    let id: EntryId = id.parse()?;
    let text = |name: &str| {
        let value = field(name).ok_or_else(|| format!("entry {id} has no `{name}`"))?;
        String::from_utf8(value).map_err(|_| format!("entry {id}: `{name}` is not UTF-8"))
    };
    let prev: EntryId = text("p")?.parse()?;
    let body = match text("k")?.as_str() {
        "progress" => {
            let step = serde_json::from_str(&text("j")?).map_err(|e| format!("entry {id}: {e}"))?;
            Body::Progress(step)
        }
        "odds" => {
            let (logged, details) = snapshots(id, &text("d")?)?;
            Body::Odds(text("s")?, logged, details)
        }
        "cut" => Body::Cut,
        other => return Err(format!("entry {id} is of an unknown kind `{other}`")),
    };
    let closes = field("x").is_some();
    Ok(Entry {
        id,
        prev,
        closes,
        body,
    })
}

/// The snapshots and details of an odds entry: its changes take the offsets before its
/// id's, in order.
type Lines = (Vec<Logged>, Vec<(u64, Arc<Details>)>);

fn snapshots(id: EntryId, lines: &str) -> Result<Lines, String> {
    let changes = lines.lines().filter(|line| line.starts_with("c ")).count() as u64;
    let mut next = (id.top + 1)
        .checked_sub(changes)
        .ok_or_else(|| format!("entry {id} holds more changes than offsets"))?;
    let (mut logged, mut details) = (Vec::new(), Vec::new());
    for line in lines.lines() {
        let (kind, rest) = line.split_at_checked(2).unwrap_or(("", line));
        let (event_id, value) = rest.split_once(' ').unwrap_or((rest, ""));
        let event_id = event_id
            .parse()
            .map_err(|_| format!("entry {id}: `{event_id}` is not an event id"))?;
        match kind {
            "e " => details.push((event_id, details_value(value.as_bytes())?)),
            "c " | "r " => {
                let mut snapshot = state_value(event_id, value.as_bytes())?;
                if kind == "c " {
                    snapshot.offset = Some(next);
                    next += 1;
                }
                logged.push(snapshot);
            }
            _ => return Err(format!("entry {id}: a line of unknown kind")),
        }
    }
    Ok((logged, details))
}

/// The text the append script takes for an event's details: `e EVENT JSON`.
pub fn details_item(event_id: u64, details: &Details) -> Vec<u8> {
    [format!("e {event_id} ").as_bytes(), &details.json].concat()
}

/// Reads details as the `events` hash keeps them: `SOURCE JSON`, whose they are and what
/// (the home bookmaker's when no source is written, as before sources were kept).
pub fn held_details(value: &[u8]) -> Result<(&str, Arc<Details>), String> {
    if value.first() == Some(&b'{') {
        return Ok((HOME_SOURCE, details_value(value)?));
    }
    let space = value.iter().position(|&b| b == b' ');
    let (source, json) = value.split_at(space.ok_or("event details without a source")?);
    let source = std::str::from_utf8(source).map_err(|_| "a source that is not UTF-8")?;
    Ok((source, details_value(&json[1..])?))
}

/// Reads details as the log carries them: their JSON.
pub fn details_value(json: &[u8]) -> Result<Arc<Details>, String> {
    Details::decode(json).map(Arc::new)
}

fn snapshot(value: &[u8]) -> Result<StoredSnapshot, String> {
    let bad = || {
        format!(
            "`{}` is not a stored snapshot",
            String::from_utf8_lossy(value)
        )
    };
    let mut parts = value.splitn(5, |&b| b == b' ');
    let mut number = || -> Result<u64, String> {
        let part = parts.next().ok_or_else(bad)?;
        std::str::from_utf8(part)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)
    };
    let (snapshot_id, ms, m0, m1) = (number()?, number()?, number()?, number()?);
    let tail = parts.next().ok_or_else(bad)?.to_vec();
    let millis = i64::try_from(ms).map_err(|_| bad())? - YEAR_ZERO_MS;
    let captured_at = Timestamp::from_unix_millis(millis).ok_or_else(bad)?;
    let markets =
        usize::try_from(m0).map_err(|_| bad())?..usize::try_from(m1).map_err(|_| bad())?;
    let encoded = Encoded::from_parts(captured_at, tail, markets).ok_or_else(bad)?;
    Ok(encoded.stored(snapshot_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Market, Outcome, Snapshot};

    fn snapshot(odds: f64, at: &str) -> Snapshot {
        Snapshot {
            bookmaker_id: Some(7),
            captured_at: Timestamp::parse(at).unwrap(),
            markets: vec![Market {
                market_id: "1x2".into(),
                name: "Match result".into(),
                line: None,
                outcomes: vec![Outcome {
                    name: "Home win".into(),
                    odds,
                }],
            }],
            event: None,
        }
    }

    #[test]
    fn held_details_say_whose_they_are() {
        let json = br#"{"kickoff":"2026-12-01T10:00:00Z"}"#;
        let value = [b"bet9ja ".as_slice(), json].concat();
        let (source, details) = held_details(&value).unwrap();
        assert_eq!(source, "bet9ja");
        assert_eq!(details.json.as_ref(), json);
        assert!(details.kickoff.is_some());
        // As written before sources were kept.
        assert_eq!(held_details(json).unwrap().0, HOME_SOURCE);
        assert!(held_details(b"bet9ja").is_err());
    }

    #[test]
    fn a_snapshot_reads_back_as_the_cache_would_store_it() {
        for at in ["2026-12-01T10:00:00.123Z", "1900-01-01T00:00:00.000Z"] {
            let original = snapshot(1.5, at);
            let encoded = Encoded::new(42, &original);
            let text = item(42, &encoded);
            // What the script stores: the id in front of all but the event id.
            let rest = text.splitn(2, |&b| b == b' ').nth(1).unwrap();
            let value = [b"9 ".as_slice(), rest].concat();
            let logged = state_value(42, &value).unwrap();
            assert_eq!(logged.snapshot, encoded.stored(9));
            assert_eq!(logged.snapshot.markets(), encoded.markets());
        }
        assert!(state_value(1, b"9 x 0 1 {}").is_err());
        assert!(
            state_value(1, b"9 62167219200000 5 9 {}").is_err(),
            "markets past the tail"
        );
    }

    #[test]
    fn changes_take_the_offsets_before_the_entry_id() {
        let encoded = Encoded::new(5, &snapshot(2.0, "2026-12-01T10:00:00.000Z"));
        let rest = |sid: &str| {
            let text = item(5, &encoded);
            let rest = text.splitn(2, |&b| b == b' ').nth(1).unwrap().to_vec();
            format!("{sid} {}", String::from_utf8(rest).unwrap())
        };
        let lines = format!("c 5 {}\nr 6 {}\nc 7 {}", rest("3"), rest("1"), rest("4"));
        let fields = |name: &str| match name {
            "p" => Some(b"8-0".to_vec()),
            "k" => Some(b"odds".to_vec()),
            "s" => Some(b"betpawa".to_vec()),
            "d" => Some(lines.clone().into_bytes()),
            _ => None,
        };
        let entry = entry("10-0", fields).unwrap();
        assert_eq!(entry.prev, EntryId { top: 8, seq: 0 });
        let Body::Odds(source, logged, _) = entry.body else {
            panic!("not odds")
        };
        assert_eq!(source, "betpawa");
        let offsets: Vec<_> = logged.iter().map(|l| (l.event_id, l.offset)).collect();
        assert_eq!(offsets, [(5, Some(9)), (6, None), (7, Some(10))]);
        assert!(super::entry("10-0", |_| None).is_err());
    }
}
