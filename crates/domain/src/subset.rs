//! Subsetting a resource (`_elements`, `_summary=data`): only the requested top-level
//! elements and the mandatory ones are kept, and the resource is tagged SUBSETTED so that no
//! client mistakes it for the whole record.

use serde_json::{Map, Value, json};

/// Does element `key` of a resource answer to the requested `name`? Exactly, or as a choice
/// variant (`value` asks for `valueQuantity`).
fn element_matches(key: &str, name: &str) -> bool {
    key == name || (key.len() > name.len() && key.starts_with(name) && key.as_bytes()[name.len()].is_ascii_uppercase())
}

/// Marks a resource SUBSETTED.
fn mark_subsetted(out: &mut Map<String, Value>) {
    let meta = out.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(t) = tags {
            t.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
        }
    }
}

/// Keeps only the requested top-level elements (plus the mandatory ones) and marks the
/// resource SUBSETTED.
pub fn subset(resource: Value, elements: &[String]) -> Value {
    let Value::Object(map) = resource else { return resource };
    let mut out = Map::new();
    for (k, v) in map {
        if matches!(k.as_str(), "resourceType" | "id" | "meta") || elements.iter().any(|e| element_matches(&k, e)) {
            out.insert(k, v);
        }
    }
    mark_subsetted(&mut out);
    Value::Object(out)
}

/// `_summary=data`: everything but the narrative, marked SUBSETTED.
pub fn without_text(resource: Value) -> Value {
    let Value::Object(mut map) = resource else {
        return resource;
    };
    map.remove("text");
    mark_subsetted(&mut map);
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_requested_and_mandatory_elements_and_marks_the_subset() {
        let r = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "valueQuantity": {"value": 1}, "code": {"text": "x"}, "text": {"div": "<div/>"}});
        let s = subset(r.clone(), &["value".into(), "status".into()]);
        assert_eq!(s["status"], "final");
        assert_eq!(s["valueQuantity"]["value"], 1, "a choice answers to its base name");
        assert!(s.get("code").is_none() && s.get("text").is_none());
        assert_eq!(s["id"], "o1");
        assert_eq!(s["meta"]["tag"][0]["code"], "SUBSETTED");
        let t = without_text(r);
        assert!(t.get("text").is_none() && t.get("code").is_some());
        assert_eq!(t["meta"]["tag"][0]["code"], "SUBSETTED");
        assert!(
            subset(json!({"resourceType": "Patient", "valued": 1}), &["value".into()])
                .get("valued")
                .is_none()
        );
    }
}
