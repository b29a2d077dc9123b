//! Timestamps as the contract writes them.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// An instant in UTC, written as RFC 3339 with milliseconds and a `Z` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to the millisecond the wire carries.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        let millis = now.millisecond();
        Timestamp(now.replace_millisecond(millis).unwrap_or(now))
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// The instant `millis` after the Unix epoch, if RFC 3339 can write it.
    pub fn from_unix_millis(millis: i64) -> Option<Timestamp> {
        let nanos = i128::from(millis) * 1_000_000;
        let time = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
        (0..=9999).contains(&time.year()).then_some(Timestamp(time))
    }

    /// The instant `duration` earlier (no earlier than RFC 3339's year 0000).
    pub fn minus(self, duration: std::time::Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let earlier = self.unix_millis().saturating_sub(millis);
        Timestamp::from_unix_millis(earlier).unwrap_or(self)
    }

    /// The instant `duration` later (no later than RFC 3339's year 9999).
    pub fn plus(self, duration: std::time::Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let later = self.unix_millis().saturating_add(millis);
        Timestamp::from_unix_millis(later).unwrap_or(self)
    }

    /// Parses an RFC 3339 time and normalises it to UTC. Refuses one whose UTC form falls
    /// outside the years 0000 to 9999, which RFC 3339 cannot write (so it could not be served
    /// back).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))?;
        parsed
            .checked_to_offset(UtcOffset::UTC)
            .filter(|utc| (0..=9999).contains(&utc.year()))
            .map(Timestamp)
            .ok_or_else(|| format!("`{text}` is outside the years 0000 to 9999 in UTC"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self.0.format(&format).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_millis_with_z() {
        let t = Timestamp::parse("2026-11-21T23:03:00.123456+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T22:03:00.123Z");
        let now = Timestamp::now().to_string();
        assert_eq!(now.len(), "2026-11-21T22:03:00.123Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn times_that_cannot_be_written_back_are_refused() {
        for edge in ["9999-12-31T23:59:59-00:01", "0000-01-01T00:00:00+00:01"] {
            assert!(Timestamp::parse(edge).is_err(), "{edge}");
        }
        for fine in [
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:01:00+00:01",
        ] {
            let t = Timestamp::parse(fine).unwrap().to_string();
            assert_eq!(Timestamp::parse(&t).unwrap().to_string(), t, "{fine}");
        }
    }
}
