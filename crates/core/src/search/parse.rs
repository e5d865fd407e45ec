//! A search query string, parsed into storage conditions under the searchability contract.
//! Identifying parameters become blind-tag conditions plus a re-check on the decrypted
//! resource; clinical ones become plain conditions.

use super::{MAX_BLIND_PREFIX, MIN_BLIND_PREFIX, blind_input};
use crate::CoreError;
use carevault_crypto::IndexKey;
use carevault_domain::search::normalize::normalize;
use carevault_domain::search::ranges::{date_range, number_range};
use carevault_domain::search::{Class, ParamKind, SearchParam, class_of, params};
use carevault_domain::{ResourceId, ResourceType};
use carevault_storage::{Cond, Prefix, SortKey, Table, UriMatch};

/// A parsed search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub conds: Vec<Cond>,
    pub(crate) rechecks: Vec<Recheck>,
    pub sort: Vec<(SortKey, bool)>,
    pub count: u32,
    pub total: bool,
    pub summary_count: bool,
    pub elements: Option<Vec<String>>,
    /// `_summary=data`: every element but the narrative.
    pub without_text: bool,
    /// Names of parameters that were not understood and were ignored.
    pub ignored: Vec<String>,
    /// `_include` (and `_include:iterate`): resources the matches point to.
    pub includes: Vec<Include>,
    /// `_revinclude` (and `_revinclude:iterate`): resources that point to the matches.
    pub revincludes: Vec<RevInclude>,
    /// Chained parameters and `_has`, resolved by running their inner searches first.
    pub(crate) links: Vec<Link>,
}

/// One `_revinclude`: resources of `source` whose `param` points to a match (of type
/// `target` only, if given); with `iterate`, also to resources that earlier rounds added.
#[derive(Debug, Clone, Copy)]
pub struct RevInclude {
    pub source: ResourceType,
    pub param: &'static SearchParam,
    pub target: Option<ResourceType>,
    pub iterate: bool,
}

/// One `_include`: from resources of `source`, follow `param` (to `target` only, if given);
/// with `iterate`, also from resources that includes added.
#[derive(Debug, Clone, Copy)]
pub struct Include {
    pub source: ResourceType,
    pub param: &'static SearchParam,
    pub target: Option<ResourceType>,
    pub iterate: bool,
}

/// A condition that needs another search first.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// `param[:Type].rest=value`: the resources `param` points to must match `rest=value`.
    Chain {
        param: &'static SearchParam,
        targets: Vec<ResourceType>,
        rest: String,
        value: String,
    },
    /// `_has:Type:param:rest=value`: some `Type` whose `param` points here matches `rest=value`.
    Has {
        source: ResourceType,
        param: &'static SearchParam,
        rest: String,
        value: String,
    },
    /// `_list=id[,id]`: the resource is an entry of one of these Lists (as the caller sees them).
    List { lists: Vec<ResourceId> },
    /// The part of a `_filter` under `or`/`not`: one condition, once its chains are resolved.
    Filter(FilterNode),
}

/// A `_filter` combination, its comparisons parsed as searches of their own (none
/// identifying: see `filter.rs`).
#[derive(Debug, Clone)]
pub(crate) enum FilterNode {
    Leaf(Box<SearchRequest>),
    All(Vec<FilterNode>),
    Any(Vec<FilterNode>),
    Not(Box<FilterNode>),
}

/// An identifying condition to verify on the decrypted resource (any value may match).
#[derive(Debug, Clone)]
pub(crate) enum Recheck {
    String {
        param: &'static SearchParam,
        values: Vec<String>,
        exact: bool,
    },
    Token {
        param: &'static SearchParam,
        values: Vec<(Option<String>, String)>,
    },
    Date {
        param: &'static SearchParam,
        values: Vec<String>,
    },
    /// `:of-type`: an identifier of this type system, type code and value.
    OfType {
        param: &'static SearchParam,
        values: Vec<(String, String, String)>,
    },
}

pub const DEFAULT_COUNT: u32 = 20;
pub const MAX_COUNT: u32 = 1000;

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::Invalid(msg.into())
}

/// Splits on unescaped `sep`, then undoes FHIR's `\,`, `\|`, `\$` and `\\` escapes.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep => out.last_mut().map(|l| l.push(n)).unwrap_or(()),
                Some(n) => {
                    if let Some(l) = out.last_mut() {
                        l.push('\\');
                        l.push(n);
                    }
                }
                None => {}
            }
        } else if c == sep {
            out.push(String::new());
        } else if let Some(l) = out.last_mut() {
            l.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\,", ",")
        .replace("\\|", "|")
        .replace("\\$", "$")
        .replace("\\\\", "\\")
}

fn prefix_of(v: &str) -> (Prefix, &str) {
    let table = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (p, prefix) in table {
        if let Some(rest) = v.strip_prefix(p)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, v)
}

