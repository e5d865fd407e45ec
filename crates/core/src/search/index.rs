//! The search index rows of one resource: plaintext for clinical parameters, keyed blind
//! tags for identifying ones (see docs/SEARCHABILITY.md).

use super::{MAX_BLIND_PREFIX, MIN_BLIND_PREFIX, blind_input};
use carevault_crypto::IndexKey;
use carevault_domain::search::normalize::normalize;
use carevault_domain::search::{Class, IndexValue, class_of, params};
use carevault_domain::{ResourceId, ResourceType};
use carevault_storage::SearchRow;
use serde_json::Value;

fn blind(key: &IndexKey, param: &str, kind: &str, value: &str) -> SearchRow {
    SearchRow::Blind {
        param: param.to_owned(),
        tag: key.tag(&blind_input(param, kind, value)).0.to_vec(),
    }
}

/// Blind rows of one identifying value.
fn blind_rows(key: &IndexKey, param: &str, value: &IndexValue, out: &mut Vec<SearchRow>) {
    match value {
        IndexValue::String(s) => {
            let norm = normalize(s);
            let chars: Vec<char> = norm.chars().collect();
            for n in MIN_BLIND_PREFIX..=chars.len().min(MAX_BLIND_PREFIX) {
                let prefix: String = chars[..n].iter().collect();
                out.push(blind(key, param, "p", &prefix));
            }
            out.push(blind(key, param, "x", s));
        }
        IndexValue::Token { system, code } => {
            out.push(blind(key, param, "t", &format!("{system}\0{code}")));
            out.push(blind(key, param, "c", code));
        }
        IndexValue::Date { .. } => {}
        _ => {}
    }
}

/// Blind rows of an identifying date: the date as written at year, month and day precision.
fn blind_dates(key: &IndexKey, param: &str, written: &[&str], out: &mut Vec<SearchRow>) {
    for s in written {
        for n in [4, 7, 10] {
            if let Some(p) = s.get(..n) {
                out.push(blind(key, param, "d", p));
            }
        }
    }
}

/// A composite's rows: each value of its second component, under a key that carries the
/// first component's code (with its system, and again for "any system").
fn composite_rows(p: &carevault_domain::search::SearchParam, body: &Value, out: &mut Vec<SearchRow>) {
    for ((system, code), v) in carevault_domain::search::extract::composite_values(p, body) {
        for key in [
            super::parse::composite_key(p.name, Some(&system), &code),
            super::parse::composite_key(p.name, None, &code),
        ] {
            out.push(match &v {
                IndexValue::Token { system, code } => SearchRow::Token {
                    param: key,
                    system: system.clone(),
                    code: code.clone(),
                },
                IndexValue::String(s) => SearchRow::String {
                    param: key,
                    norm: normalize(s),
                    exact: s.clone(),
                },
                IndexValue::Reference { rtype, id } => SearchRow::Reference {
                    param: key,
                    target_type: rtype.clone(),
                    target_id: id.clone(),
                },
                IndexValue::Date { lo, hi } => SearchRow::Date {
                    param: key,
                    lo: *lo,
                    hi: *hi,
                },
                IndexValue::Number { value, system, code } => SearchRow::Number {
                    param: key,
                    value: *value,
                    system: system.clone(),
                    code: code.clone(),
                },
                IndexValue::Uri(u) => SearchRow::Uri {
                    param: key,
                    uri: u.clone(),
                },
                IndexValue::TokenText(_) | IndexValue::Position { .. } => continue,
            });
        }
    }
}

/// The pseudo-parameter that places a resource in a patient's compartment (for compartment
/// searches and `$everything`), from our table of the R4 patient compartment.
pub const COMPARTMENT: &str = carevault_storage::COMPARTMENT_PARAM;

/// Rows for `:of-type` (an identifier by its type and value): keyed blind tags where the
/// parameter is identifying, else plain token rows under `<param>:of-type` whose system is
/// the type's `system|code`.
fn of_type_rows(
    key: &IndexKey,
    p: &carevault_domain::search::SearchParam,
    class: Class,
    body: &Value,
    out: &mut Vec<SearchRow>,
) {
    for (system, code, value) in carevault_domain::search::extract::identifier_types(p, body) {
        out.push(match class {
            Class::Identifying => blind(key, p.name, "y", &of_type_input(&system, &code, &value)),
            Class::Clinical => SearchRow::Token {
                param: format!("{}:of-type", p.name),
                system: format!("{system}|{code}"),
                code: value,
            },
        });
    }
}

