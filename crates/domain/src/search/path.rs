//! Reading element values by path (see `params.rs` for the language).

use serde_json::Value;

/// One step of a path: an element name, optionally filtered by `(field=value)`.
struct Step<'p> {
    name: &'p str,
    filter: Option<(&'p str, &'p str)>,
}

fn parse_step(s: &str) -> Step<'_> {
    match s.split_once('(') {
        Some((name, rest)) => {
            let inner = rest.trim_end_matches(')');
            let filter = inner.split_once('=');
            Step { name, filter }
        }
        None => Step { name: s, filter: None },
    }
}

/// Children of `node` called `name`, or, when there is none, every choice variant
/// `name` + an upper-case type suffix (`effective` → `effectiveDateTime`, `effectivePeriod`).
fn children<'a>(node: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    let Value::Object(map) = node else { return };
    if let Some(v) = map.get(name) {
        push_flat(v, out);
        return;
    }
    for (k, v) in map {
        if k.len() > name.len() && k.starts_with(name) && k.as_bytes()[name.len()].is_ascii_uppercase() {
            push_flat(v, out);
        }
    }
}

fn push_flat<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| push_flat(i, out)),
        other => out.push(other),
    }
}

/// Every value `path` selects in `resource` (arrays flattened). An empty path selects the
/// resource itself.
pub fn select<'a>(resource: &'a Value, path: &str) -> Vec<&'a Value> {
    let path = path.trim_end_matches('!');
    let mut current = vec![resource];
    if path.is_empty() {
        return current;
    }
    for raw in path.split('.') {
        let step = parse_step(raw);
        let mut next = Vec::new();
        for node in current {
            children(node, step.name, &mut next);
        }
        if let Some((field, want)) = step.filter {
            next.retain(|v| v.get(field).and_then(Value::as_str) == Some(want));
        }
        current = next;
        if current.is_empty() {
            break;
        }
    }
    current
}

/// For a `name!` path: whether the element is present and not `false`.
pub fn flag(resource: &Value, path: &str) -> bool {
    select(resource, path)
        .iter()
        .any(|v| !matches!(v, Value::Bool(false) | Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects() {
        let r = json!({"name": [{"family": "A", "given": ["B", "C"]}, {"family": "D"}],
                       "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "e"}],
                       "effectivePeriod": {"start": "2020"}, "deceasedBoolean": false});
        assert_eq!(select(&r, "name.given"), vec![&json!("B"), &json!("C")]);
        assert_eq!(select(&r, "name.family").len(), 2);
        assert_eq!(
            select(&r, "telecom(system=phone)"),
            vec![&json!({"system": "phone", "value": "1"})]
        );
        assert_eq!(select(&r, "effective"), vec![&json!({"start": "2020"})]);
        assert_eq!(select(&r, "effectivePeriod.start"), vec![&json!("2020")]);
        assert!(select(&r, "nothing.here").is_empty());
        assert_eq!(select(&r, "").len(), 1);
        assert!(!flag(&r, "deceased!"));
        assert!(flag(&json!({"deceasedDateTime": "2020"}), "deceased!"));
    }
}
