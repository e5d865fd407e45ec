//! Running a search: one page from the store, each match opened and (for identifying
//! conditions) re-checked, and sealed cursors for the links.

use super::parse::{Link, Parser, Recheck};
use crate::access::Perms;
use crate::crud::StoredResource;
use crate::{CoreError, Session};
use carevault_domain::query::parse_query;
use carevault_domain::search::extract::param_values;
use carevault_domain::search::normalize::normalize;
use carevault_domain::search::{IndexValue, path};
use carevault_domain::{ResourceId, ResourceType};
use carevault_storage::{SearchHit, SearchQuery, SortValue, Store};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;

/// How the caller wants unknown parameters handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchOptions {
    /// `Prefer: handling=strict`: unknown parameters are an error.
    pub strict: bool,
}

/// One page of results and the cursors around it.
#[derive(Debug)]
pub struct SearchPage {
    pub resources: Vec<StoredResource>,
    /// Resources added by `_include` and `_revinclude`.
    pub included: Vec<StoredResource>,
    pub total: Option<u64>,
    pub summary_count: bool,
    pub elements: Option<Vec<String>>,
    /// `_summary=data`: drop the narrative.
    pub without_text: bool,
    pub ignored: Vec<String>,
    pub this: Option<String>,
    pub first: Option<String>,
    pub next: Option<String>,
    pub previous: Option<String>,
}

impl SearchPage {
    /// The answer to `_summary=count`: the total alone, no resources and no links.
    pub(super) fn count_only(total: Option<u64>, ignored: Vec<String>, this: Option<String>) -> Self {
        SearchPage {
            resources: Vec::new(),
            included: Vec::new(),
            total,
            summary_count: true,
            elements: None,
            without_text: false,
            ignored,
            this,
            first: None,
            next: None,
            previous: None,
        }
    }
}

/// A request's search: its parameters, where its page starts, and the cursor it came with.
pub(super) type Resumed = (Vec<(String, String)>, CursorState, Option<String>);

/// What a cursor holds: the query as the client sent it (never shown in links) and where
/// the page starts.
pub(super) struct CursorState {
    pub(super) query: String,
    pub(super) after: Option<(Vec<SortValue>, i64)>,
    pub(super) backwards: bool,
}

fn sort_json(v: &SortValue) -> Value {
    match v {
        SortValue::Int(i) => json!({"i": i}),
        SortValue::Real(f) => json!({"r": f}),
        SortValue::Text(t) => json!({"t": t}),
    }
}

fn sort_from_json(v: &Value) -> Option<SortValue> {
    if let Some(i) = v.get("i").and_then(Value::as_i64) {
        return Some(SortValue::Int(i));
    }
    if let Some(f) = v.get("r").and_then(Value::as_f64) {
        return Some(SortValue::Real(f));
    }
    v.get("t")
        .and_then(Value::as_str)
        .map(|t| SortValue::Text(t.to_owned()))
}