/// What an identifying `:of-type` tag is made from.
pub(crate) fn of_type_input(system: &str, code: &str, value: &str) -> String {
    format!("{system}\0{code}\0{value}")
}

/// Blind rows of the logical identifiers references carry (`subject.identifier`), for the
/// `:identifier` modifier: identifiers are identifying wherever they appear.
fn reference_identifier_rows(
    key: &IndexKey,
    p: &carevault_domain::search::SearchParam,
    body: &Value,
    out: &mut Vec<SearchRow>,
) {
    let param = format!("{}:identifier", p.name);
    for path in p.paths {
        for v in carevault_domain::search::path::select(body, path) {
            let ident = &v["identifier"];
            let Some(value) = ident["value"].as_str() else { continue };
            let system = ident["system"].as_str().unwrap_or("");
            blind_rows(
                key,
                &param,
                &IndexValue::Token {
                    system: system.to_owned(),
                    code: value.to_owned(),
                },
                out,
            );
        }
    }
}

/// Every index row of `body`.
pub(crate) fn search_rows(key: &IndexKey, rtype: ResourceType, id: &ResourceId, body: &Value) -> Vec<SearchRow> {
    let mut out = Vec::new();
    for patient in carevault_domain::compartment::patients_of(rtype, Some(id), body) {
        out.push(SearchRow::Reference {
            param: COMPARTMENT.to_owned(),
            target_type: "Patient".to_owned(),
            target_id: patient.to_string(),
        });
    }
    for p in params::all(rtype) {
        if matches!(p.name, "_id" | "_lastUpdated") {
            continue;
        }
        let class = class_of(rtype, p);
        // A union of two parameters (`combo-code`) is searched through their rows.
        if params::union_of(rtype, p.name).is_some() {
            continue;
        }
        if p.kind == carevault_domain::search::ParamKind::Composite {
            composite_rows(p, body, &mut out);
            continue;
        }
        if p.kind == carevault_domain::search::ParamKind::Reference {
            reference_identifier_rows(key, p, body, &mut out);
        }
        if p.kind == carevault_domain::search::ParamKind::Token {
            of_type_rows(key, p, class, body, &mut out);
        }
        let values = carevault_domain::search::extract::param_values(p, body);
        if class == Class::Identifying {
            if p.kind == carevault_domain::search::ParamKind::Date {
                let written: Vec<&str> = p
                    .paths
                    .iter()
                    .flat_map(|path| carevault_domain::search::path::select(body, path))
                    .filter_map(Value::as_str)
                    .collect();
                blind_dates(key, p.name, &written, &mut out);
            } else {
                values.iter().for_each(|v| blind_rows(key, p.name, v, &mut out));
            }
            continue;
        }
        for v in values {
            let param = p.name.to_owned();
            out.push(match v {
                IndexValue::Token { system, code } => SearchRow::Token { param, system, code },
                IndexValue::TokenText(t) => SearchRow::String {
                    param: format!("{param}:text"),
                    norm: normalize(&t),
                    exact: t,
                },
                IndexValue::String(s) => SearchRow::String {
                    param,
                    norm: normalize(&s),
                    exact: s,
                },
                IndexValue::Reference { rtype, id } => SearchRow::Reference {
                    param,
                    target_type: rtype,
                    target_id: id,
                },
                IndexValue::Date { lo, hi } => SearchRow::Date { param, lo, hi },
                IndexValue::Number { value, system, code } => SearchRow::Number {
                    param,
                    value,
                    system,
                    code,
                },
                IndexValue::Uri(uri) => SearchRow::Uri { param, uri },
                IndexValue::Position { lat, lon } => SearchRow::Geo { param, lat, lon },
            });
        }
    }
    // Each row once: a repeated row would list its resource twice to a joined driver.
    carevault_domain::search::extract::dedup(&mut out);
    out
}
