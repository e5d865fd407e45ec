//! One SQL builder for both dialects: search conditions, sort keys and keyset paging become
//! the same SQL text, with `?` placeholders for SQLite and `$n` for PostgreSQL.

use crate::search::{Cond, Prefix, SearchQuery, SortKey, Table, UriMatch, param_key};

/// A bound argument.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    Real(f64),
    Blob(Vec<u8>),
    /// A list of texts bound as one value: a JSON array on SQLite (read with `json_each`), a
    /// `text[]` on PostgreSQL.
    TextList(Vec<String>),
}

/// A list longer than this (the ids a chain's inner search found, say: up to 10,000 each) is
/// bound as one array value rather than a placeholder per value, so that no search reaches
/// the databases' limits on placeholders (32,766 on SQLite, 65,535 on PostgreSQL).
const LIST_AS_ARRAY: usize = 64;

/// The kind of value a sort key yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortType {
    Int,
    Real,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    dialect: Dialect,
    /// The tenant and type being searched, folded into each condition's parameter key.
    tenant: String,
    rtype: String,
    /// Whether conditions are written as correlated probes (`EXISTS … x.rid = r.rid`) rather
    /// than as the uncorrelated row-id list that drives the query.
    correlated: bool,
    /// Whether a condition is written bare, `SELECT <this> FROM <table> x WHERE …`: `1` to
    /// count its index rows (`probe`), `DISTINCT x.rid` to list the resources it matches
    /// (`count`).
    bare: Option<&'static str>,
    /// Whether the condition being written is the joined driver (see `Driver::Joined`): only
    /// its column tests, on the alias `d`.
    joined: bool,
    /// A page resumed by row id alone: the row id it resumes after, and whether it walks
    /// backwards. Each index probe repeats the bound (`x.rid > ?`), which the outer condition
    /// already implies: PostgreSQL does not carry an inequality across `x.rid = r.rid`, and
    /// without it merged the owner index from its first row for every page of a walk.
    resume: Option<(i64, bool)>,
}

/// Whether a condition reads index tables only, naming the resource by its row id alone
/// (not by its id or its update time, which live in the resource and version rows).
fn index_only(c: &Cond) -> bool {
    match c {
        Cond::Id(_) | Cond::ReferencedFrom { .. } | Cond::LastUpdated { .. } => false,
        Cond::Not(c) => index_only(c),
        Cond::Any(list) | Cond::All(list) => list.iter().all(index_only),
        _ => true,
    }
}

/// How the driving condition enters a page query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    /// No driver: the query walks the type in row-id order, probing each row.
    Walk,
    /// `r.rid IN (SELECT x.rid …)`: the engine lists the matching row ids, then visits them.
    List(usize),
    /// `FROM <table> d JOIN resources r ON r.rid = d.rid … ORDER BY d.rid`: the driver's value
    /// index, read in row-id order, feeds a nested loop that stops after a page. Only for an
    /// equality that binds every value column (then each resource has at most one such row
    /// and the index is ordered by row id): a blind tag, a typed reference, a code with its
    /// system.
    Joined(usize),
}

/// A driver matching at least this many index rows is dense: walking the type in row-id order
/// and probing finds a page sooner than listing every match first.
pub(crate) const DENSE_DRIVER: u32 = 20_000;

