//! Event times: an instant with nanosecond precision, read and written as RFC 3339.
//!
//! Stored as signed nanoseconds since the Unix epoch (an `i64`), which covers the years
//! 1677 to 2262. A command whose time falls outside that range is rejected as invalid; a
//! query time outside it is clamped (before 1677 sees nothing, after 2262 sees everything).

use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant, in nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Why a time string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("'{0}' is not an RFC 3339 time (e.g. 2024-01-15T09:00:00Z)")]
    Syntax(String),
    #[error("'{0}' is outside the supported range (years 1677 to 2262)")]
    OutOfRange(String),
}

impl Timestamp {
    /// The node's clock, in UTC.
    pub fn now() -> Self {
        Self::from_nanos_saturating(OffsetDateTime::now_utc().unix_timestamp_nanos())
    }

    /// Parses an RFC 3339 time exactly; refuses times outside the stored range.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let nanos = Self::parse_nanos(s)?;
        i64::try_from(nanos)
            .map(Timestamp)
            .map_err(|_| TimestampError::OutOfRange(s.to_string()))
    }

    /// Parses an RFC 3339 time for a query bound: out-of-range times are clamped.
    pub fn parse_clamped(s: &str) -> Result<Self, TimestampError> {
        Self::parse_nanos(s).map(Self::from_nanos_saturating)
    }

    fn parse_nanos(s: &str) -> Result<i128, TimestampError> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| t.unix_timestamp_nanos())
            .map_err(|_| TimestampError::Syntax(s.to_string()))
    }

    fn from_nanos_saturating(n: i128) -> Self {
        Timestamp(n.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }

    /// Nanoseconds since the epoch.
    pub fn nanos(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with as many fractional digits as needed (`2024-01-15T09:00:00Z`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128)
            .expect("every i64 nanosecond count is a valid OffsetDateTime");
        match t.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_utc() {
        let t = Timestamp::parse("2024-01-15T09:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2024-01-15T09:00:00Z");
        assert_eq!(t.nanos(), 1_705_309_200_000_000_000);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = Timestamp::parse("2024-01-15T11:00:00.5+02:00").unwrap();
        assert_eq!(t.to_string(), "2024-01-15T09:00:00.5Z");
    }

    #[test]
    fn rejects_garbage_and_out_of_range() {
        assert!(matches!(
            Timestamp::parse("yesterday"),
            Err(TimestampError::Syntax(_))
        ));
        assert!(matches!(
            Timestamp::parse("2024-01-15"),
            Err(TimestampError::Syntax(_))
        ));
        assert!(matches!(
            Timestamp::parse("9999-01-01T00:00:00Z"),
            Err(TimestampError::OutOfRange(_))
        ));
        assert_eq!(
            Timestamp::parse_clamped("9999-01-01T00:00:00Z").unwrap().0,
            i64::MAX
        );
        assert_eq!(
            Timestamp::parse_clamped("0001-01-01T00:00:00Z").unwrap().0,
            i64::MIN
        );
    }
}
