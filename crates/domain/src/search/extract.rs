//! The values each search parameter indexes for a resource.

use super::params::{self, ParamKind, SearchParam};
use super::path::{flag, select};
use super::ranges::{date_range, period_range};
use crate::{Reference, ResourceType};
use serde_json::Value;

/// One indexed value of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `system` is empty when the value has none.
    Token {
        system: String,
        code: String,
    },
    /// Display text of a coded value (`:text`).
    TokenText(String),
    /// A string as written (normalised by whoever indexes it).
    String(String),
    /// A reference: the target's type (empty for an absolute or canonical URL) and id.
    Reference {
        rtype: String,
        id: String,
    },
    /// `[lo, hi)` in ms.
    Date {
        lo: i64,
        hi: i64,
    },
    /// A number or a quantity (with its system and code, empty for a plain number).
    Number {
        value: f64,
        system: String,
        code: String,
    },
    Uri(String),
    /// A WGS84 position in degrees (Location's `near`).
    Position {
        lat: f64,
        lon: f64,
    },
}

const NAME_PARTS: &[&str] = &["family", "given", "prefix", "suffix", "text"];
const ADDRESS_PARTS: &[&str] = &["line", "city", "district", "state", "postalCode", "country", "text"];

fn strings(v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => out.push(IndexValue::String(s.clone())),
        Value::Object(m) => {
            let parts: &[&str] = if m.contains_key("family") || m.contains_key("given") {
                NAME_PARTS
            } else if ADDRESS_PARTS.iter().any(|k| m.contains_key(*k)) {
                ADDRESS_PARTS
            } else {
                &[]
            };
            for k in parts {
                match m.get(*k) {
                    Some(Value::String(s)) => out.push(IndexValue::String(s.clone())),
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .for_each(|s| out.push(IndexValue::String(s.to_owned()))),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn coding(c: &Value, out: &mut Vec<IndexValue>) {
    if let Some(code) = c.get("code").and_then(Value::as_str) {
        out.push(IndexValue::Token {
            system: str_of(c, "system").to_owned(),
            code: code.to_owned(),
        });
    }
    if let Some(d) = c.get("display").and_then(Value::as_str) {
        out.push(IndexValue::TokenText(d.to_owned()));
    }
}

fn tokens(v: &Value, out: &mut Vec<IndexValue>) {
    match v {
        Value::String(s) => out.push(IndexValue::Token {
            system: String::new(),
            code: s.clone(),
        }),
        Value::Bool(b) => out.push(IndexValue::Token {
            system: String::new(),
            code: b.to_string(),
        }),
        Value::Object(m) => {
            if let Some(Value::Array(codings)) = m.get("coding") {
                codings.iter().for_each(|c| coding(c, out));
                if let Some(t) = m.get("text").and_then(Value::as_str) {
                    out.push(IndexValue::TokenText(t.to_owned()));
                }
            } else if m.contains_key("code") {
                coding(v, out);
            } else if let Some(value) = m.get("value").and_then(Value::as_str) {
                // Identifier (system|value) or ContactPoint (phone|…, email|…).
                out.push(IndexValue::Token {
                    system: str_of(v, "system").to_owned(),
                    code: value.to_owned(),
                });
            }
        }
        _ => {}
    }
}

fn references(v: &Value, out: &mut Vec<IndexValue>) {
    let text = match v {
        Value::String(s) => s.as_str(),
        Value::Object(_) => str_of(v, "reference"),
        _ => "",
    };
    if text.is_empty() || text.starts_with('#') {
        return;
    }
    match Reference::parse(text) {
        Reference::Local { rtype, id, .. } => out.push(IndexValue::Reference {
            rtype: rtype.as_str().to_owned(),
            id: id.to_string(),
        }),
        _ => {
            // An absolute URL ending in Type/id also counts as a reference to that id.
            let mut parts = text.rsplit('/');
            if let (Some(id), Some(t)) = (parts.next(), parts.next())
                && t.parse::<ResourceType>().is_ok()
            {
                out.push(IndexValue::Reference {
                    rtype: t.to_owned(),
                    id: id.to_owned(),
                });
            }
            out.push(IndexValue::Reference {
                rtype: String::new(),
                id: text.to_owned(),
            });
        }
    }
}

fn dates(v: &Value, out: &mut Vec<IndexValue>) {
    let range = match v {
        Value::String(s) => date_range(s),
        Value::Object(m) if m.contains_key("start") || m.contains_key("end") => period_range(
            m.get("start").and_then(Value::as_str),
            m.get("end").and_then(Value::as_str),
        ),
        Value::Object(m) => {
            if let Some(Value::Array(events)) = m.get("event") {
                events
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(date_range)
                    .for_each(|(lo, hi)| {
                        out.push(IndexValue::Date { lo, hi });
                    });
            }
            None
        }
        _ => None,
    };
    if let Some((lo, hi)) = range {
        out.push(IndexValue::Date { lo, hi });
    }
}

fn numbers(v: &Value, quantity: bool, out: &mut Vec<IndexValue>) {
    match v {
        Value::Number(n) if !quantity => {
            if let Some(value) = n.as_f64() {
                out.push(IndexValue::Number {
                    value,
                    system: String::new(),
                    code: String::new(),
                });
            }
        }
        Value::Object(m) => {
            if let Some(value) = m.get("value").and_then(Value::as_f64) {
                let code = m
                    .get("code")
                    .or_else(|| m.get("unit"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                out.push(IndexValue::Number {
                    value,
                    system: str_of(v, "system").to_owned(),
                    code: code.to_owned(),
                });
            }
        }
        _ => {}
    }
}

/// A `position` element with a latitude in [-90, 90] and a longitude in [-180, 180].
fn positions(v: &Value, out: &mut Vec<IndexValue>) {
    let (Some(lat), Some(lon)) = (
        v.get("latitude").and_then(Value::as_f64),
        v.get("longitude").and_then(Value::as_f64),
    ) else {
        return;
    };
    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) {
        out.push(IndexValue::Position { lat, lon });
    }
}

/// The values one path of a parameter of `kind` selects.
fn path_values(kind: ParamKind, path: &str, body: &Value, out: &mut Vec<IndexValue>) {
    if path.ends_with('!') {
        out.push(IndexValue::Token {
            system: String::new(),
            code: flag(body, path).to_string(),
        });
        return;
    }
    for v in select(body, path) {
        match kind {
            ParamKind::String => strings(v, out),
            ParamKind::Token => tokens(v, out),
            ParamKind::Reference => references(v, out),
            ParamKind::Date => dates(v, out),
            ParamKind::Number => numbers(v, false, out),
            ParamKind::Quantity => numbers(v, true, out),
            ParamKind::Uri => {
                if let Some(s) = v.as_str() {
                    out.push(IndexValue::Uri(s.to_owned()));
                }
            }
            // `near`, the one special parameter R4 defines: a Location's position.
            ParamKind::Special => positions(v, out),
            ParamKind::Composite => {}
        }
    }
}

/// The typed identifiers a token parameter selects, for `:of-type`: each coding of an
/// Identifier's `type` with the identifier's value, as `(type system, type code, value)`.
pub fn identifier_types(param: &SearchParam, body: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if param.kind != ParamKind::Token {
        return out;
    }
    for path in param.paths.iter().filter(|p| !p.ends_with('!')) {
        for v in select(body, path) {
            let Some(value) = v.get("value").and_then(Value::as_str) else {
                continue;
            };
            let codings = v.pointer("/type/coding").and_then(Value::as_array);
            for c in codings.into_iter().flatten() {
                if let (Some(system), Some(code)) = (
                    c.get("system").and_then(Value::as_str),
                    c.get("code").and_then(Value::as_str),
                ) {
                    out.push((system.to_owned(), code.to_owned(), value.to_owned()));
                }
            }
        }
    }
    out
}

/// The values `param` indexes in `body`.
pub fn param_values(param: &SearchParam, body: &Value) -> Vec<IndexValue> {
    let mut out = Vec::new();
    for path in param.paths {
        path_values(param.kind, path, body, &mut out);
    }
    if !param.targets.is_empty() {
        // A reference to a type the parameter does not target is not a value of it (FHIR's
        // `subject.where(resolve() is Patient)`); one whose type is unknown (a URL) stays.
        out.retain(|v| match v {
            IndexValue::Reference { rtype, .. } => rtype
                .parse::<ResourceType>()
                .map_or(true, |t| param.targets.contains(&t)),
            _ => true,
        });
    }
    dedup(&mut out);
    out
}

/// Removes repeated values, keeping the first of each, in order. A short list is compared
/// pair by pair; a long one (a record with thousands of names, say: pairwise, 6,000 names
/// took four seconds to index) through a set of the values' debug forms, in linear time.
pub fn dedup<T: PartialEq + std::fmt::Debug>(values: &mut Vec<T>) {
    if values.len() <= 32 {
        let mut kept: Vec<T> = Vec::with_capacity(values.len());
        for v in values.drain(..) {
            if !kept.contains(&v) {
                kept.push(v);
            }
        }
        *values = kept;
    } else {
        let mut seen = std::collections::HashSet::new();
        values.retain(|v| seen.insert(format!("{v:?}")));
    }
}

/// The pairs a composite parameter indexes: for each element its paths select, the first
/// component's tokens (system, code) with each value of the second component.
pub fn composite_values(param: &SearchParam, body: &Value) -> Vec<((String, String), IndexValue)> {
    let mut out = Vec::new();
    let [(ParamKind::Token, first), (second_kind, second)] = param.components else {
        return out;
    };
    for path in param.paths {
        for element in select(body, path) {
            let mut firsts = Vec::new();
            path_values(ParamKind::Token, first, element, &mut firsts);
            let codes: Vec<(String, String)> = firsts
                .into_iter()
                .filter_map(|v| match v {
                    IndexValue::Token { system, code } => Some((system, code)),
                    _ => None,
                })
                .collect();
            let mut values = Vec::new();
            path_values(*second_kind, second, element, &mut values);
            for c in &codes {
                for v in &values {
                    if !matches!(v, IndexValue::TokenText(_)) {
                        out.push((c.clone(), v.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Every indexed value of every parameter of `rtype` in `body`, but `_id` and
/// `_lastUpdated` (the store answers those from its own columns).
pub fn index_values(rtype: ResourceType, body: &Value) -> Vec<(&'static str, IndexValue)> {
    let mut out = Vec::new();
    for p in params::all(rtype) {
        if matches!(p.name, "_id" | "_lastUpdated") {
            continue;
        }
        for v in param_values(p, body) {
            out.push((p.name, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dedup_keeps_the_first_of_each_in_order_short_or_long() {
        let mut short = vec![3, 1, 3, 2, 1];
        dedup(&mut short);
        assert_eq!(short, [3, 1, 2]);
        let mut long: Vec<IndexValue> = (0..10_000)
            .map(|i| IndexValue::String(format!("n{}", i % 700)))
            .collect();
        dedup(&mut long);
        assert_eq!(long.len(), 700);
        assert_eq!(long[699], IndexValue::String("n699".into()));
    }

    #[test]
    fn patient_values() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Zoë"]}],
            "identifier": [{"system": "urn:mrn", "value": "42"}], "birthDate": "1970-02-03",
            "telecom": [{"system": "phone", "value": "555"}], "gender": "female",
            "generalPractitioner": [{"reference": "Practitioner/p1"}], "deceasedBoolean": false});
        let v = index_values(ResourceType::Patient, &p);
        let has = |name: &str, want: IndexValue| v.iter().any(|(n, x)| *n == name && *x == want);
        assert!(has("name", IndexValue::String("Müller".into())));
        assert!(has("given", IndexValue::String("Zoë".into())));
        assert!(has(
            "identifier",
            IndexValue::Token {
                system: "urn:mrn".into(),
                code: "42".into()
            }
        ));
        assert!(has(
            "phone",
            IndexValue::Token {
                system: "phone".into(),
                code: "555".into()
            }
        ));
        assert!(!v.iter().any(|(n, _)| *n == "email"));
        assert!(has(
            "gender",
            IndexValue::Token {
                system: String::new(),
                code: "female".into()
            }
        ));
        assert!(has(
            "general-practitioner",
            IndexValue::Reference {
                rtype: "Practitioner".into(),
                id: "p1".into()
            }
        ));
        assert!(has(
            "deceased",
            IndexValue::Token {
                system: String::new(),
                code: "false".into()
            }
        ));
        assert!(
            v.iter()
                .any(|(n, x)| *n == "birthdate" && matches!(x, IndexValue::Date { .. }))
        );
    }

    #[test]
    fn observation_values() {
        let o = json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": "Patient/a"}, "effectiveDateTime": "2020-01-01T10:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}});
        let v = index_values(ResourceType::Observation, &o);
        let has = |name: &str, want: IndexValue| v.iter().any(|(n, x)| *n == name && *x == want);
        assert!(has(
            "code",
            IndexValue::Token {
                system: "http://loinc.org".into(),
                code: "8867-4".into()
            }
        ));
        assert!(has("code", IndexValue::TokenText("Heart rate".into())));
        assert!(has(
            "patient",
            IndexValue::Reference {
                rtype: "Patient".into(),
                id: "a".into()
            }
        ));
        assert!(has(
            "subject",
            IndexValue::Reference {
                rtype: "Patient".into(),
                id: "a".into()
            }
        ));
        assert!(has(
            "value-quantity",
            IndexValue::Number {
                value: 72.0,
                system: "http://unitsofmeasure.org".into(),
                code: "/min".into()
            }
        ));
        assert!(
            v.iter()
                .any(|(n, x)| *n == "date" && matches!(x, IndexValue::Date { .. }))
        );
    }
}
