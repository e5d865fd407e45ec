//! Time is passed in: code that needs "now" takes a `Clock`, so tests can fix it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant with millisecond precision, as FHIR `instant` values are written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 instant (any offset) or a FHIR date / partial dateTime
    /// (`2024`, `2024-05`, `2024-05-01`, taken as the start of that period in UTC).
    pub fn parse(s: &str) -> Option<Self> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Self((t.unix_timestamp_nanos() / 1_000_000) as i64));
        }
        let padded = match s.len() {
            4 => format!("{s}-01-01T00:00:00Z"),
            7 => format!("{s}-01T00:00:00Z"),
            10 => format!("{s}T00:00:00Z"),
            _ => return None,
        };
        OffsetDateTime::parse(&padded, &Rfc3339)
            .ok()
            .map(|t| Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    fn datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// FHIR `instant` text, e.g. `2026-11-28T15:26:20.123Z`.
    pub fn to_fhir(self) -> String {
        let t = self.datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    /// Seconds since the Unix epoch, for HTTP dates.
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

/// The source of "now".
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let t = OffsetDateTime::now_utc();
        Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct FixedClock(Arc<AtomicI64>);

impl FixedClock {
    pub fn new(at: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(at.0)))
    }

    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = Timestamp::parse("2026-11-28T15:26:20.123+01:00");
        assert_eq!(t.map(Timestamp::to_fhir).as_deref(), Some("2026-11-28T14:26:20.123Z"));
        assert_eq!(
            Timestamp::parse("2024-05").map(Timestamp::to_fhir).as_deref(),
            Some("2024-05-01T00:00:00.000Z")
        );
        assert!(Timestamp::parse("yesterday").is_none());
        let c = FixedClock::new(Timestamp::from_millis(1000));
        c.advance_millis(500);
        assert_eq!(c.now().millis(), 1500);
    }
}