impl<S: Store> Session<'_, S> {
    /// Seals a cursor bound to the tenant and `scope` (the searched type, or the system
    /// scope), so it cannot be replayed against another search.
    pub(super) fn seal_cursor(&self, scope: &str, state: &CursorState) -> Result<String, CoreError> {
        let after = state
            .after
            .as_ref()
            .map(|(values, rid)| json!({"s": values.iter().map(sort_json).collect::<Vec<_>>(), "r": rid}));
        let body = json!({"q": state.query, "a": after, "b": state.backwards});
        let bytes = serde_json::to_vec(&body).map_err(|_| CoreError::Integrity)?;
        Ok(self
            .cursor_key
            .seal(self.rng.as_ref(), &format!("{}|{scope}", self.tenant), &bytes)?)
    }

    /// The store query of one page of `req` from `state`'s position, under the caller's
    /// access conditions; one row more than the page, to tell whether another follows.
    pub(super) fn page_query(
        &self,
        rtype: ResourceType,
        req: &super::SearchRequest,
        state: &CursorState,
    ) -> Result<SearchQuery, CoreError> {
        Ok(SearchQuery {
            tenant: self.tenant.as_str().to_owned(),
            rtype: rtype.as_str().to_owned(),
            conds: self.guarded(rtype, Perms::SEARCH, req.conds.clone())?,
            sort: req.sort.clone(),
            after: state.after.clone(),
            backwards: state.backwards,
            limit: req.count + 1,
        })
    }

    /// The parser of searches of `rtype` for this session (its blind-index key and clock).
    pub(crate) fn parser(&self, rtype: ResourceType, strict: bool) -> Parser<'_> {
        Parser {
            rtype,
            blind: &self.search_index,
            strict,
            now_ms: self.clock.now().millis(),
        }
    }

    /// The search a request asks for: its own query, or the one its `_cursor` carries (with
    /// the position and the cursor itself, for the `self` link).
    pub(super) fn resume(&self, scope: &str, query: &str) -> Result<Resumed, CoreError> {
        let pairs = parse_query(query).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let Some(cursor) = pairs.iter().find(|(k, _)| k == "_cursor").map(|(_, v)| v.clone()) else {
            let state = CursorState {
                query: query.to_owned(),
                after: None,
                backwards: false,
            };
            return Ok((pairs, state, None));
        };
        let state = self.open_cursor(scope, &cursor)?;
        let pairs = parse_query(&state.query).map_err(|e| CoreError::Invalid(e.to_string()))?;
        Ok((pairs, state, Some(cursor)))
    }

    pub(super) fn open_cursor(&self, scope: &str, text: &str) -> Result<CursorState, CoreError> {
        let invalid = || CoreError::Invalid("the paging cursor is not valid for this search".into());
        let bytes = self
            .cursor_key
            .open(&format!("{}|{scope}", self.tenant), text)
            .map_err(|_| invalid())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        let query = v.get("q").and_then(Value::as_str).ok_or_else(invalid)?.to_owned();
        let after = match v.get("a") {
            Some(Value::Object(a)) => {
                let values = a
                    .get("s")
                    .and_then(Value::as_array)
                    .ok_or_else(invalid)?
                    .iter()
                    .map(sort_from_json)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(invalid)?;
                let rid = a.get("r").and_then(Value::as_i64).ok_or_else(invalid)?;
                Some((values, rid))
            }
            _ => None,
        };
        let backwards = v.get("b").and_then(Value::as_bool).unwrap_or(false);
        Ok(CursorState {
            query,
            after,
            backwards,
        })
    }

    /// Runs a search of `rtype` given the query string of the request.
    pub async fn search(&self, rtype: ResourceType, query: &str, opts: SearchOptions) -> Result<SearchPage, CoreError> {
        self.require(rtype, Perms::SEARCH)?;
        let (pairs, state, this) = self.resume(rtype.as_str(), query)?;
        let parser = self.parser(rtype, opts.strict);
        let mut req = parser.parse(&pairs)?;
        self.resolve_links(rtype, &mut req, 0).await?;
        let mut q = self.page_query(rtype, &req, &state)?;
        let total = if req.total {
            Some(self.store.search_count(&q).await?)
        } else {
            None
        };
        if req.summary_count {
            return Ok(SearchPage::count_only(total, req.ignored, this));
        }
        let mut hits: Vec<SearchHit> = self.store.search(&q).await?;
        let more = hits.len() > req.count as usize;
        if more {
            if state.backwards {
                hits.remove(0);
            } else {
                hits.truncate(req.count as usize);
            }
        }
        q.limit = req.count;
        let mut resources = self.read_hits(rtype, &hits).await?;
        resources.retain(|r| recheck(&req.rechecks, &r.body));
        let resources: Vec<StoredResource> = resources.into_iter().map(|r| self.masked(r)).collect();
        let position = |h: &SearchHit| Some((h.sort.clone(), h.rid));
        let base = |after, backwards| CursorState {
            query: state.query.clone(),
            after,
            backwards,
        };
        let next = match hits.last() {
            Some(last) if more || state.backwards => {
                Some(self.seal_cursor(rtype.as_str(), &base(position(last), false))?)
            }
            _ => None,
        };
        let previous = match hits.first() {
            Some(first) if (state.after.is_some() && !state.backwards) || (state.backwards && more) => {
                Some(self.seal_cursor(rtype.as_str(), &base(position(first), true))?)
            }
            _ => None,
        };
        let first = Some(self.seal_cursor(rtype.as_str(), &base(None, false))?);
        let total = total.or_else(|| (!more && state.after.is_none()).then_some(resources.len() as u64));
        let included = self
            .includes(rtype, &req, &resources)
            .await?
            .into_iter()
            .map(|r| self.masked(r))
            .collect();
        Ok(SearchPage {
            resources,
            included,
            total,
            summary_count: false,
            elements: req.elements,
            without_text: req.without_text,
            ignored: req.ignored,
            this,
            first,
            next,
            previous,
        })
    }
}