fn table_of(kind: ParamKind) -> Table {
    match kind {
        ParamKind::String => Table::String,
        ParamKind::Token => Table::Token,
        ParamKind::Reference => Table::Reference,
        ParamKind::Date => Table::Date,
        ParamKind::Number | ParamKind::Quantity => Table::Number,
        ParamKind::Uri => Table::Uri,
        ParamKind::Composite => Table::Token,
        ParamKind::Special => Table::Geo,
    }
}

/// Result-shaping and unsupported-but-known parameters.
const NOT_YET: &[&str] = &[
    "_include",
    "_revinclude",
    "_contained",
    "_containedType",
    "_query",
    "_has",
];

/// The most parameters one search (or one inner chain or `_has` search) may carry, includes
/// and result parameters counted. PostgreSQL's planner takes time that grows steeply with
/// the conditions of one statement (32 dates ANDed: 0.4 s; 48: 1.3 s; 99: 25 s, on a small
/// store), so an authenticated caller could otherwise hold the database for seconds.
const MAX_PARAMETERS: usize = 32;
/// The most keys `_sort` may name.
const MAX_SORT_KEYS: usize = 8;
/// The most values one parameter may list (comma = OR); `_id` may list more.
const MAX_ALTERNATIVES: usize = 200;
const MAX_IDS: usize = 1000;

/// Refuses a search too large to be a real one (a thousand ANDed names, a few thousand ORed
/// codes) with a 400, before it becomes a statement past the database's limits.
fn check_size(pairs: &[(String, String)]) -> Result<(), CoreError> {
    if pairs.len() > MAX_PARAMETERS {
        return Err(bad(format!("a search may have at most {MAX_PARAMETERS} parameters")));
    }
    for (name, value) in pairs {
        let values = value.matches(',').count() + 1;
        let most = if name == "_id" { MAX_IDS } else { MAX_ALTERNATIVES };
        if values > most {
            return Err(bad(format!("`{name}` may list at most {most} values")));
        }
    }
    Ok(())
}

pub(crate) struct Parser<'a> {
    pub rtype: ResourceType,
    pub blind: &'a IndexKey,
    pub strict: bool,
    pub now_ms: i64,
}

