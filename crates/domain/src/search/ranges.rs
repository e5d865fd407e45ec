//! The ranges FHIR's implicit precision gives a value: a date `2020-05` is all of May 2020,
//! a number `1.5` is [1.45, 1.55). Dates are milliseconds since the epoch, UTC, half-open.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

pub const MIN_MS: i64 = i64::MIN / 2;
pub const MAX_MS: i64 = i64::MAX / 2;

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn day_start(y: i32, m: u8, d: u8) -> Option<i64> {
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    Some(ms(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc()))
}

/// The half-open range `[lo, hi)` of a FHIR date, dateTime or instant.
pub fn date_range(s: &str) -> Option<(i64, i64)> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    match s.len() {
        4 => {
            let y = num(0..4)? as i32;
            Some((day_start(y, 1, 1)?, day_start(y + 1, 1, 1)?))
        }
        7 => {
            let y = num(0..4)? as i32;
            let m = num(5..7)? as u8;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some((day_start(y, m, 1)?, day_start(ny, nm, 1)?))
        }
        10 => {
            let lo = day_start(num(0..4)? as i32, num(5..7)? as u8, num(8..10)? as u8)?;
            Some((lo, lo + 86_400_000))
        }
        _ => {
            // A dateTime: precision to the second, or to the millisecond with a fraction.
            let t = OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
                // FHIR allows a dateTime to the minute without seconds? No: hh:mm:ss is
                // required when a time is present; accept a missing zone as UTC.
                OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok()
            })?;
            let lo = ms(t);
            let width = if s.contains('.') { 1 } else { 1000 };
            Some((lo, lo + width))
        }
    }
}

/// The range of a Period (open ends reach to the ends of time).
pub fn period_range(start: Option<&str>, end: Option<&str>) -> Option<(i64, i64)> {
    let lo = match start {
        Some(s) => date_range(s)?.0,
        None => MIN_MS,
    };
    let hi = match end {
        Some(s) => date_range(s)?.1,
        None => MAX_MS,
    };
    if start.is_none() && end.is_none() {
        None
    } else {
        Some((lo, hi))
    }
}

/// The value and implicit range of a decimal as written: `100` → [99.5, 100.5),
/// `1.50` → [1.495, 1.505).
pub fn number_range(s: &str) -> Option<(f64, f64, f64)> {
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let mantissa = s.split(['e', 'E']).next().unwrap_or(s);
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    // With an exponent, FHIR counts significant figures: `1e2` is [95, 105).
    let half = match s.split_once(['e', 'E']).and_then(|(_, e)| e.parse::<i32>().ok()) {
        Some(exp) => 0.5 * 10f64.powi(exp - decimals - 1),
        None => 0.5 * 10f64.powi(-decimals),
    };
    Some((v, v - half, v + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let (lo, hi) = date_range("2020").unwrap_or((0, 0));
        assert_eq!(hi - lo, 366 * 86_400_000);
        let (lo, hi) = date_range("2020-02").unwrap_or((0, 0));
        assert_eq!(hi - lo, 29 * 86_400_000);
        let (lo, hi) = date_range("2020-12").unwrap_or((0, 0));
        assert_eq!(hi - lo, 31 * 86_400_000);
        assert_eq!(date_range("2020-02-03").map(|(l, h)| h - l), Some(86_400_000));
        assert_eq!(date_range("2016-03-22T21:57:18-04:00").map(|(l, h)| h - l), Some(1000));
        assert_eq!(date_range("2016-03-22T21:57:18.123Z").map(|(l, h)| h - l), Some(1));
        assert_eq!(
            date_range("2016-03-23T01:57:18Z").map(|r| r.0),
            date_range("2016-03-22T21:57:18-04:00").map(|r| r.0)
        );
        assert!(date_range("2020-13").is_none());
        assert!(date_range("garbage").is_none());
        assert!(period_range(Some("2020"), None).is_some_and(|(_, h)| h == MAX_MS));
    }

    #[test]
    fn numbers() {
        assert_eq!(number_range("100"), Some((100.0, 99.5, 100.5)));
        let (_, lo, hi) = number_range("1.50").unwrap_or_default();
        assert!((lo - 1.495).abs() < 1e-12 && (hi - 1.505).abs() < 1e-12);
        let (_, lo, hi) = number_range("1e2").unwrap_or_default();
        assert!((lo - 95.0).abs() < 1e-9 && (hi - 105.0).abs() < 1e-9);
        assert!(number_range("x").is_none());
    }
}