/// The most matches an inner (chained or `_has`) search may have.
const MAX_INNER: u32 = 10_000;
/// How deep chains and `_has` may nest.
const MAX_DEPTH: usize = 4;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, CoreError>> + Send + 'a>>;

impl<S: Store> Session<'_, S> {
    /// Turns each chain and `_has` of `req` into a plain condition by running its inner search.
    pub(super) fn resolve_links<'a>(
        &'a self,
        rtype: ResourceType,
        req: &'a mut super::SearchRequest,
        depth: usize,
    ) -> Boxed<'a, ()> {
        Box::pin(async move {
            if !req.links.is_empty() && depth >= MAX_DEPTH {
                return Err(CoreError::Invalid(format!(
                    "chains and _has may nest at most {MAX_DEPTH} deep"
                )));
            }
            for link in std::mem::take(&mut req.links) {
                let cond = match link {
                    Link::Chain {
                        param,
                        targets,
                        rest,
                        value,
                    } => {
                        let mut any = Vec::new();
                        for t in targets {
                            let ids = self
                                .inner_ids(t, vec![(rest.clone(), value.clone())], depth + 1)
                                .await?;
                            any.push(carevault_storage::Cond::ReferenceIn {
                                param: param.name.to_owned(),
                                target_type: Some(t.as_str().to_owned()),
                                target_ids: ids,
                            });
                        }
                        carevault_storage::Cond::Any(any)
                    }
                    Link::Has {
                        source,
                        param,
                        rest,
                        value,
                    } => {
                        let mut ids = Vec::new();
                        for sid in self.inner_ids(source, vec![(rest, value)], depth + 1).await? {
                            let Ok(sid) = carevault_domain::ResourceId::parse(&sid) else {
                                continue;
                            };
                            let crate::ReadOutcome::Found(r) = self.read_raw(source, &sid).await? else {
                                continue;
                            };
                            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                                continue;
                            };
                            for v in param_values(param, &body) {
                                if let IndexValue::Reference { rtype: t, id } = v
                                    && t == rtype.as_str()
                                    && !ids.contains(&id)
                                {
                                    ids.push(id);
                                }
                            }
                        }
                        carevault_storage::Cond::Id(ids)
                    }
                    Link::List { lists } => carevault_storage::Cond::Id(self.list_entries(rtype, &lists).await?),
                    Link::Filter(node) => match simplify(self.filter_cond(rtype, node, depth).await?) {
                        // Its conjuncts join the search's own, so that one of them can drive.
                        carevault_storage::Cond::All(list) => {
                            req.conds.extend(list);
                            continue;
                        }
                        c => c,
                    },
                };
                req.conds.push(cond);
            }
            Ok(())
        })
    }

    /// The condition of a `_filter` combination, each comparison's chains resolved.
    fn filter_cond<'a>(
        &'a self,
        rtype: ResourceType,
        node: super::parse::FilterNode,
        depth: usize,
    ) -> Boxed<'a, carevault_storage::Cond> {
        use super::parse::FilterNode;
        use carevault_storage::Cond;
        Box::pin(async move {
            Ok(match node {
                FilterNode::Leaf(mut sub) => {
                    self.resolve_links(rtype, &mut sub, depth).await?;
                    Cond::All(sub.conds)
                }
                FilterNode::Not(x) => Cond::Not(Box::new(self.filter_cond(rtype, *x, depth).await?)),
                FilterNode::All(list) => {
                    let mut all = Vec::with_capacity(list.len());
                    for x in list {
                        all.push(self.filter_cond(rtype, x, depth).await?);
                    }
                    Cond::All(all)
                }
                FilterNode::Any(list) => {
                    let mut any = Vec::with_capacity(list.len());
                    for x in list {
                        any.push(self.filter_cond(rtype, x, depth).await?);
                    }
                    Cond::Any(any)
                }
            })
        })
    }

    /// Ids of the `rtype` entries of these Lists, those the caller cannot see or that are
    /// gone left out (as are entries marked deleted); no hint whether a List exists.
    async fn list_entries(&self, rtype: ResourceType, lists: &[ResourceId]) -> Result<Vec<String>, CoreError> {
        let mut ids = Vec::new();
        for list in lists {
            let crate::ReadOutcome::Found(r) = self.read_raw(ResourceType::List, list).await? else {
                continue;
            };
            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                continue;
            };
            let entries = body
                .get("entry")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for entry in entries {
                if entry.get("deleted").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let Some(reference) = entry.pointer("/item/reference").and_then(Value::as_str) else {
                    continue;
                };
                if let carevault_domain::Reference::Local { rtype: t, id, .. } =
                    carevault_domain::Reference::parse(reference)
                    && t == rtype
                    && !ids.iter().any(|have: &String| have == id.as_str())
                    && ids.len() < MAX_INNER as usize
                {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// Ids of live resources of `rtype` matching a search query string (conditional
    /// operations); at most `MAX_INNER`, identifying conditions re-checked.
    pub async fn matching_ids(&self, rtype: ResourceType, query: &str) -> Result<Vec<ResourceId>, CoreError> {
        let pairs: Vec<(String, String)> = parse_query(query)
            .map_err(|e| CoreError::Invalid(e.to_string()))?
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "_count" | "_sort" | "_format"))
            .collect();
        if pairs.is_empty() {
            return Err(CoreError::Invalid(
                "a conditional operation needs at least one condition".into(),
            ));
        }
        let ids = self.inner_ids(rtype, pairs, 0).await?;
        Ok(ids.iter().filter_map(|i| ResourceId::parse(i).ok()).collect())
    }

    /// Ids of `rtype` matching an inner search (identifying conditions re-checked).
    fn inner_ids<'a>(
        &'a self,
        rtype: ResourceType,
        pairs: Vec<(String, String)>,
        depth: usize,
    ) -> Boxed<'a, Vec<String>> {
        Box::pin(async move {
            let parser = self.parser(rtype, true);
            let mut req = parser.parse(&pairs)?;
            self.resolve_links(rtype, &mut req, depth).await?;
            // The inner search is limited like any other: a chain or `_has` can't be used to
            // learn about resources the caller may not search.
            let q = SearchQuery {
                tenant: self.tenant.as_str().to_owned(),
                rtype: rtype.as_str().to_owned(),
                conds: self.guarded(rtype, Perms::SEARCH, req.conds.clone())?,
                sort: Vec::new(),
                after: None,
                backwards: false,
                limit: MAX_INNER + 1,
            };
            let hits = self.store.search(&q).await?;
            if hits.len() > MAX_INNER as usize {
                return Err(CoreError::Invalid(format!(
                    "a chained or _has search matched more than {MAX_INNER} resources; narrow it"
                )));
            }
            if req.rechecks.is_empty() {
                return Ok(hits.into_iter().map(|h| h.id).collect());
            }
            let mut out = Vec::new();
            for h in hits {
                let Ok(id) = carevault_domain::ResourceId::parse(&h.id) else {
                    continue;
                };
                if let crate::ReadOutcome::Found(r) = self.read_raw(rtype, &id).await?
                    && recheck(&req.rechecks, &r.body)
                {
                    out.push(h.id);
                }
            }
            Ok(out)
        })
    }
}

