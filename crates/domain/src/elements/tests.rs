#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::Value;

#[test]
fn the_table_is_sorted_and_unique_so_lookups_find_every_row() {
    for pair in ELEMENTS.windows(2) {
        if let [(a, _), (b, _)] = pair {
            assert!(a < b, "{a} before {b}");
        }
    }
    for (path, spec) in ELEMENTS {
        assert_eq!(lookup(path), Some(*spec), "{path}");
    }
}

#[test]
fn elements_answer_repetition_and_shape() {
    let name = element("Patient", "name");
    assert!(name.repeats);
    assert_eq!(name.shape, Shape::Complex("HumanName"));
    assert_eq!(
        element("Patient", "birthDate"),
        Element {
            repeats: false,
            shape: Shape::Primitive
        }
    );
    assert!(element("HumanName", "given").repeats);
    assert!(!element("HumanName", "family").repeats);
    assert!(!element("Organization", "name").repeats);
    assert_eq!(element("Patient", "contact").shape, Shape::Backbone);
    assert_eq!(
        child_context("Patient", "contact", None).as_deref(),
        Some("Patient.contact")
    );
    assert_eq!(
        child_context("Patient.contact", "name", None).as_deref(),
        Some("HumanName")
    );
    assert_eq!(
        child_context("Questionnaire.item", "item", None).as_deref(),
        Some("Questionnaire.item")
    );
    assert_eq!(
        child_context("Patient", "contained", Some("Organization")).as_deref(),
        Some("Organization")
    );
    assert!(element("Observation", "component").extension_free());
    assert_eq!(
        choice("Observation", "valueQuantity"),
        Some(("value", "Quantity".to_owned()))
    );
    assert_eq!(
        choice("Observation", "effectiveDateTime"),
        Some(("effective", "DateTime".to_owned()))
    );
    assert_eq!(choice("Observation", "status"), None);
    assert!(is_choice("Observation", "value") && !is_choice("Observation", "status"));
    assert_eq!(type_context("Quantity").as_deref(), Some("Quantity"));
    assert_eq!(type_context("DateTime"), None);
    assert!(element("Anything", "extension").repeats);
}

impl Element {
    fn extension_free(self) -> bool {
        self.repeats && self.shape == Shape::Backbone
    }
}

/// Walks a resource as the table describes it; returns the first place where JSON and table
/// disagree (an array where the table says single, or the reverse; an object where it says
/// primitive).
fn disagreement(v: &Value, context: &str, at: &str) -> Option<String> {
    let obj = v.as_object()?;
    for (k, child) in obj {
        if k == "resourceType" || k.starts_with('_') {
            continue;
        }
        let known = lookup(&format!("{context}.{k}")).is_some() || k == "extension" || k == "modifierExtension";
        let choice_type = if known {
            None
        } else {
            choice(context, k).map(|(_, suffix)| suffix)
        };
        let repeats = known && element(context, k).repeats;
        let context_of = |item: &Value| {
            if known {
                child_context(context, k, item.get("resourceType").and_then(Value::as_str))
            } else {
                choice_type.as_deref().and_then(type_context)
            }
        };
        let here = format!("{at}.{k}");
        if child.is_array() != repeats {
            return Some(format!(
                "{here}: array {} but table repeats {repeats}",
                child.is_array()
            ));
        }
        let items: Vec<&Value> = match child {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for item in items {
            match (item, &context_of(item)) {
                (Value::Object(_), Some(c)) => {
                    if let Some(d) = disagreement(item, c, &here) {
                        return Some(d);
                    }
                }
                (Value::Object(_), None) => return Some(format!("{here}: an object, but the table says primitive")),
                _ => {}
            }
        }
    }
    None
}

/// Every official R4 example and Synthea resource has arrays exactly where the table says
/// an element repeats, and objects only where it says the element has children.
#[test]
fn the_table_agrees_with_every_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    if !root.exists() {
        eprintln!("NOT RUN: needs {}", root.display());
        return;
    }
    let mut checked = 0;
    for dir in ["fhir-examples", "synthea"] {
        let entries = std::fs::read_dir(root.join(dir)).expect("testdata folder");
        for f in entries.flatten() {
            let Ok(bytes) = std::fs::read(f.path()) else { continue };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let t = v["resourceType"].as_str().expect("resourceType");
            if let Some(d) = disagreement(&v, t, &f.file_name().to_string_lossy()) {
                panic!("{d}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} files");
}
