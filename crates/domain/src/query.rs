//! URL query strings: split into decoded `(name, value)` pairs, order kept. A `+` stays a
//! plus sign (FHIR dates carry `+hh:mm` offsets); spaces arrive as `%20`.

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the query string has a malformed percent-escape")]
    Malformed,
    /// FHIR strings hold no control characters but tab, line feed and carriage return, so no
    /// stored value could match one (and PostgreSQL's text cannot hold a NUL at all).
    #[error("the query string holds a control character")]
    Control,
}

pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

/// Decodes one name or value; refuses a malformed escape, bytes that are not UTF-8 and the
/// control characters a FHIR string may not hold.
pub fn percent_decode(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(QueryError::Malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| QueryError::Malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| QueryError::Malformed)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.iter().any(|&b| crate::validate::forbidden_in_string(b)) {
        return Err(QueryError::Control);
    }
    String::from_utf8(out).map_err(|_| QueryError::Malformed)
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(
            parse_query("identifier=http%3A%2F%2Fa%7C1&_since=2020-01-01T00:00:00+01:00&flag"),
            Ok(vec![
                ("identifier".into(), "http://a|1".into()),
                ("_since".into(), "2020-01-01T00:00:00+01:00".into()),
                ("flag".into(), String::new())
            ])
        );
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%4").is_err());
        assert_eq!(parse_query("name=a%00b"), Err(QueryError::Control));
        assert_eq!(parse_query("na%01me=ab"), Err(QueryError::Control));
        assert_eq!(parse_query("name=a%7Fb"), Err(QueryError::Control));
        assert_eq!(parse_query("name=a%09b%0D%0A").map(|p| p[0].1.len()), Ok(5));
        assert_eq!(percent_decode(&percent_encode("a b|c/é")), Ok("a b|c/é".into()));
    }
}
