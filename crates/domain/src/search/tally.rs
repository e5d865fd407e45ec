//! Tallies: the counts a hospital asks of a whole population ("how many heart-rate
//! observations since 2005?") kept as they change, so that answering one costs the same at a
//! thousand patients as at ten thousand. A tally pairs a token parameter with a date
//! parameter of one type and counts the resources by (system, code, first day, last day) of
//! that date; a count of `code` alone, or of `code` and `date` with any prefix but `ne` at
//! day boundaries (every date search below a time of day), is then a sum over a few thousand
//! days instead of a walk over every match. Which pairs are tallied is this table; the
//! store keeps the counts and decides when a search has the shape a tally answers.

use crate::ResourceType;

/// Milliseconds in a day: the tally's unit of time (dates are milliseconds since the epoch,
/// UTC, see [`super::ranges`]).
pub const DAY_MS: i64 = 86_400_000;

/// One tallied pair: resources of `rtype` counted by the values of `token` and the day
/// range of `date`. `date` must be a parameter a resource has at most one value of (its
/// element is `0..1`); a resource that still yields several is counted as "many", and any
/// code with such a resource is counted the slow way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub rtype: ResourceType,
    pub token: &'static str,
    pub date: &'static str,
}

impl Pair {
    /// The name the store keys this pair's rows by (beside the parameter names, which hold
    /// no `@`).
    pub fn key_name(&self) -> String {
        format!("{}@{}", self.token, self.date)
    }
}

const fn pair(rtype: ResourceType, token: &'static str, date: &'static str) -> Pair {
    Pair { rtype, token, date }
}

/// The tallied pairs: the population counts of clinical reporting (observations and reports
/// by code and category over time, diagnoses by onset, procedures, prescriptions,
/// immunizations, encounters by class and type).
pub const PAIRS: &[Pair] = &[
    pair(ResourceType::Observation, "code", "date"),
    pair(ResourceType::Observation, "category", "date"),
    pair(ResourceType::Condition, "code", "onset-date"),
    pair(ResourceType::Procedure, "code", "date"),
    pair(ResourceType::DiagnosticReport, "code", "date"),
    pair(ResourceType::MedicationRequest, "code", "authoredon"),
    pair(ResourceType::Immunization, "vaccine-code", "date"),
    pair(ResourceType::Encounter, "class", "date"),
    pair(ResourceType::Encounter, "type", "date"),
];

/// The pairs of `rtype`.
pub fn pairs_of(rtype: ResourceType) -> impl Iterator<Item = &'static Pair> {
    PAIRS.iter().filter(move |p| p.rtype == rtype)
}

/// The pair that answers a count of `token` (and `date`, when given) on `rtype`: for a
/// token alone, the first pair of that token (every resource with the code has one row
/// in each of its pairs, dated or not).
pub fn answering(rtype: ResourceType, token: &str, date: Option<&str>) -> Option<&'static Pair> {
    pairs_of(rtype).find(|p| p.token == token && date.is_none_or(|d| p.date == d))
}

/// The day a stored range `[lo, hi)` starts in.
pub fn first_day(lo: i64) -> i64 {
    lo.div_euclid(DAY_MS)
}

/// The day the last instant of a stored range `[lo, hi)` falls in (a range ending at
/// midnight ends the day before).
pub fn last_day(hi: i64) -> i64 {
    hi.saturating_sub(1).div_euclid(DAY_MS)
}

/// A search range's bound as a day number, when it falls on a day boundary (a search to
/// the day, month or year does; one with a time of day does not).
pub fn day_bound(ms: i64) -> Option<i64> {
    (ms.rem_euclid(DAY_MS) == 0).then(|| ms.div_euclid(DAY_MS))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::search::params::{self, ParamKind};

    #[test]
    fn every_pair_names_a_token_and_a_date_parameter_of_its_type() {
        for p in PAIRS {
            let token = params::find(p.rtype, p.token).expect("token parameter");
            let date = params::find(p.rtype, p.date).expect("date parameter");
            assert_eq!(token.kind, ParamKind::Token, "{p:?}");
            assert_eq!(date.kind, ParamKind::Date, "{p:?}");
            assert!(!p.token.contains('@') && !p.date.contains('@'));
        }
    }

    #[test]
    fn days_are_counted_by_their_first_and_last_instant() {
        let day = |y, m, d| crate::search::ranges::date_range(&format!("{y:04}-{m:02}-{d:02}")).unwrap();
        let (lo, hi) = day(2005, 1, 1);
        assert_eq!(first_day(lo), last_day(hi), "a whole day is one day");
        assert_eq!(last_day(hi) + 1, first_day(hi), "midnight ends the day before");
        let before = crate::search::ranges::date_range("1969-12-31T23:59:59Z").unwrap();
        assert_eq!((first_day(before.0), last_day(before.1)), (-1, -1));
        assert_eq!(day_bound(lo), Some(first_day(lo)));
        assert_eq!(day_bound(lo + 1000), None);
        assert_eq!(
            answering(ResourceType::Observation, "code", None).map(|p| p.date),
            Some("date")
        );
        assert!(answering(ResourceType::Observation, "code", Some("issued")).is_none());
    }
}
