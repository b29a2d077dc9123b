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

    /// Parses any RFC 3339 time and normalises it to UTC.
    pub fn parse(text: &str) -> Result<Timestamp, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(|t| Timestamp(t.to_offset(UtcOffset::UTC)))
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
        let text = <&str>::deserialize(deserializer)?;
        Timestamp::parse(text)
            .map_err(|e| D::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
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
}
