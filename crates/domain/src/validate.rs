//! Light content checks on the way in, beyond JSON shape: the primitive elements every
//! client gets wrong at some point, checked wherever they appear at the top level of a
//! resource. A wrong JSON type is a malformed request (400); a well-typed value that is not a
//! legal FHIR value is unprocessable (422). Messages name the element, never the value.

use serde_json::{Map, Value};

/// A top-level element with a value FHIR does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the element `{0}` has the wrong JSON type")]
    WrongType(String),
    #[error("the element `{0}` does not hold a valid FHIR {1}")]
    BadValue(String, &'static str),
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, with plausible months and days: a FHIR `date`.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok()).unwrap_or(0);
    match b.len() {
        4 => digits(0..4),
        7 => digits(0..4) && b[4] == b'-' && digits(5..7) && (1..=12).contains(&num(5..7)),
        10 => {
            digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[7] == b'-'
                && digits(8..10)
                && (1..=12).contains(&num(5..7))
                && (1..=31).contains(&num(8..10))
        }
        _ => false,
    }
}

fn is_datetime(s: &str) -> bool {
    if s.len() <= 10 {
        return is_date(s);
    }
    let Some((date, time)) = s.split_once('T') else {
        return false;
    };
    is_date(date) && date.len() == 10 && crate::Timestamp::parse(s).is_some() && time.len() >= 8
}

/// A byte no FHIR string may hold: the C0 control characters but tab, line feed and carriage
/// return (R4 "string": "SHALL NOT contain Unicode character points below 32, except for
/// u0009, u000D and u000A"), and DEL. Every other byte of UTF-8 text is allowed.
pub fn forbidden_in_string(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f
}

/// Whether `s` holds a character no FHIR string may hold (`forbidden_in_string`): for the
/// free text that arrives outside a resource, such as a break-the-glass reason.
pub fn has_control(s: &str) -> bool {
    s.bytes().any(forbidden_in_string)
}

/// The path (`Patient.name.family`, array positions left out) of the first element whose
/// name or string value holds a character FHIR strings may not hold.
fn first_control(path: &mut String, v: &Value) -> bool {
    match v {
        Value::String(s) => has_control(s),
        Value::Array(items) => items.iter().any(|i| first_control(path, i)),
        Value::Object(map) => map.iter().any(|(k, v)| {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            if has_control(k) || first_control(path, v) {
                return true;
            }
            path.truncate(len);
            false
        }),
        _ => false,
    }
}

/// Checks the top-level primitives we know the meaning of, in any resource type, and that no
/// string anywhere in it holds a control character.
pub fn check(rtype: &str, body: &Map<String, Value>) -> Result<(), ContentError> {
    let mut path = rtype.to_owned();
    if body.iter().any(|(k, v)| {
        path.truncate(rtype.len());
        path.push('.');
        path.push_str(k);
        has_control(k) || first_control(&mut path, v)
    }) {
        // The element's name may itself be the culprit: it is not echoed then.
        let named = has_control(&path);
        return Err(ContentError::BadValue(
            if named { rtype.to_owned() } else { path },
            "string",
        ));
    }
    let name = |k: &str| format!("{rtype}.{k}");
    for (k, v) in body {
        let wrong = || ContentError::WrongType(name(k));
        match k.as_str() {
            "active" | "deceasedBoolean" | "multipleBirthBoolean" | "experimental" if !v.is_boolean() => {
                return Err(wrong());
            }
            "birthDate" => {
                let s = v.as_str().ok_or_else(wrong)?;
                if !is_date(s) {
                    return Err(ContentError::BadValue(name(k), "date"));
                }
            }
            "deceasedDateTime" | "effectiveDateTime" | "onsetDateTime" | "authoredOn" | "recordedDate" => {
                let s = v.as_str().ok_or_else(wrong)?;
                if !is_datetime(s) {
                    return Err(ContentError::BadValue(name(k), "dateTime"));
                }
            }
            "gender" => match v.as_str().ok_or_else(wrong)? {
                "male" | "female" | "other" | "unknown" => {}
                _ => return Err(ContentError::BadValue(name(k), "administrative gender")),
            },
            "status" | "language" | "implicitRules" if !v.is_string() => return Err(wrong()),
            "text" if !v.is_object() => return Err(wrong()),
            // name/telecom/address are lists at the top level of most R4 types; `name` is a
            // string on Organization, Location and the like, `address` one object on some.
            "extension" | "modifierExtension" | "contained" | "telecom" if !v.is_array() => {
                return Err(wrong());
            }
            "name" if !(v.is_array() || v.is_string()) => return Err(wrong()),
            "address" if !(v.is_array() || v.is_object()) => return Err(wrong()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn dates() {
        for ok in ["2024", "2024-02", "2024-02-29", "1901-12-31"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "24",
            "2024-13",
            "2024-00-10",
            "31/12/2020",
            "2024-1-1",
            "2024-02-32",
            "abcd",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_datetime("2016-03-22T21:57:18-04:00"));
        assert!(is_datetime("2016-03-22"));
        assert!(!is_datetime("2016-03-22T25:00:00Z"));
    }

    #[test]
    fn checks() {
        assert!(
            check(
                "Patient",
                &obj(json!({"gender": "female", "birthDate": "1970", "active": true}))
            )
            .is_ok()
        );
        assert_eq!(
            check("Patient", &obj(json!({"active": "yes"}))),
            Err(ContentError::WrongType("Patient.active".into()))
        );
        assert_eq!(
            check("Patient", &obj(json!({"birthDate": "31/12/2020"}))),
            Err(ContentError::BadValue("Patient.birthDate".into(), "date"))
        );
        assert!(matches!(
            check("Patient", &obj(json!({"gender": "m"}))),
            Err(ContentError::BadValue(..))
        ));
        assert!(matches!(
            check("Patient", &obj(json!({"name": {"family": "x"}}))),
            Err(ContentError::WrongType(_))
        ));
        assert!(check("Organization", &obj(json!({"name": "Acme"}))).is_ok());
        assert!(
            check(
                "Patient",
                &obj(json!({"name": [{"family": "A\tB\r\nC", "given": ["é名"]}]}))
            )
            .is_ok()
        );
        assert_eq!(
            check(
                "Patient",
                &obj(json!({"active": true, "name": [{"family": "A", "given": ["x", "a\u{0}b"]}]}))
            ),
            Err(ContentError::BadValue("Patient.name.given".into(), "string"))
        );
        assert_eq!(
            check("Observation", &obj(json!({"code": {"coding": [{"code": "a\u{7f}"}]}}))),
            Err(ContentError::BadValue("Observation.code.coding.code".into(), "string"))
        );
        assert_eq!(
            check("Patient", &obj(json!({"name": [{"fam\u{1}ily": "A"}]}))),
            Err(ContentError::BadValue("Patient".into(), "string"))
        );
    }
}
