//! The store's half of tallies (see `carevault_domain::search::tally`): what a version's
//! index adds to the counts (`tally_counts`) and what the index it replaces took away — read
//! back from the token and date rows being deleted, so nothing per resource is stored twice —
//! and the count a search of a tallied shape reads instead of walking its matches.

use crate::ResourceKey;
use crate::search::{Cond, Prefix, SearchQuery, SearchRow, param_key};
use crate::sql::{Arg, Dialect, Sql};
use carevault_domain::ResourceType;
use carevault_domain::search::tally::{self, day_bound, first_day, last_day};
use std::collections::{BTreeMap, BTreeSet};

/// How a resource's date of a pair was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// One date: its first and last day.
    Dated = 0,
    /// No date: counted only when the date is not asked about.
    Undated = 1,
    /// Several dates (never for the declared pairs, whose date is `0..1`): a code with such
    /// a resource is counted the slow way.
    Many = 2,
}

/// What one resource adds to one count: a row of `tally_counts` (but for its `n`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TallyRow {
    pub pkey: i64,
    pub system: String,
    pub code: String,
    pub kind: Kind,
    pub first_day: i64,
    pub last_day: i64,
}

/// The tally rows of a version's index rows: per pair of its type, one per distinct
/// (system, code) of the pair's token.
pub(crate) fn rows(key: &ResourceKey, index: &[SearchRow]) -> Vec<TallyRow> {
    let Ok(rtype) = key.rtype.parse::<ResourceType>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pair in tally::pairs_of(rtype) {
        let codes: BTreeSet<(&str, &str)> = index
            .iter()
            .filter_map(|r| match r {
                SearchRow::Token { param, system, code } if param == pair.token => {
                    Some((system.as_str(), code.as_str()))
                }
                _ => None,
            })
            .collect();
        if codes.is_empty() {
            continue;
        }
        let dates: BTreeSet<(i64, i64)> = index
            .iter()
            .filter_map(|r| match r {
                SearchRow::Date { param, lo, hi } if param == pair.date => Some((*lo, *hi)),
                _ => None,
            })
            .collect();
        let (kind, first, last) = match dates.iter().collect::<Vec<_>>().as_slice() {
            [] => (Kind::Undated, 0, 0),
            [(lo, hi)] => (Kind::Dated, first_day(*lo), last_day(*hi)),
            _ => (Kind::Many, 0, 0),
        };
        let pkey = param_key(&key.tenant, &key.rtype, &pair.key_name());
        out.extend(codes.into_iter().map(|(system, code)| TallyRow {
            pkey,
            system: system.to_owned(),
            code: code.to_owned(),
            kind,
            first_day: first,
            last_day: last,
        }));
    }
    out
}

/// The tally rows of an index being replaced, from its deleted token rows `(pkey, system,
/// code)` and date rows `(pkey, lo, hi)`: the same rows `rows` gave when it was written.
pub(crate) fn removed(key: &ResourceKey, tokens: &[(i64, String, String)], dates: &[(i64, i64, i64)]) -> Vec<TallyRow> {
    let Ok(rtype) = key.rtype.parse::<ResourceType>() else {
        return Vec::new();
    };
    let pkey = |param: &str| param_key(&key.tenant, &key.rtype, param);
    let mut index = Vec::new();
    for pair in tally::pairs_of(rtype) {
        let (tk, dk) = (pkey(pair.token), pkey(pair.date));
        index.extend(
            tokens
                .iter()
                .filter(|t| t.0 == tk)
                .map(|(_, system, code)| SearchRow::Token {
                    param: pair.token.to_owned(),
                    system: system.clone(),
                    code: code.clone(),
                }),
        );
        index.extend(dates.iter().filter(|d| d.0 == dk).map(|&(_, lo, hi)| SearchRow::Date {
            param: pair.date.to_owned(),
            lo,
            hi,
        }));
    }
    rows(key, &index)
}

/// The net change to each count of adding `added` and taking away `removed` (an update that
/// keeps its code and date changes nothing); zero changes left out.
pub(crate) fn net(added: Vec<TallyRow>, removed: Vec<TallyRow>) -> Vec<(TallyRow, i64)> {
    let mut out: BTreeMap<TallyRow, i64> = BTreeMap::new();
    for (rows, sign) in [(added, 1), (removed, -1)] {
        for row in rows {
            *out.entry(row).or_default() += sign;
        }
    }
    out.into_iter().filter(|(_, n)| *n != 0).collect()
}

/// A count a tally can answer: of one code (in one system, or any) of a tallied token,
/// perhaps within a date range whose bounds are day boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    pkey: i64,
    system: Option<String>,
    code: String,
    /// The date's prefix and the search range's first day and the day after its end.
    when: Option<(Prefix, i64, i64)>,
}

