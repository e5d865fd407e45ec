//! The part of FHIRPath a patch's `path` needs: member navigation, indexers, `where(…)` with
//! `=`, `!=`, `and`, `or`, `not()`, `exists()`, `first()`, `last()`, `$this`, string, number
//! and boolean literals. Anything else is refused as malformed rather than guessed at.

use serde_json::Value;

/// Longest expression accepted, in bytes; deepest nesting of parentheses and calls.
const MAX_LEN: usize = 4096;
const MAX_DEPTH: usize = 32;
/// Most navigation steps in one expression (each one is a level of the evaluator's stack).
const MAX_STEPS: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    This,
    Literal(Value),
    /// `base.name`, or `name` on the input when there is no base.
    Member(Option<Box<Expr>>, String),
    Index(Box<Expr>, usize),
    Call(Option<Box<Expr>>, Func),
    /// `left = right` (true) or `left != right` (false).
    Equals(Box<Expr>, bool, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Func {
    Where(Box<Expr>),
    First,
    Last,
    Exists,
    Not,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(Value),
    Dot,
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Eq,
    Ne,
}

/// Consumes the digits that come next; the byte offset after the last one (`end` if none).
fn skip_digits(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, mut end: usize) -> usize {
    while let Some(&(i, d)) = chars.peek() {
        if !d.is_ascii_digit() {
            break;
        }
        end = i + 1;
        chars.next();
    }
    end
}

fn tokenize(src: &str) -> Result<Vec<Token>, &'static str> {
    if src.len() > MAX_LEN {
        return Err("the path is too long");
    }
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '.' => out.push(Token::Dot),
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            '[' => out.push(Token::OpenBracket),
            ']' => out.push(Token::CloseBracket),
            '=' => out.push(Token::Eq),
            '!' => match chars.next() {
                Some((_, '=')) => out.push(Token::Ne),
                _ => return Err("unexpected `!` in the path"),
            },
            '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string in the path"),
                        Some((_, '\'')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, 'r')) => s.push('\r'),
                            Some((_, 'f')) => s.push('\u{c}'),
                            Some((_, e @ ('\'' | '"' | '`' | '\\' | '/'))) => s.push(e),
                            _ => return Err("unsupported escape in a string of the path"),
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push(Token::Str(s));
            }
            '`' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated `name` in the path"),
                        Some((_, '`')) => break,
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push(Token::Ident(s));
            }
            c if c.is_ascii_digit() => {
                let mut end = skip_digits(&mut chars, start + 1);
                let mut rest = src.get(end..).unwrap_or("").chars();
                if rest.next() == Some('.') && rest.next().is_some_and(|d| d.is_ascii_digit()) {
                    chars.next();
                    end = skip_digits(&mut chars, end + 1);
                }
                let text = src.get(start..end).ok_or("malformed number in the path")?;
                let n: serde_json::Number = text.parse().map_err(|_| "malformed number in the path")?;
                out.push(Token::Num(Value::Number(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        end = i + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Ident(src.get(start..end).unwrap_or("").to_owned()));
            }
            _ => return Err("unsupported character in the path"),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    steps: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, t: &Token, why: &'static str) -> Result<(), &'static str> {
        if self.next().as_ref() == Some(t) {
            Ok(())
        } else {
            Err(why)
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w == word)
    }

    fn or(&mut self) -> Result<Expr, &'static str> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("the path nests too deeply");
        }
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, &'static str> {
        let mut left = self.equality()?;
        while self.keyword("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.equality()?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, &'static str> {
        let left = self.postfix()?;
        let equal = match self.peek() {
            Some(Token::Eq) => true,
            Some(Token::Ne) => false,
            _ => return Ok(left),
        };
        self.at += 1;
        Ok(Expr::Equals(Box::new(left), equal, Box::new(self.postfix()?)))
    }

    fn step(&mut self) -> Result<(), &'static str> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            Err("the path has too many steps")
        } else {
            Ok(())
        }
    }

    fn postfix(&mut self) -> Result<Expr, &'static str> {
        let mut e = self.term()?;
        loop {
            self.step()?;
            match self.peek() {
                Some(Token::Dot) => {
                    self.at += 1;
                    let Some(Token::Ident(name)) = self.next() else {
                        return Err("expected a name after `.` in the path");
                    };
                    e = self.invocation(Some(e), name)?;
                }
                Some(Token::OpenBracket) => {
                    self.at += 1;
                    let index = match self.next() {
                        Some(Token::Num(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
                        _ => None,
                    }
                    .ok_or("an indexer takes a whole number")?;
                    self.expect(&Token::CloseBracket, "expected `]` in the path")?;
                    e = Expr::Index(Box::new(e), index);
                }
                _ => return Ok(e),
            }
        }
    }

    fn invocation(&mut self, base: Option<Expr>, name: String) -> Result<Expr, &'static str> {
        let base = base.map(Box::new);
        if self.peek() != Some(&Token::Open) {
            return Ok(Expr::Member(base, name));
        }
        self.at += 1;
        let func = match name.as_str() {
            "where" => Func::Where(Box::new(self.or()?)),
            "first" => Func::First,
            "last" => Func::Last,
            "exists" => Func::Exists,
            "not" => Func::Not,
            _ => return Err("unsupported function in the path"),
        };
        self.expect(&Token::Close, "expected `)` in the path")?;
        Ok(Expr::Call(base, func))
    }

    fn term(&mut self) -> Result<Expr, &'static str> {
        match self.next() {
            Some(Token::Open) => {
                let e = self.or()?;
                self.expect(&Token::Close, "expected `)` in the path")?;
                Ok(e)
            }
            Some(Token::Str(s)) => Ok(Expr::Literal(Value::String(s))),
            Some(Token::Num(n)) => Ok(Expr::Literal(n)),
            Some(Token::Ident(w)) if w == "true" || w == "false" => Ok(Expr::Literal(Value::Bool(w == "true"))),
            Some(Token::Ident(w)) if w == "$this" => Ok(Expr::This),
            Some(Token::Ident(w)) if !w.starts_with('$') => self.invocation(None, w),
            _ => Err("expected a name or a value in the path"),
        }
    }
}

