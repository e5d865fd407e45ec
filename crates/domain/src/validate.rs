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

fn is_date(s: &str) -> bool {
    // YYYY, YYYY-MM or YYYY-MM-DD with plausible ranges.
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

/// Checks the top-level primitives we know the meaning of, in any resource type.
pub fn check(rtype: &str, body: &Map<String, Value>) -> Result<(), ContentError> {
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
    }
}
