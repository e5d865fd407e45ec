//! `_filter` (FHIR's search filter syntax): `name sw "pet" and (birthdate ge 2014-10-10 or
//! gender eq male)`. Each comparison becomes the ordinary search parameter it stands for
//! (`sw` the default string search, `eq` on a string `:exact`, `ne` a negation, the ordered
//! operators the prefixes of the same name, `pr` `:missing`, `po` a `ge` and `le` pair), so a
//! filter is searched, indexed and refused exactly as that parameter would be; `and`, `or`,
//! `not` and parentheses combine them (`not` binds tightest, then `and`, then `or`).
//!
//! Identifying parameters can only be ANDed at the top of a filter: their blind tags only
//! propose candidates that the decrypted resource decides, which an `or` or `not` around them
//! would turn into wrong answers. Under `or`/`not` they are a 400 that says so.

use crate::CoreError;
use carevault_domain::ResourceType;
use carevault_domain::search::{ParamKind, params};

/// The most comparisons one filter may hold, and how deep its parentheses may nest.
const MAX_COMPARISONS: usize = 32;
const MAX_DEPTH: usize = 8;

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::Invalid(format!("_filter: {}", msg.into()))
}

/// A filter, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// One comparison, as the search parameters it stands for (all of them hold).
    Compare(Vec<(String, String)>),
    /// `ne`: the comparison's `eq` does not hold.
    Negated(Vec<(String, String)>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    /// How many comparisons it holds (each counts as a parameter toward a search's limit).
    pub(crate) fn comparisons(&self) -> usize {
        match self {
            Expr::Compare(_) | Expr::Negated(_) => 1,
            Expr::And(list) | Expr::Or(list) => list.iter().map(Expr::comparisons).sum(),
            Expr::Not(x) => x.comparisons(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Word(String),
    /// A quoted string, unescaped.
    Quoted(String),
}

fn tokens(s: &str) -> Result<Vec<Tok>, CoreError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' {
            chars.next();
            out.push(Tok::Open);
        } else if c == ')' {
            chars.next();
            out.push(Tok::Close);
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    None => return Err(bad("a quoted value is not closed")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('"') => text.push('"'),
                        Some('\\') => text.push('\\'),
                        Some('/') => text.push('/'),
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        _ => return Err(bad("a quoted value has an unknown escape")),
                    },
                    Some(c) => text.push(c),
                }
            }
            out.push(Tok::Quoted(text));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(Tok::Word(word));
        }
    }
    Ok(out)
}

/// Parses a filter for searches of `rtype`.
pub(crate) fn parse(rtype: ResourceType, text: &str) -> Result<Expr, CoreError> {
    let toks = tokens(text)?;
    let mut p = Parser {
        rtype,
        toks,
        at: 0,
        comparisons: 0,
    };
    let e = p.or_expr(0)?;
    if p.at != p.toks.len() {
        return Err(bad("unexpected text after the filter (a missing `and` or `or`?)"));
    }
    Ok(e)
}

struct Parser {
    rtype: ResourceType,
    toks: Vec<Tok>,
    at: usize,
    comparisons: usize,
}