impl Parser<'_> {
    fn tag(&self, param: &str, kind: &str, value: &str) -> Vec<u8> {
        self.blind.tag(&blind_input(param, kind, value)).0.to_vec()
    }

    pub fn parse(&self, pairs: &[(String, String)]) -> Result<SearchRequest, CoreError> {
        check_size(pairs)?;
        let mut req = SearchRequest {
            conds: Vec::new(),
            rechecks: Vec::new(),
            sort: Vec::new(),
            count: DEFAULT_COUNT,
            total: false,
            summary_count: false,
            elements: None,
            without_text: false,
            ignored: Vec::new(),
            includes: Vec::new(),
            revincludes: Vec::new(),
            links: Vec::new(),
        };
        let mut weight = pairs.len();
        for (name, value) in pairs {
            match name.as_str() {
                "_format" | "_pretty" | "_cursor" => {}
                // Searching containers only is what every search here does.
                "_contained" if value == "false" => {}
                "_contained" => {
                    return Err(bad(
                        "_contained=true|both is not served: contained resources are not indexed on their own; search their container",
                    ));
                }
                "_containedType" => {}
                "_query" => return Err(bad("_query: this server defines no named queries")),
                "_count" => {
                    let n: u32 = value.parse().map_err(|_| bad("_count must be a whole number"))?;
                    if n == 0 {
                        req.summary_count = true;
                        req.total = true;
                    }
                    req.count = n.clamp(1, MAX_COUNT);
                }
                "_total" => match value.as_str() {
                    "none" => req.total = false,
                    "estimate" | "accurate" => req.total = true,
                    _ => return Err(bad("_total must be none, estimate or accurate")),
                },
                "_summary" => match value.as_str() {
                    "count" => {
                        req.summary_count = true;
                        req.total = true;
                    }
                    "false" => {}
                    "true" => req.elements = Some(super::summary::summary_elements(self.rtype)),
                    "data" => req.without_text = true,
                    "text" => req.elements = Some(super::summary::text_elements(self.rtype)),
                    _ => return Err(bad("_summary supports true, text, data, count and false")),
                },
                "_elements" => {
                    req.elements = Some(
                        value
                            .split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                }
                "_sort" => req.sort = self.sort(value)?,
                "_compartment" => {
                    // Patient/<id>: the resource is in that patient's compartment.
                    let id = value.strip_prefix("Patient/").unwrap_or(value);
                    let id = ResourceId::parse(id).map_err(|e| bad(e.to_string()))?;
                    req.conds.push(Cond::Reference {
                        param: super::COMPARTMENT.to_owned(),
                        target_type: Some("Patient".to_owned()),
                        target_id: id.to_string(),
                    });
                }
                "_list" => {
                    let mut lists = Vec::new();
                    for id in value.split(',') {
                        if id.starts_with('$') {
                            return Err(bad(
                                "functional lists ($current-problems…) are not supported; name a List by id",
                            ));
                        }
                        lists.push(ResourceId::parse(id).map_err(|_| bad("_list takes the ids of List resources"))?);
                    }
                    req.links.push(Link::List { lists });
                }
                "_filter" => {
                    // Each comparison counts toward the search's limit on parameters.
                    let e = super::filter::parse(self.rtype, value)?;
                    weight += e.comparisons().saturating_sub(1);
                    if weight > MAX_PARAMETERS {
                        return Err(bad(format!(
                            "a search may have at most {MAX_PARAMETERS} parameters, a filter's comparisons counted"
                        )));
                    }
                    self.filter(e, &mut req)?
                }
                "_include" | "_revinclude" => self.include(name == "_include", false, value, &mut req)?,
                "_include:iterate" => self.include(true, true, value, &mut req)?,
                "_revinclude:iterate" => self.include(false, true, value, &mut req)?,
                n if n.starts_with("_include:") || n.starts_with("_revinclude:") => {
                    return Err(bad(format!("`{n}`: the only modifier of includes is :iterate")));
                }
                _ => self.param(name, value, &mut req)?,
            }
        }
        Ok(req)
    }

    /// A `_filter`: its top-level conjuncts join the search's own conditions (identifying
    /// ones with their re-checks, as if written as parameters); anything under `or` or `not`
    /// becomes one composite condition, resolved when the search runs.
    fn filter(&self, e: super::filter::Expr, req: &mut SearchRequest) -> Result<(), CoreError> {
        use super::filter::Expr;
        match e {
            Expr::And(list) => list.into_iter().try_for_each(|x| self.filter(x, req)),
            Expr::Compare(pairs) => pairs.iter().try_for_each(|(n, v)| self.param(n, v, req)),
            other => {
                let node = self.filter_node(other)?;
                req.links.push(Link::Filter(node));
                Ok(())
            }
        }
    }

    fn filter_node(&self, e: super::filter::Expr) -> Result<FilterNode, CoreError> {
        use super::filter::Expr;
        let nodes = |list: Vec<Expr>| {
            list.into_iter()
                .map(|x| self.filter_node(x))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match e {
            Expr::Compare(pairs) => FilterNode::Leaf(Box::new(self.filter_leaf(&pairs)?)),
            Expr::Negated(pairs) => FilterNode::Not(Box::new(FilterNode::Leaf(Box::new(self.filter_leaf(&pairs)?)))),
            Expr::And(list) => FilterNode::All(nodes(list)?),
            Expr::Or(list) => FilterNode::Any(nodes(list)?),
            Expr::Not(x) => FilterNode::Not(Box::new(self.filter_node(*x)?)),
        })
    }

    /// One comparison under `or`/`not`, parsed as a search of its own.
    fn filter_leaf(&self, pairs: &[(String, String)]) -> Result<SearchRequest, CoreError> {
        let strict = Parser {
            rtype: self.rtype,
            blind: self.blind,
            strict: true,
            now_ms: self.now_ms,
        };
        let sub = strict.parse(pairs)?;
        if !sub.rechecks.is_empty() {
            let name = pairs
                .first()
                .map(|(n, _)| n.split(':').next().unwrap_or(n))
                .unwrap_or_default();
            return Err(bad(format!(
                "_filter: `{name}` is identifying, so it can only be ANDed at the top of a filter: its blind \
                 index proposes candidates that only the decrypted resource decides (docs/SEARCHABILITY.md)"
            )));
        }
        Ok(sub)
    }

    /// `subject:Patient.name=x` or `patient.identifier=x`: the part before the first dot.
    fn chain(&self, head: &str, rest: &str, value: &str, req: &mut SearchRequest) -> Result<(), CoreError> {
        let (name, modifier) = match head.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (head, None),
        };
        let p = params::find(self.rtype, name)
            .filter(|p| p.kind == ParamKind::Reference)
            .ok_or_else(|| {
                bad(format!(
                    "`{name}` is not a reference parameter of {} and cannot be chained",
                    self.rtype
                ))
            })?;
        let targets = match modifier {
            Some(t) => vec![
                t.parse::<ResourceType>()
                    .map_err(|_| bad("a chain names an unknown resource type"))?,
            ],
            None => p.targets.to_vec(),
        };
        req.links.push(Link::Chain {
            param: p,
            targets,
            rest: rest.to_owned(),
            value: value.to_owned(),
        });
        Ok(())
    }

    /// `_has:Observation:patient:code=x` (the part after `_has:`).
    fn has(&self, spec: &str, value: &str, req: &mut SearchRequest) -> Result<(), CoreError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(source), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("_has takes _has:Type:parameter:search=value"));
        };
        let source: ResourceType = source.parse().map_err(|_| bad("_has names an unknown resource type"))?;
        let p = params::find(source, name)
            .filter(|p| p.kind == ParamKind::Reference)
            .ok_or_else(|| bad(format!("`{name}` is not a reference parameter of {source}")))?;
        req.links.push(Link::Has {
            source,
            param: p,
            rest: rest.to_owned(),
            value: value.to_owned(),
        });
        Ok(())
    }

    /// `Type:param` or `Type:param:Target`; `*` is not supported yet.
    fn include(&self, forward: bool, iterate: bool, value: &str, req: &mut SearchRequest) -> Result<(), CoreError> {
        let parts: Vec<&str> = value.split(':').collect();
        let (source, name, target) = match parts.as_slice() {
            [s, n] => (*s, *n, None),
            [s, n, t] => (*s, *n, Some(*t)),
            _ => return Err(bad("_include and _revinclude take Type:parameter[:TargetType]")),
        };
        let source: ResourceType = source
            .parse()
            .map_err(|_| bad("_include names an unknown resource type"))?;
        let target = target
            .map(|t| {
                t.parse::<ResourceType>()
                    .map_err(|_| bad("_include names an unknown target type"))
            })
            .transpose()?;
        let chosen: Vec<&'static SearchParam> = if name == "*" {
            params::all(source).filter(|p| p.kind == ParamKind::Reference).collect()
        } else {
            let p = params::find(source, name)
                .filter(|p| p.kind == ParamKind::Reference)
                .ok_or_else(|| bad(format!("`{name}` is not a reference parameter of {source}")))?;
            vec![p]
        };
        for p in chosen {
            if forward {
                if source != self.rtype && !iterate {
                    return Err(bad("_include must start from the searched type; use _include:iterate"));
                }
                req.includes.push(Include {
                    source,
                    param: p,
                    target,
                    iterate,
                });
            } else if iterate || target.is_none_or(|t| t == self.rtype) {
                req.revincludes.push(RevInclude {
                    source,
                    param: p,
                    target,
                    iterate,
                });
            }
        }
        Ok(())
    }

    fn sort(&self, value: &str) -> Result<Vec<(SortKey, bool)>, CoreError> {
        if value.split(',').filter(|k| !k.trim().is_empty()).count() > MAX_SORT_KEYS {
            return Err(bad(format!("_sort may name at most {MAX_SORT_KEYS} keys")));
        }
        let mut out = Vec::new();
        for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let (desc, name) = match key.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, key),
            };
            match name {
                "_lastUpdated" => out.push((SortKey::LastUpdated, desc)),
                "_id" if !desc => {}
                _ => {
                    let p = params::find(self.rtype, name).ok_or_else(|| bad("_sort names an unknown parameter"))?;
                    if let Some([a, b]) = params::union_of(self.rtype, p.name) {
                        return Err(bad(format!("cannot sort by `{}`: sort by `{a}` or `{b}`", p.name)));
                    }
                    match class_of(self.rtype, p) {
                        Class::Identifying => {
                            return Err(bad(format!(
                                "cannot sort by `{}`: it is identifying and kept only as a blind index",
                                p.name
                            )));
                        }
                        Class::Clinical if p.kind == ParamKind::Special => {
                            return Err(bad(format!("cannot sort by `{}`", p.name)));
                        }
                        Class::Clinical => {}
                    }
                    out.push((
                        SortKey::Param {
                            table: table_of(p.kind),
                            param: p.name.to_owned(),
                        },
                        desc,
                    ));
                }
            }
        }
        Ok(out)
    }

    fn param(&self, raw_name: &str, value: &str, req: &mut SearchRequest) -> Result<(), CoreError> {
        let (name, modifier) = match raw_name.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (raw_name, None),
        };
        if let Some(rest) = raw_name.strip_prefix("_has:") {
            return self.has(rest, value, req);
        }
        if let Some((head, rest)) = raw_name.split_once('.') {
            return self.chain(head, rest, value, req);
        }
        if NOT_YET.contains(&name) {
            return Err(bad(format!("`{name}` is not supported yet")));
        }
        if matches!(name, "_text" | "_content") {
            return Err(bad(format!(
                "`{name}` is not served: free text (narratives, notes) is not indexed, since it holds \
                 identifying words (docs/SEARCHABILITY.md)"
            )));
        }
        let Some(p) = params::find(self.rtype, name) else {
            if self.strict {
                return Err(bad(format!("unknown search parameter `{name}` for {}", self.rtype)));
            }
            req.ignored.push(name.to_owned());
            return Ok(());
        };
        let class = class_of(self.rtype, p);
        if modifier == Some("missing") {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => return Err(bad(":missing takes true or false")),
            };
            let present = match (p.name, class) {
                ("_id", _) => return Err(bad("_id is never missing")),
                ("_lastUpdated", _) => return Err(bad("_lastUpdated is never missing")),
                (_, Class::Identifying) => Cond::Present {
                    table: Table::Blind,
                    param: p.name.to_owned(),
                },
                _ => Cond::Present {
                    table: table_of(p.kind),
                    param: p.name.to_owned(),
                },
            };
            let cond = if missing { Cond::Not(Box::new(present)) } else { present };
            req.conds.push(self.unite(p.name, cond));
            return Ok(());
        }
        let values: Vec<String> = split_escaped(value, ',');
        if values.iter().any(String::is_empty) {
            return Err(bad(format!("`{name}` has an empty value")));
        }
        let cond = match class {
            Class::Identifying => self.identifying(p, modifier, &values, req)?,
            _ => self.clinical(p, modifier, &values)?,
        };
        req.conds.push(self.unite(p.name, cond));
        Ok(())
    }

    /// A condition on a union parameter (`combo-code`: see `params::union_of`) as the same
    /// condition on either of its parts, whose rows it shares; any other condition as it is.
    fn unite(&self, name: &str, cond: Cond) -> Cond {
        match params::union_of(self.rtype, name) {
            Some(parts) => on_either(cond, name, parts),
            None => cond,
        }
    }

    fn identifying(
        &self,
        p: &'static SearchParam,
        modifier: Option<&str>,
        values: &[String],
        req: &mut SearchRequest,
    ) -> Result<Cond, CoreError> {
        let mut any = Vec::new();
        match (p.kind, modifier) {
            (ParamKind::String, None | Some("exact")) => {
                let exact = modifier == Some("exact");
                let mut checks = Vec::new();
                for v in values {
                    let v = unescape(v);
                    if exact {
                        any.push(Cond::Blind {
                            param: p.name.into(),
                            tag: self.tag(p.name, "x", &v),
                        });
                    } else {
                        let norm = normalize(&v);
                        let chars: Vec<char> = norm.chars().collect();
                        if chars.len() < MIN_BLIND_PREFIX {
                            return Err(bad(format!(
                                "`{}` is identifying: a search needs at least {MIN_BLIND_PREFIX} characters",
                                p.name
                            )));
                        }
                        let prefix: String = chars[..chars.len().min(MAX_BLIND_PREFIX)].iter().collect();
                        any.push(Cond::Blind {
                            param: p.name.into(),
                            tag: self.tag(p.name, "p", &prefix),
                        });
                    }
                    checks.push(v);
                }
                req.rechecks.push(Recheck::String {
                    param: p,
                    values: checks,
                    exact,
                });
            }
            (ParamKind::String, Some("contains")) => {
                return Err(bad(format!(
                    "`{}:contains` cannot be answered: `{}` is identifying and indexed only as keyed prefix tags \
                     (see docs/SEARCHABILITY.md)",
                    p.name, p.name
                )));
            }
            (ParamKind::Token, None | Some("not")) => {
                let mut checks = Vec::new();
                for v in values {
                    let (system, code) = token_value(v);
                    let Some(code) = code else {
                        return Err(bad(format!(
                            "`{}` is identifying: a search needs a value, not only a system",
                            p.name
                        )));
                    };
                    let tag = match &system {
                        Some(s) => self.tag(p.name, "t", &format!("{s}\0{code}")),
                        None => self.tag(p.name, "c", &code),
                    };
                    any.push(Cond::Blind {
                        param: p.name.into(),
                        tag,
                    });
                    checks.push((system, code));
                }
                if modifier == Some("not") {
                    return Ok(Cond::Not(Box::new(Cond::Any(any))));
                }
                req.rechecks.push(Recheck::Token {
                    param: p,
                    values: checks,
                });
            }
            (ParamKind::Token, Some("of-type")) => {
                let mut checks = Vec::new();
                for v in values {
                    let (system, code, value) = of_type_value(p.name, v)?;
                    any.push(Cond::Blind {
                        param: p.name.into(),
                        tag: self.tag(p.name, "y", &super::index::of_type_input(&system, &code, &value)),
                    });
                    checks.push((system, code, value));
                }
                req.rechecks.push(Recheck::OfType {
                    param: p,
                    values: checks,
                });
            }
            (ParamKind::Date, None) => {
                let mut checks = Vec::new();
                for v in values {
                    let (prefix, d) = prefix_of(v);
                    let date_only = matches!(d.len(), 4 | 7 | 10) && date_range(d).is_some();
                    if prefix != Prefix::Eq || !date_only {
                        return Err(bad(format!(
                            "`{}` is identifying: it is searchable by equality to a year, month or day only \
                             (see docs/SEARCHABILITY.md)",
                            p.name
                        )));
                    }
                    any.push(Cond::Blind {
                        param: p.name.into(),
                        tag: self.tag(p.name, "d", d),
                    });
                    checks.push(d.to_owned());
                }
                req.rechecks.push(Recheck::Date {
                    param: p,
                    values: checks,
                });
            }
            (_, Some(m)) => {
                return Err(bad(format!(
                    "the modifier `:{m}` is not supported on the identifying parameter `{}`",
                    p.name
                )));
            }
            _ => return Err(bad(format!("`{}` is not supported yet", p.name))),
        }
        // One value is its own condition: a lone blind tag can drive a page by joining its
        // index in row-id order and stop after the page.
        Ok(if any.len() == 1 { any.remove(0) } else { Cond::Any(any) })
    }

    fn clinical(&self, p: &'static SearchParam, modifier: Option<&str>, values: &[String]) -> Result<Cond, CoreError> {
        let param = p.name.to_owned();
        let unsupported = |m: &str| bad(format!("the modifier `:{m}` is not supported on `{}`", p.name));
        let mut any = Vec::new();
        if p.name == "_id" {
            if let Some(m) = modifier {
                return Err(unsupported(m));
            }
            let ids = values
                .iter()
                .map(|v| {
                    ResourceId::parse(v)
                        .map(|i| i.to_string())
                        .map_err(|e| bad(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Cond::Id(ids));
        }
        if p.name == "_lastUpdated" {
            if let Some(m) = modifier {
                return Err(unsupported(m));
            }
            for v in values {
                let (prefix, lo, hi) = self.date(v)?;
                any.push(Cond::LastUpdated { prefix, lo, hi });
            }
            return Ok(Cond::Any(any));
        }
        self.by_kind(p.name, p.kind, p.targets, param, modifier, values)
    }

    /// The condition of one parameter (or composite key) of a given kind.
    fn by_kind(
        &self,
        name: &str,
        kind: ParamKind,
        targets: &[ResourceType],
        param: String,
        modifier: Option<&str>,
        values: &[String],
    ) -> Result<Cond, CoreError> {
        let unsupported = |m: &str| bad(format!("the modifier `:{m}` is not supported on `{name}`"));
        let mut any = Vec::new();
        match kind {
            ParamKind::String => {
                for v in values {
                    let v = unescape(v);
                    any.push(match modifier {
                        None => Cond::StringPrefix {
                            param: param.clone(),
                            prefix: normalize(&v),
                        },
                        Some("exact") => Cond::StringExact {
                            param: param.clone(),
                            exact: v,
                        },
                        Some("contains") => Cond::StringContains {
                            param: param.clone(),
                            needle: normalize(&v),
                        },
                        Some(m) => return Err(unsupported(m)),
                    });
                }
            }
            ParamKind::Token => {
                for v in values {
                    match modifier {
                        None | Some("not") => {
                            let (system, code) = token_value(v);
                            any.push(Cond::Token {
                                param: param.clone(),
                                system,
                                code,
                            });
                        }
                        Some("text") => any.push(Cond::StringPrefix {
                            param: format!("{param}:text"),
                            prefix: normalize(&unescape(v)),
                        }),
                        Some("of-type") => {
                            let (system, code, value) = of_type_value(name, v)?;
                            any.push(Cond::Token {
                                param: format!("{param}:of-type"),
                                system: Some(format!("{system}|{code}")),
                                code: Some(value),
                            });
                        }
                        Some(m) => return Err(unsupported(m)),
                    }
                }
                if modifier == Some("not") {
                    return Ok(Cond::Not(Box::new(Cond::Any(any))));
                }
            }
            ParamKind::Reference if modifier == Some("identifier") => {
                // The reference's logical identifier (`subject.identifier`), indexed as keyed
                // blind tags: an identifier may well be a medical record number.
                for v in values {
                    let (system, code) = token_value(v);
                    let Some(code) = code else {
                        return Err(bad(format!("`{name}:identifier` needs a value, not only a system")));
                    };
                    let tag_param = format!("{param}:identifier");
                    let tag = match &system {
                        Some(s) => self.tag(&tag_param, "t", &format!("{s}\0{code}")),
                        None => self.tag(&tag_param, "c", &code),
                    };
                    any.push(Cond::Blind { param: tag_param, tag });
                }
            }
            ParamKind::Reference => {
                let type_modifier = match modifier {
                    None => None,
                    Some(m) => match m.parse::<ResourceType>() {
                        Ok(t) => Some(t.as_str().to_owned()),
                        Err(_) => return Err(unsupported(m)),
                    },
                };
                // A bare id on a parameter with one target type means that type (only such
                // references are indexed under it), which lets the reference drive in id order.
                let implied = match targets {
                    [only] => Some(only.as_str().to_owned()),
                    _ => None,
                };
                for v in values {
                    let v = unescape(v);
                    let parts: Vec<&str> = v.trim_end_matches('/').rsplit('/').collect();
                    let (t, id) = match parts.as_slice() {
                        [id] => (type_modifier.clone().or_else(|| implied.clone()), (*id).to_owned()),
                        [id, t, ..] if t.parse::<ResourceType>().is_ok() => (Some((*t).to_owned()), (*id).to_owned()),
                        _ => (None, v.clone()),
                    };
                    if v.contains("://") && t.is_none() {
                        any.push(Cond::Reference {
                            param: param.clone(),
                            target_type: Some(String::new()),
                            target_id: v,
                        });
                    } else {
                        any.push(Cond::Reference {
                            param: param.clone(),
                            target_type: t,
                            target_id: id,
                        });
                    }
                }
            }
            ParamKind::Date => {
                if let Some(m) = modifier {
                    return Err(unsupported(m));
                }
                for v in values {
                    let (prefix, lo, hi) = self.date(v)?;
                    any.push(Cond::Date {
                        param: param.clone(),
                        prefix,
                        lo,
                        hi,
                    });
                }
            }
            ParamKind::Number | ParamKind::Quantity => {
                if let Some(m) = modifier {
                    return Err(unsupported(m));
                }
                for v in values {
                    let (prefix, rest) = prefix_of(v);
                    let parts = split_escaped(rest, '|');
                    let (number, system, code) = match parts.as_slice() {
                        [n] => (n.as_str(), None, None),
                        [n, s, c] if kind == ParamKind::Quantity => (
                            n.as_str(),
                            Some(s.clone()).filter(|s| !s.is_empty()),
                            Some(c.clone()).filter(|c| !c.is_empty()),
                        ),
                        _ => {
                            return Err(bad(format!(
                                "`{}` takes a number{}",
                                name,
                                if kind == ParamKind::Quantity {
                                    " or number|system|code"
                                } else {
                                    ""
                                }
                            )));
                        }
                    };
                    let (value, mut lo, mut hi) =
                        number_range(number).ok_or_else(|| bad(format!("`{}` takes a number", name)))?;
                    if prefix == Prefix::Ap {
                        let spread = (value.abs() * 0.1).max(hi - lo);
                        lo = value - spread;
                        hi = value + spread;
                    }
                    any.push(Cond::Number {
                        param: param.clone(),
                        prefix,
                        value,
                        lo,
                        hi,
                        system,
                        code,
                    });
                }
            }
            ParamKind::Uri => {
                let how = match modifier {
                    None => UriMatch::Exact,
                    Some("below") => UriMatch::Below,
                    Some("above") => UriMatch::Above,
                    Some(m) => return Err(unsupported(m)),
                };
                for v in values {
                    any.push(Cond::Uri {
                        param: param.clone(),
                        uri: unescape(v),
                        how,
                    });
                }
            }
            ParamKind::Composite => {
                if modifier.is_some() {
                    return Err(bad(format!("`{name}` takes no modifier")));
                }
                let Some(p) = params::find(self.rtype, name) else {
                    return Err(bad("unknown composite"));
                };
                let [(ParamKind::Token, _), (second, _)] = p.components else {
                    return Err(bad(format!("`{name}` is not supported yet")));
                };
                for v in values {
                    let parts = split_escaped(v, '$');
                    let [first, rest] = parts.as_slice() else {
                        return Err(bad(format!("`{name}` takes `code$value`")));
                    };
                    let (system, code) = token_value(first);
                    let Some(code) = code else {
                        return Err(bad(format!("`{name}` needs a code before `$`")));
                    };
                    let key = composite_key(name, system.as_deref(), &code);
                    any.push(self.by_kind(name, *second, &[], key, None, std::slice::from_ref(rest))?);
                }
            }
            ParamKind::Special => {
                if let Some(m) = modifier {
                    return Err(unsupported(m));
                }
                for v in values {
                    any.push(near(param.clone(), v)?);
                }
            }
        }
        Ok(if any.len() == 1 { any.remove(0) } else { Cond::Any(any) })
    }

    /// A date search value: prefix and the range its precision gives (widened for `ap`).
    fn date(&self, v: &str) -> Result<(Prefix, i64, i64), CoreError> {
        let (prefix, d) = prefix_of(v);
        let (mut lo, mut hi) =
            date_range(d).ok_or_else(|| bad("a date search value must be a FHIR date or dateTime"))?;
        if prefix == Prefix::Ap {
            let spread = ((self.now_ms - lo).abs() / 10).max(86_400_000);
            lo -= spread;
            hi += spread;
        }
        Ok((prefix, lo, hi))
    }
}

/// `cond`, whose leaves name the union parameter `name` (alone or as the head of a
/// composite key or of `:text`), with each leaf asked of either part.
fn on_either(cond: Cond, name: &str, parts: [&str; 2]) -> Cond {
    match cond {
        Cond::Not(c) => Cond::Not(Box::new(on_either(*c, name, parts))),
        // An OR of ORs is one OR: a flat list can drive a query and be counted.
        Cond::Any(list) => Cond::Any(
            list.into_iter()
                .flat_map(|c| match on_either(c, name, parts) {
                    Cond::Any(inner) => inner,
                    other => vec![other],
                })
                .collect(),
        ),
        Cond::All(list) => Cond::All(list.into_iter().map(|c| on_either(c, name, parts)).collect()),
        leaf => Cond::Any(
            parts
                .iter()
                .map(|part| {
                    let mut c = leaf.clone();
                    if let Some(param) = param_of(&mut c)
                        && let Some(rest) = param.strip_prefix(name)
                        && (rest.is_empty() || rest.starts_with(['$', ':']))
                    {
                        *param = format!("{part}{rest}");
                    }
                    c
                })
                .collect(),
        ),
    }
}

/// The parameter a leaf condition is about.
fn param_of(c: &mut Cond) -> Option<&mut String> {
    match c {
        Cond::Token { param, .. }
        | Cond::TokenAny { param, .. }
        | Cond::StringPrefix { param, .. }
        | Cond::StringExact { param, .. }
        | Cond::StringContains { param, .. }
        | Cond::Blind { param, .. }
        | Cond::ReferenceIn { param, .. }
        | Cond::Reference { param, .. }
        | Cond::Date { param, .. }
        | Cond::Number { param, .. }
        | Cond::Uri { param, .. }
        | Cond::Near { param, .. }
        | Cond::Present { param, .. } => Some(param),
        Cond::LastUpdated { .. }
        | Cond::Id(_)
        | Cond::ReferencedFrom { .. }
        | Cond::Not(_)
        | Cond::Any(_)
        | Cond::All(_) => None,
    }
}

/// The index key of a composite: the parameter and its first component's code (with its
/// system, or `*` for any system).
pub(crate) fn composite_key(name: &str, system: Option<&str>, code: &str) -> String {
    format!("{name}${}|{code}", system.unwrap_or("*"))
}

/// Mean radius of the Earth (IUGG), in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;
/// The distance `near` takes when the value gives none (FHIR leaves it to the server).
pub const DEFAULT_NEAR_KM: f64 = 5.0;

/// `near=latitude|longitude|distance|units` (units `km` by default, or `m`, `[mi_i]`): the
/// positions within that great-circle distance of the point.
fn near(param: String, value: &str) -> Result<Cond, CoreError> {
    let parts = split_escaped(value, '|');
    let number = |s: Option<&String>, what: &str| -> Result<Option<f64>, CoreError> {
        match s.map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| bad(format!("near: the {what} must be a number"))),
        }
    };
    if parts.len() > 4 {
        return Err(bad("near takes latitude|longitude|distance|units"));
    }
    let (Some(lat), Some(lon)) = (number(parts.first(), "latitude")?, number(parts.get(1), "longitude")?) else {
        return Err(bad("near takes latitude|longitude|distance|units"));
    };
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(bad("near: latitude must lie in [-90, 90] and longitude in [-180, 180]"));
    }
    let distance = number(parts.get(2), "distance")?.unwrap_or(DEFAULT_NEAR_KM);
    if distance < 0.0 {
        return Err(bad("near: the distance must not be negative"));
    }
    let km = match parts.get(3).map(|u| u.trim()).filter(|u| !u.is_empty()) {
        None | Some("km") => distance,
        Some("m") => distance / 1000.0,
        Some("[mi_i]" | "mi") => distance * 1.609_344,
        Some(_) => return Err(bad("near: the units must be km, m or [mi_i]")),
    };
    // The angle the distance subtends at the centre; a position within it has a latitude
    // within the same angle of the point's, and a unit vector whose dot product with the
    // point's is at least its cosine.
    let angle = (km / EARTH_RADIUS_KM).min(std::f64::consts::PI);
    let degrees = angle.to_degrees();
    Ok(Cond::Near {
        param,
        lat_lo: (lat - degrees).max(-90.0),
        lat_hi: (lat + degrees).min(90.0),
        unit: carevault_storage::unit_vector(lat, lon),
        // Less a few units of rounding, so that a position at the point itself is within
        // a distance of 0 (the dot product of a unit vector with itself may round below 1);
        // that widens the circle by about a decimetre, and only near zero distance.
        min_dot: angle.cos() - 4.0 * f64::EPSILON,
    })
}

