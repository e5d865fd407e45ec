//! Search at the storage boundary: the index rows a version carries, and queries over them,
//! as plain data. `sql.rs` turns a query into SQL for either dialect.

/// Which index table a row or condition belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Token,
    String,
    Blind,
    Reference,
    Date,
    Number,
    Uri,
    Geo,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Token => "search_token",
            Table::String => "search_string",
            Table::Blind => "search_blind",
            Table::Reference => "search_reference",
            Table::Date => "search_date",
            Table::Number => "search_number",
            Table::Uri => "search_uri",
            Table::Geo => "search_geo",
        }
    }

    pub const ALL: [Table; 8] = [
        Table::Token,
        Table::String,
        Table::Blind,
        Table::Reference,
        Table::Date,
        Table::Number,
        Table::Uri,
        Table::Geo,
    ];
}

/// One index row of the current version of a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchRow {
    Token {
        param: String,
        system: String,
        code: String,
    },
    /// `norm` is the normalised string (case and accents folded), `exact` as written.
    String {
        param: String,
        norm: String,
        exact: String,
    },
    /// A keyed blind tag of an identifying value.
    Blind {
        param: String,
        tag: Vec<u8>,
    },
    Reference {
        param: String,
        target_type: String,
        target_id: String,
    },
    Date {
        param: String,
        lo: i64,
        hi: i64,
    },
    Number {
        param: String,
        value: f64,
        system: String,
        code: String,
    },
    Uri {
        param: String,
        uri: String,
    },
    /// A position in degrees (WGS84); the store keeps its unit vector beside it.
    Geo {
        param: String,
        lat: f64,
        lon: f64,
    },
}

/// The unit vector of a position on the sphere, from degrees: great-circle distances become
/// dot products, which SQL computes without trigonometry.
pub fn unit_vector(lat: f64, lon: f64) -> (f64, f64, f64) {
    let (lat, lon) = (lat.to_radians(), lon.to_radians());
    (lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin())
}

impl SearchRow {
    /// The parameter this row indexes.
    pub fn param(&self) -> &str {
        match self {
            SearchRow::Token { param, .. }
            | SearchRow::String { param, .. }
            | SearchRow::Blind { param, .. }
            | SearchRow::Reference { param, .. }
            | SearchRow::Date { param, .. }
            | SearchRow::Number { param, .. }
            | SearchRow::Uri { param, .. }
            | SearchRow::Geo { param, .. } => param,
        }
    }

    /// The index table the row lives in.
    pub fn table(&self) -> Table {
        match self {
            SearchRow::Token { .. } => Table::Token,
            SearchRow::String { .. } => Table::String,
            SearchRow::Blind { .. } => Table::Blind,
            SearchRow::Reference { .. } => Table::Reference,
            SearchRow::Date { .. } => Table::Date,
            SearchRow::Number { .. } => Table::Number,
            SearchRow::Uri { .. } => Table::Uri,
            SearchRow::Geo { .. } => Table::Geo,
        }
    }
}

/// The 64-bit key of a (tenant, resource type, parameter) triple that index rows carry instead
/// of three text columns: FNV-1a over the three names with a 0xFF byte (never part of UTF-8) between them. Stable
/// across releases and platforms (it is stored). Not a secret and not a security boundary:
/// a page's query still filters by tenant and type, so a collision (odds around 2^-64 per
/// pair) could at worst mix two parameters of one type. A count of index conditions reads
/// index rows alone and trusts the key to name the type; the keys of every type and
/// parameter of the default tenant (the one served) are distinct, which a test checks.
pub fn param_key(tenant: &str, rtype: &str, param: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, part) in [tenant, rtype, param].iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h as i64
}

/// Comparison prefixes of date, number and quantity searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// How a uri search matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMatch {
    Exact,
    /// The stored uri starts with the search value (`:below`).
    Below,
    /// The search value starts with the stored uri (`:above`).
    Above,
}