/// How many rounds `_include:iterate` and `_revinclude:iterate` follow.
const MAX_INCLUDE_ROUNDS: usize = 4;

/// The most resources one `_revinclude` adds to a page.
const MAX_REVINCLUDE: u32 = 1000;

impl<S: Store> Session<'_, S> {
    /// Resources the page's matches point to (`_include`) and that point to them (`_revinclude`).
    async fn includes(
        &self,
        rtype: ResourceType,
        req: &super::SearchRequest,
        page: &[StoredResource],
    ) -> Result<Vec<StoredResource>, CoreError> {
        let mut seen: std::collections::HashSet<(ResourceType, String)> =
            page.iter().map(|r| (r.rtype, r.id.to_string())).collect();
        let mut out = Vec::new();
        // Includes from the matches, then (for `:iterate`) from what the last round added.
        let mut from: Vec<StoredResource> = page.to_vec();
        for round in 0..MAX_INCLUDE_ROUNDS {
            let mut added = Vec::new();
            // Forward includes: the targets of this round, read a type at a time.
            let mut wanted: std::collections::BTreeMap<ResourceType, Vec<String>> = Default::default();
            for inc in req.includes.iter().filter(|i| round == 0 || i.iterate) {
                for r in from.iter().filter(|r| r.rtype == inc.source) {
                    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                        continue;
                    };
                    for v in param_values(inc.param, &body) {
                        let IndexValue::Reference { rtype: t, id } = v else {
                            continue;
                        };
                        let Ok(t) = t.parse::<ResourceType>() else { continue };
                        if inc.target.is_some_and(|want| want != t)
                            || carevault_domain::ResourceId::parse(&id).is_err()
                            || !seen.insert((t, id.clone()))
                        {
                            continue;
                        }
                        wanted.entry(t).or_default().push(id);
                    }
                }
            }
            for (t, ids) in wanted {
                added.extend(self.read_visible(t, &ids).await?);
            }
            for rev in req.revincludes.iter().filter(|r| round == 0 || r.iterate) {
                // Types the caller may not read are left out of includes, not an error.
                let Ok(guard) = self.guard_conds(rev.source, Perms::READ) else {
                    continue;
                };
                // Round 0 points at the page (all of the searched type); later rounds at what
                // the previous round added, grouped by type.
                let mut targets: std::collections::BTreeMap<ResourceType, Vec<String>> = Default::default();
                for r in &from {
                    if rev.target.is_none_or(|t| t == r.rtype) && (round > 0 || r.rtype == rtype) {
                        targets.entry(r.rtype).or_default().push(r.id.to_string());
                    }
                }
                for (t, ids) in targets {
                    let q = SearchQuery {
                        tenant: self.tenant.as_str().to_owned(),
                        rtype: rev.source.as_str().to_owned(),
                        conds: [carevault_storage::Cond::ReferenceIn {
                            param: rev.param.name.to_owned(),
                            target_type: Some(t.as_str().to_owned()),
                            target_ids: ids,
                        }]
                        .into_iter()
                        .chain(guard.iter().cloned())
                        .collect(),
                        sort: Vec::new(),
                        after: None,
                        backwards: false,
                        limit: MAX_REVINCLUDE,
                    };
                    let hits: Vec<SearchHit> = self
                        .store
                        .search(&q)
                        .await?
                        .into_iter()
                        .filter(|hit| seen.insert((rev.source, hit.id.clone())))
                        .collect();
                    added.extend(self.read_hits(rev.source, &hits).await?);
                }
            }
            if added.is_empty() {
                break;
            }
            out.extend(added.iter().cloned());
            from = added;
        }
        Ok(out)
    }
}

