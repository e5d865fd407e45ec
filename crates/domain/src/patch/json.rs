//! JSON Patch (RFC 6902) on a resource body: add, remove, replace, move, copy, test, with
//! JSON Pointer (RFC 6901) paths.

use super::PatchError;
use serde_json::Value;

fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => a.get_mut(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> bool {
    let Some((last, init)) = path.split_last() else {
        *doc = value;
        return true;
    };
    match parent(doc, init) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            true
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(value);
                return true;
            }
            match last.parse::<usize>() {
                Ok(i) if i <= a.len() => {
                    a.insert(i, value);
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Option<Value> {
    let (last, init) = path.split_last()?;
    match parent(doc, init)? {
        Value::Object(m) => m.shift_remove(last),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok()?;
            (i < a.len()).then(|| a.remove(i))
        }
        _ => None,
    }
}

/// Applies `patch` (a JSON array of operations) to a copy of `doc`.
pub fn apply(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch
        .as_array()
        .ok_or(PatchError::Malformed(0, "a JSON Patch is an array of operations"))?;
    let mut out = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or(PatchError::Malformed(i, "missing `op`"))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .and_then(tokens)
            .ok_or(PatchError::Malformed(i, "missing or malformed `path`"))?;
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .and_then(tokens)
                .ok_or(PatchError::Malformed(i, "missing or malformed `from`"))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(PatchError::Malformed(i, "missing `value`"))
        };
        match name {
            "add" => {
                if !add(&mut out, &path, value()?) {
                    return Err(PatchError::Failed(i, "the path's parent does not exist"));
                }
            }
            "remove" => {
                remove(&mut out, &path).ok_or(PatchError::Failed(i, "nothing to remove at the path"))?;
            }
            "replace" => {
                remove(&mut out, &path).ok_or(PatchError::Failed(i, "nothing to replace at the path"))?;
                if !add(&mut out, &path, value()?) {
                    return Err(PatchError::Failed(i, "the path's parent does not exist"));
                }
            }
            "move" => {
                let from = from()?;
                if path.starts_with(&from) && path.len() > from.len() {
                    return Err(PatchError::Failed(i, "cannot move a value into itself"));
                }
                let v = remove(&mut out, &from).ok_or(PatchError::Failed(i, "nothing to move at `from`"))?;
                if !add(&mut out, &path, v) {
                    return Err(PatchError::Failed(i, "the path's parent does not exist"));
                }
            }
            "copy" => {
                let v = get(&out, &from()?)
                    .cloned()
                    .ok_or(PatchError::Failed(i, "nothing to copy at `from`"))?;
                if !add(&mut out, &path, v) {
                    return Err(PatchError::Failed(i, "the path's parent does not exist"));
                }
            }
            "test" => {
                if get(&out, &path) != Some(&value()?) {
                    return Err(PatchError::Failed(i, "test failed"));
                }
            }
            _ => return Err(PatchError::Malformed(i, "unknown `op`")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc6902_operations() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let p = json!([
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/e", "value": "y"},
            {"op": "add", "path": "/k~1l", "value": true}
        ]);
        assert_eq!(
            apply(&doc, &p),
            Ok(json!({"a": {"b": [9, 2, 3]}, "c": "y", "e": "y", "k/l": true}))
        );
        assert!(matches!(
            apply(&doc, &json!([{"op": "test", "path": "/c", "value": "z"}])),
            Err(PatchError::Failed(0, _))
        ));
        assert!(matches!(
            apply(&doc, &json!([{"op": "remove", "path": "/zz"}])),
            Err(PatchError::Failed(0, _))
        ));
        assert!(matches!(
            apply(&doc, &json!([{"op": "jump", "path": "/c"}])),
            Err(PatchError::Malformed(0, _))
        ));
        assert!(matches!(
            apply(&doc, &json!({"op": "add"})),
            Err(PatchError::Malformed(0, _))
        ));
        assert!(matches!(
            apply(&doc, &json!([{"op": "move", "from": "/a", "path": "/a/b/x"}])),
            Err(PatchError::Failed(0, _))
        ));
    }
}