const INT_HI: i64 = i64::MAX / 2;
const INT_LO: i64 = i64::MIN / 2;
const REAL_HI: f64 = 1e300;
const REAL_LO: f64 = -1e300;
const TEXT_HI: &str = "\u{10FFFF}";

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            text: String::new(),
            args: Vec::new(),
            dialect,
            tenant: String::new(),
            rtype: String::new(),
            correlated: false,
            bare: None,
            joined: false,
            resume: None,
        }
    }

    pub(crate) fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// Appends a placeholder for `a`.
    pub(crate) fn arg(&mut self, a: Arg) {
        self.args.push(a);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => self.text.push_str(&format!("${}", self.args.len())),
        }
    }

    /// ` AND <alias>.<column><op>`: the alias is `d` for the joined driver, `x` otherwise.
    fn col_test(&mut self, column: &str, op: &str) {
        let alias = if self.joined { "d" } else { "x" };
        self.push(&format!(" AND {alias}.{column}{op}"));
    }

    fn text_arg(&mut self, s: &str) {
        self.arg(Arg::Text(s.to_owned()));
    }

    /// `(?, ?, …)` with one text argument each (the caller ensures the list is not empty).
    fn text_list(&mut self, values: &[String]) {
        if values.len() > LIST_AS_ARRAY {
            let (open, close) = match self.dialect {
                Dialect::Sqlite => ("(SELECT value FROM json_each(", "))"),
                Dialect::Postgres => ("(SELECT unnest(", "::text[]))"),
            };
            self.push(open);
            self.arg(Arg::TextList(values.to_vec()));
            self.push(close);
            return;
        }
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text_arg(v);
        }
        self.push(")");
    }

    /// One condition on an index table, in one of two forms. Driving: `r.rid IN (SELECT x.rid
    /// FROM <table> x WHERE x.pkey = ? AND <rest>)`, uncorrelated, answered once from the value
    /// index; the query then visits only the listed rows. Correlated: `EXISTS (SELECT 1 FROM
    /// <table> x WHERE x.rid = r.rid AND +x.pkey = ? AND <rest>)`, a probe of the owner index
    /// (a resource's own few rows) for each row the query visits; on SQLite the unary `+`
    /// keeps it from probing the value index instead, which would scan every row of a common
    /// value.
    /// `pkey` names tenant, type and parameter at once.
    fn exists(&mut self, table: Table, param: &str, rest: impl FnOnce(&mut Sql)) {
        let key = Arg::Int(param_key(&self.tenant, &self.rtype, param));
        if self.joined {
            self.push("d.pkey = ");
            self.arg(key);
            rest(self);
            return;
        }
        if let Some(select) = self.bare {
            self.push(&format!("SELECT {select} FROM {} x WHERE x.pkey = ", table.name()));
            self.arg(key);
            rest(self);
            return;
        }
        if self.correlated {
            // SQLite only: PostgreSQL chooses indexes by its statistics, and the `+` would
            // hide them (it then misjudged a dense condition as rare, 0.7 ms → 400 ms).
            let plus = if self.dialect == Dialect::Sqlite { "+" } else { "" };
            self.push(&format!(
                "EXISTS (SELECT 1 FROM {} x WHERE x.rid = r.rid AND {plus}x.pkey = ",
                table.name()
            ));
        } else {
            self.push(&format!(
                "r.rid IN (SELECT x.rid FROM {} x WHERE x.pkey = ",
                table.name()
            ));
        }
        self.arg(key);
        rest(self);
        if let Some((after, backwards)) = self.resume {
            self.push(if backwards { " AND x.rid < " } else { " AND x.rid > " });
            self.arg(Arg::Int(after));
        }
        self.push(")");
    }

    /// `SELECT c.rid …`: the resources in `patient`'s compartment (the Patient included), from
    /// the compartment rows of each of `types`.
    fn compartment_rids(&mut self, patient: &str, types: &[String]) {
        self.push("SELECT c.rid FROM search_reference c WHERE c.pkey IN (");
        for (i, t) in types.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            let key = param_key(&self.tenant, t, crate::COMPARTMENT_PARAM);
            self.arg(Arg::Int(key));
        }
        if types.is_empty() {
            self.push("NULL");
        }
        self.push(") AND c.target_id = ");
        self.text_arg(patient);
        self.push(" AND c.target_type = ");
        self.text_arg("Patient");
    }

    /// The types the resources in `patient`'s compartment refer to (by any indexed
    /// reference), each once.
    pub fn referenced_types(&mut self, tenant: &str, patient: &str, compartment_types: &[String]) {
        self.tenant = tenant.to_owned();
        self.push("SELECT DISTINCT x.target_type FROM search_reference x WHERE x.rid IN (");
        self.compartment_rids(patient, compartment_types);
        self.push(")");
    }

    /// The condition that should drive a query: the one likely to match fewest rows, by kind
    /// (a resource id, a reference to one resource, a blind tag, a code, a string, a uri).
    /// Presence, negations and `ne` never drive: they are probed.
    pub fn driver(q: &SearchQuery) -> Option<usize> {
        q.conds
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Self::drive_rank(c).map(|r| (r, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// Whether condition `i` is on the update time (`_lastUpdated`, or an OR-list of them).
    pub fn on_update_time(q: &SearchQuery, i: usize) -> bool {
        match q.conds.get(i) {
            Some(Cond::LastUpdated { .. }) => true,
            Some(Cond::Any(list)) => !list.is_empty() && list.iter().all(|c| matches!(c, Cond::LastUpdated { .. })),
            _ => false,
        }
    }

    /// How well a condition drives (lower is better), or `None`. An OR-list drives when every
    /// alternative does (it lists the union).
    fn drive_rank(c: &Cond) -> Option<u8> {
        match c {
            Cond::Any(list) if !list.is_empty() => list
                .iter()
                .map(Self::drive_rank)
                .collect::<Option<Vec<_>>>()
                .and_then(|r| r.into_iter().max()),
            Cond::Id(_) | Cond::ReferencedFrom { .. } => Some(0),
            Cond::Reference { .. } | Cond::ReferenceIn { .. } => Some(1),
            Cond::Blind { .. } => Some(2),
            Cond::Token { code: Some(_), .. } => Some(3),
            Cond::StringExact { .. } => Some(4),
            Cond::StringPrefix { .. } => Some(5),
            Cond::Uri {
                how: UriMatch::Exact, ..
            } => Some(6),
            // A range drives when nothing better does: walking a large type to probe a
            // narrow date would visit every row.
            Cond::Date { prefix, .. } | Cond::Number { prefix, .. } if *prefix != Prefix::Ne => Some(7),
            // The update time drives from below (what changed since) or as a window; "before"
            // matches nearly everything (an export's upper bound), so it is only probed.
            Cond::LastUpdated {
                prefix: Prefix::Eq | Prefix::Gt | Prefix::Ge | Prefix::Sa | Prefix::Ap,
                ..
            } => Some(7),
            _ => None,
        }
    }

    /// `SELECT count(*)` of at most `limit` index rows matching condition `i`, when that is a
    /// code, string, uri, date or number condition (or an OR-list of them): how dense a driver is, for
    /// choosing between driving by it and walking the type in row-id order. `false` when the
    /// condition is of another kind.
    pub fn probe(&mut self, q: &SearchQuery, i: usize, limit: u32) -> bool {
        let countable = |c: &Cond| match c {
            Cond::Token { .. } | Cond::StringPrefix { .. } | Cond::StringExact { .. } | Cond::Uri { .. } => true,
            Cond::Date { prefix, .. } | Cond::Number { prefix, .. } | Cond::LastUpdated { prefix, .. } => {
                *prefix != Prefix::Ne
            }
            _ => false,
        };
        let alternatives: Vec<&Cond> = match q.conds.get(i) {
            Some(Cond::Any(list)) if !list.is_empty() && list.iter().all(countable) => list.iter().collect(),
            Some(c) if countable(c) => vec![c],
            _ => return false,
        };
        self.tenant = q.tenant.clone();
        self.rtype = q.rtype.clone();
        self.bare = Some("1");
        self.push("SELECT count(*) FROM (");
        for (n, c) in alternatives.into_iter().enumerate() {
            if n > 0 {
                self.push(" UNION ALL ");
            }
            self.cond(c);
        }
        self.push(&format!(" LIMIT {limit}) AS probe"));
        self.bare = None;
        true
    }

    /// `x.tenant = ? AND x.rtype = ? AND <x.last_updated in the range>` over `resource_versions x`.
    fn versions_in_range(&mut self, prefix: Prefix, lo: i64, hi: i64) {
        let (tenant, rtype) = (self.tenant.clone(), self.rtype.clone());
        self.push("x.tenant = ");
        self.text_arg(&tenant);
        self.push(" AND x.rtype = ");
        self.text_arg(&rtype);
        self.push(" AND ");
        self.instant_range(prefix, "x.last_updated", lo, hi);
    }

    /// `range` for a stored instant `t` (the range `[t, t + 1)`) written as comparisons of the
    /// bare column, which an index on it can answer (`t + 1 > ?` could not).
    fn instant_range(&mut self, prefix: Prefix, col: &str, lo: i64, hi: i64) {
        let cmp = |s: &mut Sql, op: &str, v: i64| {
            s.push(&format!("{col} {op} "));
            s.arg(Arg::Int(v));
        };
        match prefix {
            Prefix::Eq | Prefix::Ap => {
                cmp(self, ">=", lo);
                self.push(" AND ");
                cmp(self, "<", hi);
            }
            Prefix::Ne => {
                self.push("NOT (");
                cmp(self, ">=", lo);
                self.push(" AND ");
                cmp(self, "<", hi);
                self.push(")");
            }
            Prefix::Gt | Prefix::Sa => cmp(self, ">=", hi),
            Prefix::Lt | Prefix::Eb => cmp(self, "<", lo),
            Prefix::Ge => cmp(self, ">=", lo),
            Prefix::Le => cmp(self, "<", hi),
        }
    }

    fn range(&mut self, prefix: Prefix, lo_col: &str, hi_col: &str, lo: i64, hi: i64) {
        let cmp = |s: &mut Sql, col: &str, op: &str, v: i64| {
            s.push(&format!("{col} {op} "));
            s.arg(Arg::Int(v));
        };
        match prefix {
            Prefix::Eq | Prefix::Ne => {
                cmp(self, lo_col, ">=", lo);
                self.push(" AND ");
                cmp(self, hi_col, "<=", hi);
            }
            Prefix::Gt => cmp(self, hi_col, ">", hi),
            Prefix::Lt => cmp(self, lo_col, "<", lo),
            Prefix::Ge => {
                self.push("(");
                cmp(self, hi_col, ">", hi);
                self.push(" OR (");
                cmp(self, lo_col, ">=", lo);
                self.push(" AND ");
                cmp(self, hi_col, "<=", hi);
                self.push("))");
            }
            Prefix::Le => {
                self.push("(");
                cmp(self, lo_col, "<", lo);
                self.push(" OR (");
                cmp(self, lo_col, ">=", lo);
                self.push(" AND ");
                cmp(self, hi_col, "<=", hi);
                self.push("))");
            }
            Prefix::Sa => cmp(self, lo_col, ">=", hi),
            Prefix::Eb => cmp(self, hi_col, "<=", lo),
            Prefix::Ap => {
                cmp(self, lo_col, "<", hi);
                self.push(" AND ");
                cmp(self, hi_col, ">", lo);
            }
        }
    }

    fn point(&mut self, prefix: Prefix, value: f64, lo: f64, hi: f64) {
        let cmp = |s: &mut Sql, op: &str, v: f64| {
            s.push(&format!("x.value {op} "));
            s.arg(Arg::Real(v));
        };
        match prefix {
            Prefix::Eq | Prefix::Ne | Prefix::Ap => {
                cmp(self, ">=", lo);
                self.push(" AND ");
                cmp(self, "<", hi);
            }
            Prefix::Gt | Prefix::Sa => cmp(self, ">", value),
            Prefix::Lt | Prefix::Eb => cmp(self, "<", value),
            Prefix::Ge => cmp(self, ">=", value),
            Prefix::Le => cmp(self, "<=", value),
        }
    }

    pub fn cond(&mut self, c: &Cond) {
        match c {
            Cond::Token { param, system, code } => self.exists(Table::Token, param, |s| {
                if let Some(code) = code {
                    s.col_test("code", " = ");
                    s.text_arg(code);
                }
                if let Some(system) = system {
                    s.col_test("system", " = ");
                    s.text_arg(system);
                }
            }),
            Cond::TokenAny { param, codes } => {
                if codes.is_empty() {
                    self.push("1 = 0");
                    return;
                }
                self.exists(Table::Token, param, |s| {
                    s.push(" AND (");
                    for (i, (system, code)) in codes.iter().enumerate() {
                        if i > 0 {
                            s.push(" OR ");
                        }
                        // Never a driver, so never the joined alias `d`.
                        s.push("(x.code = ");
                        s.text_arg(code);
                        s.push(" AND x.system = ");
                        s.text_arg(system);
                        s.push(")");
                    }
                    s.push(")");
                })
            }
            Cond::StringPrefix { param, prefix } => self.exists(Table::String, param, |s| {
                s.push(" AND x.norm LIKE ");
                s.arg(Arg::Text(format!("{}%", like_escape(prefix))));
                s.push(" ESCAPE '\\'");
            }),
            Cond::StringContains { param, needle } => self.exists(Table::String, param, |s| {
                s.push(" AND x.norm LIKE ");
                s.arg(Arg::Text(format!("%{}%", like_escape(needle))));
                s.push(" ESCAPE '\\'");
            }),
            Cond::StringExact { param, exact } => self.exists(Table::String, param, |s| {
                s.push(" AND x.exact = ");
                s.text_arg(exact);
            }),
            Cond::Blind { param, tag } => self.exists(Table::Blind, param, |s| {
                s.col_test("tag", " = ");
                s.arg(Arg::Blob(tag.clone()));
            }),
            Cond::Reference {
                param,
                target_type,
                target_id,
            } => self.exists(Table::Reference, param, |s| {
                s.col_test("target_id", " = ");
                s.text_arg(target_id);
                if let Some(t) = target_type {
                    s.col_test("target_type", " = ");
                    s.text_arg(t);
                }
            }),
            Cond::ReferenceIn {
                param,
                target_type,
                target_ids,
            } => {
                if target_ids.is_empty() {
                    self.push("1 = 0");
                    return;
                }
                self.exists(Table::Reference, param, |s| {
                    s.push(" AND x.target_id IN ");
                    s.text_list(target_ids);
                    if let Some(t) = target_type {
                        s.push(" AND x.target_type = ");
                        s.text_arg(t);
                    }
                })
            }
            Cond::Date { param, prefix, lo, hi } => {
                if *prefix == Prefix::Ne {
                    self.push("NOT ");
                }
                self.exists(Table::Date, param, |s| {
                    s.push(" AND ");
                    s.range(*prefix, "x.lo", "x.hi", *lo, *hi);
                });
            }
            Cond::Number {
                param,
                prefix,
                value,
                lo,
                hi,
                system,
                code,
            } => {
                if *prefix == Prefix::Ne {
                    self.push("NOT ");
                }
                self.exists(Table::Number, param, |s| {
                    s.push(" AND ");
                    s.point(*prefix, *value, *lo, *hi);
                    if let Some(code) = code {
                        s.push(" AND x.code = ");
                        s.text_arg(code);
                    }
                    if let Some(system) = system {
                        s.push(" AND x.system = ");
                        s.text_arg(system);
                    }
                });
            }
            Cond::Uri { param, uri, how } => self.exists(Table::Uri, param, |s| match how {
                UriMatch::Exact => {
                    s.push(" AND x.uri = ");
                    s.text_arg(uri);
                }
                UriMatch::Below => {
                    s.push(" AND x.uri LIKE ");
                    s.arg(Arg::Text(format!("{}%", like_escape(uri))));
                    s.push(" ESCAPE '\\'");
                }
                UriMatch::Above => {
                    s.push(" AND ");
                    s.text_arg(uri);
                    s.push(" LIKE x.uri || '%'");
                }
            }),
            Cond::Near {
                param,
                lat_lo,
                lat_hi,
                unit,
                min_dot,
            } => self.exists(Table::Geo, param, |s| {
                s.push(" AND x.lat >= ");
                s.arg(Arg::Real(*lat_lo));
                s.push(" AND x.lat <= ");
                s.arg(Arg::Real(*lat_hi));
                s.push(" AND x.ux * ");
                s.arg(Arg::Real(unit.0));
                s.push(" + x.uy * ");
                s.arg(Arg::Real(unit.1));
                s.push(" + x.uz * ");
                s.arg(Arg::Real(unit.2));
                s.push(" >= ");
                s.arg(Arg::Real(*min_dot));
            }),
            Cond::Present { table, param } => self.exists(*table, param, |_| {}),
            Cond::LastUpdated { prefix, lo, hi } => {
                if let Some(select) = self.bare {
                    // A density probe: versions updated in the range (old ones too: an
                    // estimate is all a probe needs).
                    self.push(&format!("SELECT {select} FROM resource_versions x WHERE "));
                    self.versions_in_range(*prefix, *lo, *hi);
                    return;
                }
                self.push("(");
                if !self.correlated && !self.joined {
                    // Driving: the row ids of versions updated in the range, from the
                    // versions' update-time index; the current version is checked below.
                    self.push("r.rid IN (SELECT x.rid FROM resource_versions x WHERE ");
                    self.versions_in_range(*prefix, *lo, *hi);
                    self.push(") AND ");
                }
                if *prefix == Prefix::Ne {
                    self.push("NOT (");
                }
                self.range(*prefix, "v.last_updated", "(v.last_updated + 1)", *lo, *hi);
                if *prefix == Prefix::Ne {
                    self.push(")");
                }
                self.push(")");
            }
            Cond::Id(ids) => {
                if ids.is_empty() {
                    self.push("1 = 0");
                    return;
                }
                self.push("r.id IN ");
                self.text_list(ids);
            }
            Cond::ReferencedFrom {
                patient_id,
                compartment_types,
            } => {
                self.push("r.id IN (SELECT x.target_id FROM search_reference x WHERE x.target_type = ");
                let rtype = self.rtype.clone();
                self.text_arg(&rtype);
                self.push(" AND x.rid IN (");
                self.compartment_rids(patient_id, compartment_types);
                self.push("))");
            }
            Cond::Not(inner) => {
                self.push("NOT (");
                self.cond(inner);
                self.push(")");
            }
            Cond::All(list) => {
                if list.is_empty() {
                    self.push("1 = 1");
                    return;
                }
                self.push("(");
                for (i, c) in list.iter().enumerate() {
                    if i > 0 {
                        self.push(" AND ");
                    }
                    self.cond(c);
                }
                self.push(")");
            }
            Cond::Any(list) => {
                if list.is_empty() {
                    self.push("1 = 0");
                    return;
                }
                self.push("(");
                for (i, c) in list.iter().enumerate() {
                    if i > 0 {
                        self.push(" OR ");
                    }
                    self.cond(c);
                }
                self.push(")");
            }
        }
    }

    /// A sort key's expression; absent values sort last in either direction.
    fn sort_expr(&mut self, key: &SortKey, desc: bool) -> SortType {
        match key {
            SortKey::LastUpdated => {
                self.push("v.last_updated");
                SortType::Int
            }
            SortKey::Param { table, param } => {
                let agg = if desc { "MAX" } else { "MIN" };
                let (col, ty) = match table {
                    Table::Date => (if desc { "hi" } else { "lo" }, SortType::Int),
                    Table::Number => ("value", SortType::Real),
                    Table::String => ("norm", SortType::Text),
                    Table::Token => ("code", SortType::Text),
                    Table::Uri => ("uri", SortType::Text),
                    Table::Reference => ("target_id", SortType::Text),
                    // Blind tags and positions carry no order; the engine refuses such sorts
                    // before here.
                    Table::Blind | Table::Geo => ("pkey", SortType::Int),
                };
                self.push(&format!(
                    "COALESCE((SELECT {agg}(x.{col}) FROM {} x WHERE x.rid = r.rid AND x.pkey = ",
                    table.name()
                ));
                self.arg(Arg::Int(param_key(&self.tenant, &self.rtype, param)));
                self.push("), ");
                match (ty, desc) {
                    (SortType::Int, false) => self.arg(Arg::Int(INT_HI)),
                    (SortType::Int, true) => self.arg(Arg::Int(INT_LO)),
                    (SortType::Real, false) => self.arg(Arg::Real(REAL_HI)),
                    (SortType::Real, true) => self.arg(Arg::Real(REAL_LO)),
                    (SortType::Text, false) => self.text_arg(TEXT_HI),
                    (SortType::Text, true) => self.text_arg(""),
                }
                self.push(")");
                ty
            }
        }
    }

    /// The driver as `Driver::Joined` when its condition allows (see there), else as a list.
    pub fn joined(q: &SearchQuery, driver: Option<usize>) -> Driver {
        let Some(i) = driver else { return Driver::Walk };
        match q.conds.get(i) {
            Some(
                Cond::Blind { .. }
                | Cond::Reference {
                    target_type: Some(_), ..
                }
                | Cond::Token {
                    system: Some(_),
                    code: Some(_),
                    ..
                },
            ) => Driver::Joined(i),
            _ => Driver::List(i),
        }
    }

    /// The row-id column a page is ordered and resumed by: the joined driver's own, so that
    /// the engine reads its index in order and stops after a page.
    fn rid_col(driver: Driver) -> &'static str {
        if matches!(driver, Driver::Joined(_)) {
            "d.rid"
        } else {
            "r.rid"
        }
    }

    /// The driving condition in its form (see `Driver`); every other one is a correlated probe.
    /// The current version's row, joined only when the query reads its update time (a
    /// `_lastUpdated` condition or sort): a count or page otherwise needs nothing from it.
    fn versions_join(&mut self, q: &SearchQuery) {
        fn reads(c: &Cond) -> bool {
            match c {
                Cond::LastUpdated { .. } => true,
                Cond::Not(c) => reads(c),
                Cond::Any(list) | Cond::All(list) => list.iter().any(reads),
                _ => false,
            }
        }
        if q.conds.iter().any(reads) || q.sort.iter().any(|(k, _)| *k == SortKey::LastUpdated) {
            self.push(" JOIN resource_versions v ON v.seq = r.seq");
        }
    }

    fn base_where(&mut self, q: &SearchQuery, driver: Driver) {
        let joined = match driver {
            Driver::Joined(i) => q.conds.get(i).map(|c| (i, c)),
            _ => None,
        };
        let listed = match driver {
            Driver::List(i) => Some(i),
            _ => None,
        };
        if let Some((_, c)) = joined {
            let table = match c {
                Cond::Blind { .. } => Table::Blind,
                Cond::Reference { .. } => Table::Reference,
                _ => Table::Token,
            };
            self.push(&format!(" FROM {} d JOIN resources r ON r.rid = d.rid", table.name()));
            self.versions_join(q);
            self.push(" WHERE ");
            self.joined = true;
            self.cond(c);
            self.joined = false;
            self.push(" AND ");
        } else {
            self.push(" FROM resources r");
            self.versions_join(q);
            self.push(" WHERE ");
            if self.dialect == Dialect::Postgres {
                // The expression of PostgreSQL's `resources_by_type` index (see its schema).
                self.push("(r.tenant || '/' || r.rtype) = ");
                self.text_arg(&format!("{}/{}", q.tenant, q.rtype));
                self.push(" AND ");
            }
        }
        self.push("r.tenant = ");
        self.text_arg(&q.tenant);
        self.push(" AND r.rtype = ");
        self.text_arg(&q.rtype);
        self.push(" AND NOT r.deleted");
        for (i, c) in q.conds.iter().enumerate() {
            if joined.is_some_and(|(j, _)| j == i) {
                continue;
            }
            self.push(" AND ");
            self.correlated = Some(i) != listed;
            self.cond(c);
        }
        self.correlated = false;
    }

    /// The page query; returns the type of each sort value the rows carry after the id.
    pub fn page(&mut self, q: &SearchQuery, driver: Driver) -> Vec<SortType> {
        let rid = Self::rid_col(driver);
        self.tenant = q.tenant.clone();
        self.rtype = q.rtype.clone();
        self.push("SELECT r.id, r.rid");
        let mut types = Vec::new();
        for (key, desc) in &q.sort {
            self.push(", ");
            types.push(self.sort_expr(key, *desc));
        }
        self.resume = match &q.after {
            Some((_, last_rid)) if q.sort.is_empty() => Some((*last_rid, q.backwards)),
            _ => None,
        };
        self.base_where(q, driver);
        self.resume = None;
        if let Some((values, last_rid)) = &q.after {
            // (k1, k2, …, rid) strictly after the cursor, in the walk's direction.
            self.push(" AND (");
            let n = q.sort.len();
            for i in 0..=n {
                if i > 0 {
                    self.push(" OR ");
                }
                self.push("(");
                for j in 0..i {
                    let (key, desc) = &q.sort[j];
                    self.sort_expr(key, *desc);
                    self.push(" = ");
                    self.value_arg(values.get(j));
                    self.push(" AND ");
                }
                let forward_gt = |desc: bool| (!desc) ^ q.backwards;
                if i < n {
                    let (key, desc) = &q.sort[i];
                    self.sort_expr(key, *desc);
                    self.push(if forward_gt(*desc) { " > " } else { " < " });
                    self.value_arg(values.get(i));
                } else {
                    self.push(&format!("{rid} {} ", if forward_gt(false) { ">" } else { "<" }));
                    self.arg(Arg::Int(*last_rid));
                }
                self.push(")");
            }
            self.push(")");
        }
        self.push(" ORDER BY ");
        for (key, desc) in &q.sort {
            self.sort_expr(key, *desc);
            self.push(if *desc ^ q.backwards { " DESC, " } else { " ASC, " });
        }
        self.push(&format!("{rid} {}", if q.backwards { "DESC" } else { "ASC" }));
        self.push(&format!(" LIMIT {}", q.limit));
        types
    }

    fn value_arg(&mut self, v: Option<&crate::SortValue>) {
        match v {
            Some(crate::SortValue::Int(i)) => self.arg(Arg::Int(*i)),
            Some(crate::SortValue::Real(f)) => self.arg(Arg::Real(*f)),
            Some(crate::SortValue::Text(t)) => self.text_arg(t),
            None => self.text_arg(""),
        }
    }

    /// The count query. When every condition reads index tables only, the rows counted
    /// come straight from the driver's value index and the resource rows are never read
    /// (`driver_rows`); otherwise it is the page query's `FROM … WHERE` unlimited.
    pub fn count(&mut self, q: &SearchQuery, driver: Driver) {
        self.tenant = q.tenant.clone();
        self.rtype = q.rtype.clone();
        self.push("SELECT count(*)");
        if let Driver::List(i) = driver
            && q.conds.iter().all(index_only)
            && self.driver_rows(q, i)
        {
            let mut first = true;
            self.correlated = true;
            for (j, c) in q.conds.iter().enumerate() {
                if j == i {
                    continue;
                }
                self.push(if first { " WHERE " } else { " AND " });
                first = false;
                self.cond(c);
            }
            self.correlated = false;
            return;
        }
        self.base_where(q, driver);
    }

    /// `FROM (<each resource condition i matches, once>) r`, from its value index (the union
    /// of an OR-list's). Enough for a count when every condition reads index tables only: a
    /// deleted resource has no index rows, and a parameter key names the tenant and the type
    /// (the served tenant's keys are all distinct; a test checks every pair), so the resource row
    /// adds nothing — and visiting it for every match was most of a large count's time.
    /// `false` (nothing written) when condition `i` is not a list of plain index conditions.
    fn driver_rows(&mut self, q: &SearchQuery, i: usize) -> bool {
        let alternatives: Vec<&Cond> = match q.conds.get(i) {
            Some(Cond::Any(list)) => list.iter().collect(),
            Some(c) => vec![c],
            None => return false,
        };
        // An empty reference list (a chain that matched nothing) is written `1 = 0`, no
        // SELECT: the page query's form takes it.
        let plain = |c: &Cond| {
            !matches!(
                c,
                Cond::Any(_)
                    | Cond::All(_)
                    | Cond::Not(_)
                    | Cond::Id(_)
                    | Cond::ReferencedFrom { .. }
                    | Cond::LastUpdated { .. }
            ) && !matches!(c, Cond::ReferenceIn { target_ids, .. } if target_ids.is_empty())
                && Self::drive_rank(c).is_some()
        };
        if alternatives.is_empty() || !alternatives.iter().all(|c| plain(c)) {
            return false;
        }
        self.push(" FROM (");
        self.bare = Some("DISTINCT x.rid AS rid");
        for (n, c) in alternatives.into_iter().enumerate() {
            if n > 0 {
                self.push(" UNION ");
            }
            self.cond(c);
        }
        self.bare = None;
        self.push(") r");
        true
    }
}
