//! Search at the storage boundary: the index rows a version carries, and queries over them,
//! as plain data. `sql.rs` turns a query into SQL for either dialect.

/// Which index table a row or condition belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Token,
    String,
    Blind,
    Reference,
    Date,
    Number,
    Uri,
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
        }
    }

    pub const ALL: [Table; 7] = [
        Table::Token,
        Table::String,
        Table::Blind,
        Table::Reference,
        Table::Date,
        Table::Number,
        Table::Uri,
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
    Not(Box<Cond>),
    Any(Vec<Cond>),
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
    /// Sort keys with `true` for descending; the resource id always breaks ties.
    pub sort: Vec<(SortKey, bool)>,
    /// Continue after (or, going backwards, before) this position: sort values and id.
    pub after: Option<(Vec<SortValue>, String)>,
    /// Walk the order backwards (for a `previous` page); results still come in forward order.
    pub backwards: bool,
    pub limit: u32,
}

/// One match: its id and its sort values (for the next cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    pub sort: Vec<SortValue>,
}