impl Ask {
    /// The ask `q` is, when its conditions are exactly a code of a tallied token and
    /// perhaps the pair's date (any prefix but `ne`, bounds at midnight): nothing else, so
    /// the caller's access adds no condition (the core adds its guard to every query; a
    /// guarded caller's count is never a tally's). `None` for every other search.
    pub(crate) fn of(q: &SearchQuery) -> Option<Ask> {
        let rtype = q.rtype.parse::<ResourceType>().ok()?;
        let mut token = None;
        let mut date = None;
        for c in &q.conds {
            match c {
                Cond::Token {
                    param,
                    system,
                    code: Some(code),
                } if token.is_none() => token = Some((param, system, code)),
                Cond::Date { param, prefix, lo, hi } if date.is_none() && *prefix != Prefix::Ne => {
                    date = Some((param, *prefix, day_bound(*lo)?, day_bound(*hi)?));
                }
                _ => return None,
            }
        }
        let (param, system, code) = token?;
        let pair = tally::answering(rtype, param, date.map(|(d, ..)| d.as_str()))?;
        Some(Ask {
            pkey: param_key(&q.tenant, &q.rtype, &pair.key_name()),
            system: system.clone(),
            code: code.clone(),
            when: date.map(|(_, prefix, lo, hi)| (prefix, lo, hi)),
        })
    }

    /// `SELECT system, kind, all rows, matching rows … GROUP BY system, kind` over `source`
    /// (the counts, or on PostgreSQL the counts and the deltas not yet folded in).
    pub(crate) fn sql(&self, dialect: Dialect, source: &str) -> Sql {
        let mut s = Sql::new(dialect);
        s.push("SELECT t.system, t.kind, CAST(sum(t.n) AS BIGINT), CAST(sum(CASE WHEN ");
        match self.when {
            None => s.push("1 = 1"),
            Some((prefix, lo, hi)) => {
                s.push(&format!("t.kind = {} AND ", Kind::Dated as i64));
                day_range(&mut s, prefix, lo, hi);
            }
        }
        s.push(&format!(
            " THEN t.n ELSE 0 END) AS BIGINT) FROM {source} t WHERE t.pkey = "
        ));
        s.arg(Arg::Int(self.pkey));
        s.push(" AND t.code = ");
        s.arg(Arg::Text(self.code.clone()));
        if let Some(system) = &self.system {
            s.push(" AND t.system = ");
            s.arg(Arg::Text(system.clone()));
        }
        s.push(" GROUP BY t.system, t.kind");
        s
    }

    /// The count from the rows of `sql`: `None` when the tally cannot answer exactly (a
    /// resource with several dates, or a code in several systems when any system is asked
    /// for: one resource might hold it in two).
    pub(crate) fn answer(&self, groups: &[(String, i64, i64, i64)]) -> Option<u64> {
        let live: Vec<&(String, i64, i64, i64)> = groups.iter().filter(|g| g.2 > 0).collect();
        if live.iter().any(|g| g.1 == Kind::Many as i64) {
            return None;
        }
        let systems: BTreeSet<&str> = live.iter().map(|g| g.0.as_str()).collect();
        if self.system.is_none() && systems.len() > 1 {
            return None;
        }
        u64::try_from(live.iter().map(|g| g.3).sum::<i64>()).ok()
    }
}

/// The stored range `[lo, hi)` against the search range `[L, H)`, as `Sql::range` writes it,
/// in days: with `L` and `H` at midnight, `lo >= L` is `first_day >= L/day`, `lo < H` is
/// `first_day < H/day`, `hi > H` is `last_day >= H/day` and `hi <= L` is `last_day < L/day`.
fn day_range(s: &mut Sql, prefix: Prefix, lo: i64, hi: i64) {
    let cmp = |s: &mut Sql, col: &str, op: &str, v: i64| {
        s.push(&format!("t.{col} {op} "));
        s.arg(Arg::Int(v));
    };
    s.push("(");
    match prefix {
        Prefix::Eq | Prefix::Ne => {
            cmp(s, "first_day", ">=", lo);
            s.push(" AND ");
            cmp(s, "last_day", "<", hi);
        }
        Prefix::Gt => cmp(s, "last_day", ">=", hi),
        Prefix::Lt => cmp(s, "first_day", "<", lo),
        Prefix::Ge => {
            cmp(s, "last_day", ">=", hi);
            s.push(" OR (");
            cmp(s, "first_day", ">=", lo);
            s.push(" AND ");
            cmp(s, "last_day", "<", hi);
            s.push(")");
        }
        Prefix::Le => {
            cmp(s, "first_day", "<", lo);
            s.push(" OR (");
            cmp(s, "first_day", ">=", lo);
            s.push(" AND ");
            cmp(s, "last_day", "<", hi);
            s.push(")");
        }
        Prefix::Sa => cmp(s, "first_day", ">=", hi),
        Prefix::Eb => cmp(s, "last_day", "<", lo),
        Prefix::Ap => {
            cmp(s, "first_day", "<", hi);
            s.push(" AND ");
            cmp(s, "last_day", ">=", lo);
        }
    }
    s.push(")");
}