/// One condition; a query's conditions are joined with AND.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `system` None = any system; `code` None = any code (`system|`).
    Token {
        param: String,
        system: Option<String>,
        code: Option<String>,
    },
    /// Any of these `(system, code)` pairs (security labels); never drives a query.
    TokenAny {
        param: String,
        codes: Vec<(String, String)>,
    },
    StringPrefix {
        param: String,
        prefix: String,
    },
    StringExact {
        param: String,
        exact: String,
    },
    StringContains {
        param: String,
        needle: String,
    },
    Blind {
        param: String,
        tag: Vec<u8>,
    },
    /// A reference to any of these ids (chains, `_revinclude`): one subquery, not many.
    ReferenceIn {
        param: String,
        target_type: Option<String>,
        target_ids: Vec<String>,
    },
    Reference {
        param: String,
        target_type: Option<String>,
        target_id: String,
    },
    /// The stored range `[lo, hi)` against the search range `[lo, hi)`.
    Date {
        param: String,
        prefix: Prefix,
        lo: i64,
        hi: i64,
    },
    /// The stored value against the search value and its implicit range.
    Number {
        param: String,
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri {
        param: String,
        uri: String,
        how: UriMatch,
    },
    /// A position within a great-circle distance: its latitude in `[lat_lo, lat_hi]` (what
    /// the index narrows by) and the dot product of its unit vector with `unit` at least
    /// `min_dot` (the cosine of the angle the distance subtends).
    Near {
        param: String,
        lat_lo: f64,
        lat_hi: f64,
        unit: (f64, f64, f64),
        min_dot: f64,
    },
    /// The resource has at least one row for `param` in `table`.
    Present {
        table: Table,
        param: String,
    },
    /// The resource's last update (`_lastUpdated`), like a date.
    LastUpdated {
        prefix: Prefix,
        lo: i64,
        hi: i64,
    },
    /// The resource id is one of these (`_id`).
    Id(Vec<String>),
    /// The resource is the target of a reference (through any indexed reference parameter)
    /// held by a resource in this patient's compartment, the Patient included: `$everything`'s
    /// supporting resources (practitioners, organizations, locations, medications…).
    /// `compartment_types` are the types whose compartment rows to read.
    ReferencedFrom {
        patient_id: String,
        compartment_types: Vec<String>,
    },
    Not(Box<Cond>),
    Any(Vec<Cond>),
    /// Every condition holds (inside `Not` or `Any`; a query's own list is already AND).
    All(Vec<Cond>),
}

/// What a page is ordered by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    LastUpdated,
    /// The smallest (ascending) or largest (descending) value of a parameter.
    Param {
        table: Table,
        param: String,
    },
}

/// A sort value as stored in a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Int(i64),
    Real(f64),
    Text(String),
}

/// A page of a search: conditions, order, and where the previous page ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub tenant: String,
    pub rtype: String,
    pub conds: Vec<Cond>,
    /// Sort keys with `true` for descending; the resource's row id (creation order, never
    /// reused or changed) always breaks ties, so pages stay stable under concurrent writes.
    pub sort: Vec<(SortKey, bool)>,
    /// Continue after (or, going backwards, before) this position: sort values and row id.
    pub after: Option<(Vec<SortValue>, i64)>,
    /// Walk the order backwards (for a `previous` page); results still come in forward order.
    pub backwards: bool,
    pub limit: u32,
}

/// One match: its id and its sort values (for the next cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    /// The resource's row id: its paging position after the sort values.
    pub rid: i64,
    pub sort: Vec<SortValue>,
}

#[cfg(test)]
mod tests {
    use super::param_key;
    use carevault_domain::ResourceType;
    use carevault_domain::search::params;
    use std::collections::HashMap;

    /// A count reads index rows without the resource rows (`Sql::count`), trusting the key
    /// to name tenant, type and parameter: within a tenant no two of them share one.
    #[test]
    fn one_tenants_parameter_keys_are_distinct() {
        let mut seen: HashMap<i64, (ResourceType, &str)> = HashMap::new();
        for &t in ResourceType::ALL {
            let names = params::all(t)
                .map(|p| p.name)
                .chain([crate::COMPARTMENT_PARAM, crate::SECURITY_PARAM]);
            for name in names {
                let key = param_key("default", t.as_str(), name);
                if let Some(&(t0, n0)) = seen.get(&key) {
                    assert!((t0, n0) == (t, name), "{t0:?}.{n0} and {t:?}.{name} share key {key}");
                }
                seen.insert(key, (t, name));
            }
        }
        assert!(seen.len() > 1_000, "{} keys", seen.len());
    }
}
