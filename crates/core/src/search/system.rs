//! System-level search, `GET [base]?_type=A,B&…`: one search run over several types, the
//! matches merged into one order and paged with one cursor. Each type's part is an ordinary
//! type search (its own parameters, access conditions and re-checks); a parameter must
//! mean something for every type searched, or the answer would silently ignore it for some.

use super::parse::Link;
use super::run::{CursorState, SearchOptions, SearchPage, recheck};
use crate::access::Perms;
use crate::crud::StoredResource;
use crate::{CoreError, Session};
use carevault_domain::ResourceType;
use carevault_storage::{SearchHit, SearchQuery, SortValue, Store};
use std::cmp::Ordering;
use std::collections::HashMap;

/// The most types a search across types with chains or `_has` may name: each type runs the
/// inner searches again.
const MAX_LINKED_TYPES: usize = 8;

/// What system-level cursors are bound to instead of a type (no type is named so).
pub(super) const SYSTEM_SCOPE: &str = "_system";

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::Invalid(msg.into())
}

/// The types `_type` names (every repetition), or `None` when it is absent.
fn named_types(pairs: &[(String, String)]) -> Result<Option<Vec<ResourceType>>, CoreError> {
    let mut out: Option<Vec<ResourceType>> = None;
    for (_, value) in pairs.iter().filter(|(k, _)| k == "_type") {
        let list = out.get_or_insert_with(Vec::new);
        for name in value.split(',') {
            let t: ResourceType = name
                .trim()
                .parse()
                .map_err(|_| bad("_type names an unknown resource type"))?;
            if !list.contains(&t) {
                list.push(t);
            }
        }
    }
    Ok(out)
}

/// Refuses what a search across types cannot answer soundly.
fn check_shape(pairs: &[(String, String)]) -> Result<(), CoreError> {
    for (k, v) in pairs {
        if k.starts_with("_include") || k.starts_with("_revinclude") {
            return Err(bad(format!(
                "`{k}` is not served in a search across types; search one type to include"
            )));
        }
        if k == "_sort" && !matches!(v.as_str(), "_lastUpdated" | "-_lastUpdated") {
            return Err(bad("a search across types sorts by _lastUpdated only"));
        }
    }
    Ok(())
}

/// The forward order of merged hits: the sort value (`_lastUpdated`, the only one allowed),
/// then the row id, which is unique across types — the order each type's query walks.
fn forward(a: &SearchHit, b: &SearchHit, desc: bool) -> Ordering {
    let by_sort = match (a.sort.first(), b.sort.first()) {
        (Some(SortValue::Int(x)), Some(SortValue::Int(y))) => x.cmp(y),
        _ => Ordering::Equal,
    };
    (if desc { by_sort.reverse() } else { by_sort }).then(a.rid.cmp(&b.rid))
}

/// One type's part of the search.
struct Part {
    rtype: ResourceType,
    req: super::SearchRequest,
    query: SearchQuery,
}