fn keyword(t: Option<&Tok>, k: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, CoreError> {
        let mut list = vec![self.and_expr(depth)?];
        while keyword(self.peek(), "or") {
            self.at += 1;
            list.push(self.and_expr(depth)?);
        }
        Ok(if list.len() == 1 {
            list.remove(0)
        } else {
            Expr::Or(list)
        })
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, CoreError> {
        let mut list = vec![self.unary(depth)?];
        while keyword(self.peek(), "and") {
            self.at += 1;
            list.push(self.unary(depth)?);
        }
        Ok(if list.len() == 1 {
            list.remove(0)
        } else {
            Expr::And(list)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, CoreError> {
        if depth >= MAX_DEPTH {
            return Err(bad(format!("parentheses may nest at most {MAX_DEPTH} deep")));
        }
        let negate = keyword(self.peek(), "not") && self.toks.get(self.at + 1) == Some(&Tok::Open);
        if negate {
            self.at += 1;
        }
        if self.peek() == Some(&Tok::Open) {
            self.at += 1;
            let inner = self.or_expr(depth + 1)?;
            if self.next() != Some(Tok::Close) {
                return Err(bad("a parenthesis is not closed"));
            }
            return Ok(if negate { Expr::Not(Box::new(inner)) } else { inner });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, CoreError> {
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(bad(format!("a filter may hold at most {MAX_COMPARISONS} comparisons")));
        }
        let Some(Tok::Word(path)) = self.next() else {
            return Err(bad("expected a comparison: parameter operator value"));
        };
        let Some(Tok::Word(op)) = self.next() else {
            return Err(bad("expected an operator after the parameter"));
        };
        let value = match self.next() {
            Some(Tok::Word(w)) => w,
            Some(Tok::Quoted(q)) => q,
            _ => return Err(bad("expected a value after the operator")),
        };
        if path.contains('[') {
            return Err(bad(
                "filters inside a parameter path (`param[filter].rest`) are not supported",
            ));
        }
        let op = op.to_ascii_lowercase();
        let n = self.comparisons;
        let kind = self.kind_of(&path).ok_or_else(|| {
            // Not echoed: a value written where a parameter belongs would be repeated back.
            bad(format!(
                "comparison {n} names no search parameter of {} (expected: parameter operator value)",
                self.rtype
            ))
        })?;
        comparison(&path, kind, &op, &value, n)
    }

    /// The kind of the parameter a path ends in (through a chain: in the first target type
    /// that has it); `None` when it names none.
    fn kind_of(&self, path: &str) -> Option<ParamKind> {
        match path.split_once('.') {
            None => params::find(self.rtype, path).map(|p| p.kind),
            Some((head, rest)) => {
                let (name, target) = match head.split_once(':') {
                    Some((n, t)) => (n, Some(t)),
                    None => (head, None),
                };
                let p = params::find(self.rtype, name).filter(|p| p.kind == ParamKind::Reference)?;
                let targets: Vec<ResourceType> = match target {
                    Some(t) => vec![t.parse().ok()?],
                    None => p.targets.to_vec(),
                };
                if rest.contains('.') {
                    // A longer chain: the inner search judges the rest.
                    return Some(ParamKind::Reference);
                }
                let last = rest.split(':').next().unwrap_or(rest);
                targets.iter().find_map(|t| params::find(*t, last)).map(|p| p.kind)
            }
        }
    }
}

/// A search value as one alternative: commas and backslashes escaped.
fn one_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace(',', "\\,")
}

/// The search parameters comparison `n` stands for.
fn comparison(path: &str, kind: ParamKind, op: &str, value: &str, n: usize) -> Result<Expr, CoreError> {
    let v = one_value(value);
    let pair = |name: String, value: String| Ok(Expr::Compare(vec![(name, value)]));
    let ordered = matches!(kind, ParamKind::Date | ParamKind::Number | ParamKind::Quantity);
    match (op, kind) {
        ("pr", _) => match value {
            "true" => pair(format!("{path}:missing"), "false".into()),
            "false" => pair(format!("{path}:missing"), "true".into()),
            _ => Err(bad("`pr` takes true or false")),
        },
        ("eq", ParamKind::String) => pair(format!("{path}:exact"), v),
        ("sw", ParamKind::String) => pair(path.to_owned(), v),
        ("co", ParamKind::String) => pair(format!("{path}:contains"), v),
        ("ne", ParamKind::String) => Ok(Expr::Negated(vec![(format!("{path}:exact"), v)])),
        ("eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap", _) if ordered => {
            pair(path.to_owned(), format!("{op}{v}"))
        }
        ("po", ParamKind::Date) => Ok(Expr::Compare(vec![
            (path.to_owned(), format!("ge{v}")),
            (path.to_owned(), format!("le{v}")),
        ])),
        ("eq" | "re", ParamKind::Reference) | ("eq", _) => pair(path.to_owned(), v),
        ("ne", _) => Ok(Expr::Negated(vec![(path.to_owned(), v)])),
        ("sb", ParamKind::Uri) => pair(format!("{path}:below"), v),
        ("ss", ParamKind::Uri) => pair(format!("{path}:above"), v),
        (
            "co" | "sw" | "ew" | "gt" | "lt" | "ge" | "le" | "ap" | "sa" | "eb" | "po" | "ss" | "sb" | "in" | "ni"
            | "re",
            _,
        ) => Err(bad(format!("`{op}` is not served on a {} parameter", kind_name(kind)))),
        // Not echoed, for the same reason as an unknown parameter.
        _ => Err(bad(format!(
            "comparison {n} has no operator FHIR defines (eq, ne, co, sw, gt, lt, ge, le…)"
        ))),
    }
}

fn kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::String => "string",
        ParamKind::Token => "token",
        ParamKind::Reference => "reference",
        ParamKind::Date => "date",
        ParamKind::Number => "number",
        ParamKind::Quantity => "quantity",
        ParamKind::Uri => "uri",
        ParamKind::Composite => "composite",
        ParamKind::Special => "special",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn c(name: &str, value: &str) -> Expr {
        Expr::Compare(vec![(name.into(), value.into())])
    }

    #[test]
    fn comparisons_become_the_parameters_they_stand_for() {
        let p = |s: &str| parse(ResourceType::Patient, s).unwrap();
        assert_eq!(p("family sw \"pet\""), c("family", "pet"));
        assert_eq!(p("family eq Peters"), c("family:exact", "Peters"));
        assert_eq!(p("name co \"a,b\""), c("name:contains", "a\\,b"));
        assert_eq!(p("birthdate ge 2014-10-10"), c("birthdate", "ge2014-10-10"));
        assert_eq!(p("gender EQ male"), c("gender", "male"));
        assert_eq!(
            p("gender ne male"),
            Expr::Negated(vec![("gender".into(), "male".into())])
        );
        assert_eq!(p("birthdate pr false"), c("birthdate:missing", "true"));
        assert_eq!(
            p("birthdate po 2014"),
            Expr::Compare(vec![
                ("birthdate".into(), "ge2014".into()),
                ("birthdate".into(), "le2014".into())
            ])
        );
        assert_eq!(
            parse(ResourceType::Observation, "subject.name sw pet").unwrap(),
            c("subject.name", "pet")
        );
        assert_eq!(
            parse(ResourceType::Observation, "code eq http://loinc.org|1234-5").unwrap(),
            c("code", "http://loinc.org|1234-5")
        );
    }

    #[test]
    fn not_binds_tightest_then_and_then_or() {
        let e = parse(
            ResourceType::Patient,
            "gender eq male or gender eq female and not (birthdate lt 2000) and active eq true",
        )
        .unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                c("gender", "male"),
                Expr::And(vec![
                    c("gender", "female"),
                    Expr::Not(Box::new(c("birthdate", "lt2000"))),
                    c("active", "true"),
                ]),
            ])
        );
        assert_eq!(
            parse(
                ResourceType::Patient,
                "(gender eq male or gender eq female) and active eq true"
            )
            .unwrap(),
            Expr::And(vec![
                Expr::Or(vec![c("gender", "male"), c("gender", "female")]),
                c("active", "true")
            ])
        );
    }

    #[test]
    fn malformed_filters_are_refused_with_a_reason() {
        for (f, why) in [
            ("gender", "operator"),
            ("gender eq", "value"),
            ("gender eq male and", "comparison"),
            ("(gender eq male", "not closed"),
            ("gender eq male)", "after the filter"),
            ("gender eq male female", "after the filter"),
            ("colour eq blue", "comparison 1 names no search parameter"),
            (
                "gender eq male or Quillfeather eq x",
                "comparison 2 names no search parameter",
            ),
            ("gender zz male", "no operator FHIR defines"),
            ("family Quillfeather x", "no operator FHIR defines"),
            ("family ew son", "not served on a string"),
            ("gender gt male", "not served on a token"),
            ("family eq \"open", "not closed"),
            ("link[type eq seealso].other eq x", "not supported"),
            ("birthdate pr maybe", "true or false"),
        ] {
            let e = parse(ResourceType::Patient, f).unwrap_err().to_string();
            assert!(e.contains(why), "{f}: {e}");
            assert!(
                !e.contains("Quillfeather") && !e.contains("colour"),
                "{f}: the error repeats caller text: {e}"
            );
        }
        let deep = format!("{}gender eq male{}", "(".repeat(9), ")".repeat(9));
        assert!(parse(ResourceType::Patient, &deep).is_err());
        let many = vec!["gender eq male"; 33].join(" or ");
        assert!(
            parse(ResourceType::Patient, &many)
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
    }
}