/// Parses a FHIRPath expression of the supported subset.
pub(super) fn parse(src: &str) -> Result<Expr, &'static str> {
    let mut p = Parser {
        tokens: tokenize(src)?,
        at: 0,
        depth: 0,
        steps: 0,
    };
    let e = p.or()?;
    if p.at != p.tokens.len() {
        return Err("unexpected text after the path");
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn member(base: Option<Expr>, name: &str) -> Expr {
        Expr::Member(base.map(Box::new), name.to_owned())
    }

    #[test]
    fn paths_parse_into_steps() {
        let patient = member(None, "Patient");
        assert_eq!(parse("Patient.name").unwrap(), member(Some(patient.clone()), "name"));
        assert_eq!(
            parse("Patient.name[1].given").unwrap(),
            member(
                Some(Expr::Index(Box::new(member(Some(patient.clone()), "name")), 1)),
                "given"
            )
        );
        let w = parse("Patient.identifier.where(system = 'urn:x' and value != 'a\\'b').first()").unwrap();
        let Expr::Call(Some(base), Func::First) = w else {
            panic!("{w:?}")
        };
        let Expr::Call(Some(_), Func::Where(cond)) = *base else {
            panic!()
        };
        assert_eq!(
            *cond,
            Expr::And(
                Box::new(Expr::Equals(
                    Box::new(member(None, "system")),
                    true,
                    Box::new(Expr::Literal(json!("urn:x")))
                )),
                Box::new(Expr::Equals(
                    Box::new(member(None, "value")),
                    false,
                    Box::new(Expr::Literal(json!("a'b")))
                )),
            )
        );
        assert_eq!(
            parse("x.where($this = 2.5)").unwrap(),
            Expr::Call(
                Some(Box::new(member(None, "x"))),
                Func::Where(Box::new(Expr::Equals(
                    Box::new(Expr::This),
                    true,
                    Box::new(Expr::Literal(json!(2.5)))
                )))
            )
        );
    }

    #[test]
    fn what_is_not_supported_is_refused() {
        for bad in [
            "",
            "Patient.",
            "Patient.name[",
            "Patient.name[-1]",
            "Patient.name.descendants()",
            "Patient.name.where(use = 'official'",
            "Patient.name | Patient.address",
            "'unterminated",
            "Patient.name)",
            "$index",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{}x{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(parse(&deep), Err("the path nests too deeply"));
        assert_eq!(parse(&"a.".repeat(3000)), Err("the path is too long"));
        assert_eq!(
            parse(&format!("a{}", ".b".repeat(200))),
            Err("the path has too many steps")
        );
    }
}