/// `:of-type`'s value: the identifier type's system and code, then the identifier's value.
fn of_type_value(name: &str, v: &str) -> Result<(String, String, String), CoreError> {
    match split_escaped(v, '|').as_slice() {
        [system, code, value] if !system.is_empty() && !code.is_empty() && !value.is_empty() => {
            Ok((system.clone(), code.clone(), value.clone()))
        }
        _ => Err(bad(format!(
            "`{name}:of-type` takes the type's system and code and the value: system|code|value"
        ))),
    }
}

/// `system|code`, `|code` (no system), `code` (any system) or `system|` (any code).
fn token_value(v: &str) -> (Option<String>, Option<String>) {
    let parts = split_escaped(v, '|');
    match parts.as_slice() {
        [code] => (None, Some(code.clone())),
        [system, code] => (Some(system.clone()), Some(code.clone()).filter(|c| !c.is_empty())),
        _ => (None, Some(unescape(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_prefixes() {
        assert_eq!(split_escaped("a,b\\,c", ','), vec!["a", "b,c"]);
        assert_eq!(token_value("http://x|1"), (Some("http://x".into()), Some("1".into())));
        assert_eq!(token_value("|1"), (Some(String::new()), Some("1".into())));
        assert_eq!(token_value("1"), (None, Some("1".into())));
        assert_eq!(token_value("sys|"), (Some("sys".into()), None));
        assert_eq!(prefix_of("ge2020"), (Prefix::Ge, "2020"));
        assert_eq!(prefix_of("2020"), (Prefix::Eq, "2020"));
        assert_eq!(prefix_of("eq"), (Prefix::Eq, "eq"));
    }
}