impl<S: Store> Session<'_, S> {
    /// Runs a search across the types `_type` names (or every type the caller may search).
    pub async fn search_system(&self, query: &str, opts: SearchOptions) -> Result<SearchPage, CoreError> {
        let (pairs, state, this) = self.resume(SYSTEM_SCOPE, query)?;
        check_shape(&pairs)?;
        let types = match named_types(&pairs)? {
            Some(types) => {
                for t in &types {
                    self.require(*t, Perms::SEARCH)?;
                }
                types
            }
            None => ResourceType::ALL
                .iter()
                .copied()
                .filter(|t| self.require(*t, Perms::SEARCH).is_ok())
                .collect(),
        };
        let Some(&first_type) = types.first() else {
            return Err(CoreError::Forbidden("this token may not search any resources".into()));
        };
        let rest: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "_type").cloned().collect();
        let many = types.len() > MAX_LINKED_TYPES;
        let mut parts = Vec::with_capacity(types.len());
        for rtype in types {
            let parser = self.parser(rtype, false);
            let mut req = parser.parse(&rest)?;
            if many && req.links.iter().any(|l| !matches!(l, Link::List { .. })) {
                return Err(bad(format!(
                    "a chained or _has search across types names at most {MAX_LINKED_TYPES} types in _type"
                )));
            }
            self.resolve_links(rtype, &mut req, 0).await?;
            let query = self.page_query(rtype, &req, &state)?;
            parts.push(Part { rtype, req, query });
        }
        let ignored = self.ignored_by_all(&parts, first_type, opts)?;
        let shape = &parts[0].req;
        let (count, want_total, summary_count) = (shape.count, shape.total, shape.summary_count);
        let desc = shape.sort.first().is_some_and(|(_, d)| *d);
        let total = if want_total {
            let mut sum = 0;
            for p in &parts {
                sum += self.store.search_count(&p.query).await?;
            }
            Some(sum)
        } else {
            None
        };
        if summary_count {
            return Ok(SearchPage::count_only(total, ignored, this));
        }
        let mut hits: Vec<(usize, SearchHit)> = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            hits.extend(self.store.search(&p.query).await?.into_iter().map(|h| (i, h)));
        }
        hits.sort_by(|a, b| forward(&a.1, &b.1, desc));
        let page_len = count as usize;
        let more = hits.len() > page_len;
        if more {
            if state.backwards {
                // The rows nearest the cursor are the last ones; one more than a page says
                // there is a page before them.
                hits.drain(..hits.len() - page_len);
            } else {
                hits.truncate(page_len);
            }
        }
        let resources = self.open_hits(&parts, &hits).await?;
        let position = |h: &SearchHit| Some((h.sort.clone(), h.rid));
        let base = |after, backwards| CursorState {
            query: state.query.clone(),
            after,
            backwards,
        };
        let next = match hits.last() {
            Some((_, last)) if more || state.backwards => {
                Some(self.seal_cursor(SYSTEM_SCOPE, &base(position(last), false))?)
            }
            _ => None,
        };
        let previous = match hits.first() {
            Some((_, first)) if (state.after.is_some() && !state.backwards) || (state.backwards && more) => {
                Some(self.seal_cursor(SYSTEM_SCOPE, &base(position(first), true))?)
            }
            _ => None,
        };
        let first = Some(self.seal_cursor(SYSTEM_SCOPE, &base(None, false))?);
        let total = total.or_else(|| (!more && state.after.is_none()).then_some(resources.len() as u64));
        let shape = &parts[0].req;
        Ok(SearchPage {
            resources,
            included: Vec::new(),
            total,
            summary_count: false,
            elements: shape.elements.clone(),
            without_text: shape.without_text,
            ignored,
            this,
            first,
            next,
            previous,
        })
    }

    /// Parameters no type searched understands are ignored (or, strictly, refused); one
    /// that some types understand and others not is refused, since it would filter some
    /// types and not others.
    fn ignored_by_all(
        &self,
        parts: &[Part],
        first_type: ResourceType,
        opts: SearchOptions,
    ) -> Result<Vec<String>, CoreError> {
        let mut names: Vec<&String> = parts.iter().flat_map(|p| p.req.ignored.iter()).collect();
        names.sort();
        names.dedup();
        let mut ignored = Vec::new();
        for name in names {
            let missing: Vec<ResourceType> = parts
                .iter()
                .filter(|p| !p.req.ignored.contains(name))
                .map(|p| p.rtype)
                .collect();
            if let Some(known) = missing.first() {
                let lacking = parts
                    .iter()
                    .find(|p| p.req.ignored.contains(name))
                    .map_or(first_type, |p| p.rtype);
                return Err(bad(format!(
                    "`{name}` is a search parameter of {known} but not of {lacking}; name in _type only types it applies to"
                )));
            }
            if opts.strict {
                return Err(bad(format!("unknown search parameter `{name}`")));
            }
            ignored.push(name.clone());
        }
        Ok(ignored)
    }

    /// Opens the page's matches, a type at a time, re-checks identifying conditions and
    /// masks what the caller's access masks; returns them in the page's order.
    async fn open_hits(&self, parts: &[Part], hits: &[(usize, SearchHit)]) -> Result<Vec<StoredResource>, CoreError> {
        let mut opened: HashMap<(usize, String), StoredResource> = HashMap::new();
        for (i, p) in parts.iter().enumerate() {
            let ids: Vec<String> = hits
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, h)| h.id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            for r in self.read_many(p.rtype, &ids).await? {
                if recheck(&p.req.rechecks, &r.body) {
                    opened.insert((i, r.id.to_string()), r);
                }
            }
        }
        Ok(hits
            .iter()
            .filter_map(|(i, h)| opened.remove(&(*i, h.id.clone())))
            .map(|r| self.masked(r))
            .collect())
    }
}