/// A filter's condition without needless nesting: a one-item `All` or `Any` is its item, and
/// an `Any` inside an `Any` (an `All` inside an `All`) joins its parent's list — so that an OR
/// of codes reaches the planner as the OR-list it can drive from. (`Any([])` is false and
/// `All([])` true, so dropping an empty one inside its own kind changes nothing.)
fn simplify(c: carevault_storage::Cond) -> carevault_storage::Cond {
    use carevault_storage::Cond;
    let flatten = |list: Vec<Cond>, any: bool| {
        let mut out = Vec::with_capacity(list.len());
        for x in list {
            match (simplify(x), any) {
                (Cond::Any(inner), true) | (Cond::All(inner), false) => out.extend(inner),
                (y, _) => out.push(y),
            }
        }
        out
    };
    match c {
        Cond::Any(list) => {
            let mut out = flatten(list, true);
            if out.len() == 1 { out.remove(0) } else { Cond::Any(out) }
        }
        Cond::All(list) => {
            let mut out = flatten(list, false);
            if out.len() == 1 { out.remove(0) } else { Cond::All(out) }
        }
        Cond::Not(x) => Cond::Not(Box::new(simplify(*x))),
        other => other,
    }
}

/// Verifies identifying conditions on the decrypted body: blind tags are truncated and
/// prefixes capped, so the index proposes and this decides.
pub(super) fn recheck(checks: &[Recheck], body: &[u8]) -> bool {
    if checks.is_empty() {
        return true;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    checks.iter().all(|c| match c {
        Recheck::String { param, values, exact } => {
            let have = param_values(param, &v);
            values.iter().any(|want| {
                let want_norm = normalize(want);
                have.iter().any(|h| match h {
                    IndexValue::String(s) if *exact => s == want,
                    IndexValue::String(s) => normalize(s).starts_with(&want_norm),
                    _ => false,
                })
            })
        }
        Recheck::Token { param, values } => {
            let have = param_values(param, &v);
            values.iter().any(|(system, code)| {
                have.iter().any(|h| match h {
                    IndexValue::Token { system: s, code: c } => {
                        c == code && system.as_ref().is_none_or(|want| want == s)
                    }
                    _ => false,
                })
            })
        }
        Recheck::OfType { param, values } => {
            let have = carevault_domain::search::extract::identifier_types(param, &v);
            values.iter().any(|want| have.contains(want))
        }
        Recheck::Date { param, values } => {
            let written: Vec<&str> = param
                .paths
                .iter()
                .flat_map(|p| path::select(&v, p))
                .filter_map(Value::as_str)
                .collect();
            values
                .iter()
                .any(|want| written.iter().any(|w| w.starts_with(want.as_str())))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::simplify;
    use carevault_storage::Cond;

    fn id(s: &str) -> Cond {
        Cond::Id(vec![s.to_owned()])
    }

    #[test]
    fn simplify_flattens_without_changing_the_meaning() {
        let nested = Cond::Any(vec![
            Cond::All(vec![id("a")]),
            Cond::Any(vec![id("b"), Cond::Any(vec![id("c")])]),
        ]);
        assert_eq!(
            format!("{:?}", simplify(nested)),
            format!("{:?}", Cond::Any(vec![id("a"), id("b"), id("c")]))
        );
        let mixed = Cond::All(vec![
            Cond::All(vec![id("a"), id("b")]),
            Cond::Not(Box::new(Cond::All(vec![id("c")]))),
            Cond::Any(vec![id("d"), Cond::All(vec![id("e"), id("f")])]),
        ]);
        assert_eq!(
            format!("{:?}", simplify(mixed)),
            format!(
                "{:?}",
                Cond::All(vec![
                    id("a"),
                    id("b"),
                    Cond::Not(Box::new(id("c"))),
                    Cond::Any(vec![id("d"), Cond::All(vec![id("e"), id("f")])]),
                ])
            )
        );
        // False and true stay what they are.
        assert_eq!(
            format!("{:?}", simplify(Cond::Any(vec![]))),
            format!("{:?}", Cond::Any(vec![]))
        );
        assert_eq!(
            format!("{:?}", simplify(Cond::Any(vec![Cond::Any(vec![]), id("a")]))),
            format!("{:?}", id("a"))
        );
    }
}
