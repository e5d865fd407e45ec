//! Bulk export's `_typeFilter`: each value is a list of `[type]?[search]` queries; a type
//! with filters exports only what matches one of them (they combine with OR). Each query is
//! parsed like any search of its type (identifying parameters through blind tags and
//! re-checked on the decrypted resource), its chains and `_has` resolved at kick-off, with
//! the caller's own access limits.

use super::parse::Recheck;
use super::run::recheck;
use crate::{CoreError, Session};
use carevault_domain::ResourceType;
use carevault_domain::query::parse_query;
use carevault_storage::{Cond, Store};

/// One `_typeFilter` query, parsed.
#[derive(Debug, Clone)]
pub struct TypeFilter {
    pub(crate) rtype: ResourceType,
    pub(crate) conds: Vec<Cond>,
    rechecks: Vec<Recheck>,
}

impl TypeFilter {
    /// Whether a candidate's decrypted body passes the identifying conditions' re-check.
    pub(crate) fn admits(&self, body: &[u8]) -> bool {
        recheck(&self.rechecks, body)
    }
}

/// Parameters that shape a search's result rather than select: not allowed in a filter.
const RESULT_PARAMS: [&str; 11] = [
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_cursor",
];

/// The queries of one (decoded) `_typeFilter` value: split at each comma that starts another
/// `[type]?` — a client that encoded each query on its own leaves its inner commas as `%2C`,
/// which the first decoding turns into commas, so a plain split would cut a value list.
pub(crate) fn split(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in value.match_indices(',') {
        let rest = &value[i + 1..];
        let starts_query = rest
            .split_once('?')
            .is_some_and(|(t, _)| t.parse::<ResourceType>().is_ok());
        if starts_query {
            out.push(&value[start..i]);
            start = i + 1;
        }
    }
    out.push(&value[start..]);
    out.into_iter().map(str::trim).filter(|q| !q.is_empty()).collect()
}

impl<S: Store> Session<'_, S> {
    /// Parses one filter query; `allowed` are the types the export may cover. With `strict`
    /// (the Bulk Data default), a parameter the server does not know is an error.
    pub(crate) async fn type_filter(
        &self,
        text: &str,
        allowed: &[ResourceType],
        strict: bool,
    ) -> Result<TypeFilter, CoreError> {
        let bad = |m: &str| CoreError::Invalid(m.to_owned());
        let (t, query) = text
            .split_once('?')
            .ok_or_else(|| bad("each _typeFilter is a search: [type]?[parameters]"))?;
        let rtype: ResourceType = t
            .parse()
            .map_err(|_| bad("a _typeFilter names an unknown resource type"))?;
        if !allowed.contains(&rtype) {
            return Err(bad("a _typeFilter names a type this export does not cover"));
        }
        let pairs = parse_query(query).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if pairs.is_empty() {
            return Err(bad("a _typeFilter needs at least one search parameter"));
        }
        if pairs.iter().any(|(k, _)| RESULT_PARAMS.contains(&k.as_str())) {
            return Err(bad(
                "a _typeFilter takes search parameters only (no _include, _sort, _count, _summary, _elements)",
            ));
        }
        let mut req = self.parser(rtype, strict).parse(&pairs)?;
        self.resolve_links(rtype, &mut req, 0).await?;
        Ok(TypeFilter {
            rtype,
            conds: req.conds,
            rechecks: req.rechecks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_value_splits_at_each_query_only() {
        assert_eq!(
            split("Observation?code=1,2&status=final,Patient?gender=female"),
            ["Observation?code=1,2&status=final", "Patient?gender=female"]
        );
        assert_eq!(split("Observation?code=a,b"), ["Observation?code=a,b"]);
        assert_eq!(
            split("Observation?code=a,Nonsense?x=1"),
            ["Observation?code=a,Nonsense?x=1"]
        );
        assert_eq!(split(",Patient?gender=male"), ["Patient?gender=male"]);
    }
}
