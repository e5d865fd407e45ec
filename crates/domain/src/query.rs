//! URL query strings: split into decoded `(name, value)` pairs, order kept. A `+` is a space,
//! as HTML forms, `URLSearchParams` and most HTTP libraries write one (`_filter=gender+eq+male`,
//! `family=van+der`) — except where no space can be meant and a client that did not escape
//! its plus sign meant the sign: at the start of a value or of a list item, token part or
//! component (`phone=+1-555…`), and before a time zone offset (`T10:00:00+01:00`).

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
        out.push((decode_component(k)?, decode_component(v)?));
    }
    Ok(out)
}

/// One name or value of a query string: escapes decoded, each `+` a space unless it can only
/// be a plus sign (see the module's note).
fn decode_component(s: &str) -> Result<String, QueryError> {
    let plus: Vec<usize> = s.match_indices('+').map(|(i, _)| i).collect();
    if plus.is_empty() {
        return percent_decode(s);
    }
    // Decode the pieces between the plus signs, so that each one's place in the output is known.
    let mut out = String::with_capacity(s.len());
    let mut places = Vec::with_capacity(plus.len());
    let mut from = 0;
    for &i in &plus {
        out.push_str(&percent_decode(&s[from..i])?);
        places.push(out.len());
        out.push(' ');
        from = i + 1;
    }
    out.push_str(&percent_decode(&s[from..])?);
    let mut bytes = out.into_bytes();
    for p in places {
        if plus_meant(&bytes, p) {
            bytes[p] = b'+';
        }
    }
    String::from_utf8(bytes).map_err(|_| QueryError::Malformed)
}

/// Whether the `+` written at `p` of a decoded value can only be a plus sign.
fn plus_meant(v: &[u8], p: usize) -> bool {
    let separator = |b: u8| matches!(b, b',' | b'|' | b'$');
    if p == 0 || v.get(p - 1).copied().is_some_and(separator) {
        return true;
    }
    // `hh:mm` after it, ending the value or a part of it…
    let after = v.get(p + 1..).unwrap_or_default();
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let offset = after.len() >= 5
        && digits(&after[..2])
        && after[2] == b':'
        && digits(&after[3..5])
        && after.get(5).is_none_or(|&b| separator(b));
    // …and a time of day before it, after a `T`.
    let before = &v[..p];
    offset
        && before.iter().rposition(|&b| b == b'T').is_some_and(|t| {
            let time = &before[t + 1..];
            time.len() >= 5 && time.iter().all(|&b| b.is_ascii_digit() || b == b':' || b == b'.')
        })
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
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn a_plus_is_a_space_unless_only_a_sign_can_be_meant() {
        let one = |q: &str| parse_query(q).unwrap().remove(0).1;
        assert_eq!(
            one("_filter=gender+eq+male+and+family+sw+%22van+der%22"),
            "gender eq male and family sw \"van der\""
        );
        assert_eq!(one("family=van+der"), "van der");
        assert_eq!(one("a=x+"), "x ");
        // A time zone offset, with or without a prefix, seconds or a fraction; in a list too.
        assert_eq!(one("date=ge2020-01-01T10:00+01:00"), "ge2020-01-01T10:00+01:00");
        assert_eq!(
            one("d=2020-01-01T10:00:00.123+05:30,2021-01-01T00:00:00+00:00"),
            "2020-01-01T10:00:00.123+05:30,2021-01-01T00:00:00+00:00"
        );
        assert_eq!(one("d=2020-01-01T10%3A00%3A00+01%3A00"), "2020-01-01T10:00:00+01:00");
        // Not an offset: no time before it, or not hh:mm after it.
        assert_eq!(one("x=T1+01:00"), "T1 01:00");
        assert_eq!(one("x=2020-01-01T10:00:00+1:00"), "2020-01-01T10:00:00 1:00");
        // The start of a value, list item, token part or component.
        assert_eq!(one("phone=+1-555-0100"), "+1-555-0100");
        assert_eq!(one("phone=+1,+44+20"), "+1,+44 20");
        assert_eq!(one("identifier=urn:tel|+1555"), "urn:tel|+1555");
        assert_eq!(one("c=a$+5"), "a$+5");
        // An escaped plus is always a plus; an escaped space always a space.
        assert_eq!(one("a=1%2B1%201"), "1+1 1");
        assert_eq!(parse_query("a+b=c").unwrap()[0].0, "a b");
        assert!(parse_query("a=%zz+b").is_err());
    }

    #[test]
    fn any_mix_of_signs_digits_and_escapes_decodes_without_panicking() {
        // Every string of up to five symbols from an alphabet made of what the rules look at.
        let alphabet = ["+", "%2B", "%20", "T", "1", ":", ".", ",", "|", "$", "%", "é"];
        let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
        let mut seen = 0;
        while let Some((s, symbols)) = stack.pop() {
            let decoded = parse_query(&format!("v={s}"));
            if let Ok(pairs) = &decoded {
                let v = &pairs[0].1;
                assert_eq!(
                    v.matches(['+', ' ']).count(),
                    s.matches('+').count() + s.matches("%2B").count() + s.matches("%20").count()
                );
            }
            seen += 1;
            if symbols < 5 {
                for a in alphabet {
                    stack.push((format!("{s}{a}"), symbols + 1));
                }
            }
        }
        assert!(seen > 200_000);
    }
}
