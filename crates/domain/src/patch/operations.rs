//! FHIRPath Patch: a `Parameters` resource whose `operation` parameters add, insert,
//! delete, replace or move elements named by FHIRPath, applied in order to a copy of the
//! resource. An element's cardinality and shape come from the R4 definitions
//! (`crate::elements`), so `add` makes a list only where FHIR has one.

use super::PatchError;
use super::fhirpath::{Expr, parse};
use super::select::{Node, Step, select};
use crate::elements::{child_context, choice, element, is_choice};
use serde_json::{Map, Value};

/// Deepest nesting of `part`s in one value.
const MAX_PART_DEPTH: usize = 16;

enum Kind {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

/// The part called `name`, if there is one; more than one is an error.
fn one<'p>(parts: &[(&'p str, &'p Value)], name: &str) -> Result<Option<&'p Value>, &'static str> {
    let mut found = parts.iter().filter(|(n, _)| *n == name);
    match (found.next(), found.next()) {
        (Some((_, p)), None) => Ok(Some(*p)),
        (None, _) => Ok(None),
        _ => Err("an operation repeats a part"),
    }
}

/// One operation, read from its parameter.
struct Operation<'p> {
    kind: Kind,
    path: Expr,
    parts: Vec<(&'p str, &'p Value)>,
}

impl<'p> Operation<'p> {
    fn read(param: &'p Value) -> Result<Self, &'static str> {
        if param.get("name").and_then(Value::as_str) != Some("operation") {
            return Err("every parameter of a FHIRPath Patch is an `operation`");
        }
        let parts: Vec<(&str, &Value)> = param
            .get("part")
            .and_then(Value::as_array)
            .ok_or("an operation has parts")?
            .iter()
            .map(|p| p.get("name").and_then(Value::as_str).map(|n| (n, p)))
            .collect::<Option<_>>()
            .ok_or("every part of an operation has a name")?;
        let kind = match one(&parts, "type")?.and_then(|p| p.get("valueCode").or_else(|| p.get("valueString"))) {
            Some(Value::String(t)) => match t.as_str() {
                "add" => Kind::Add,
                "insert" => Kind::Insert,
                "delete" => Kind::Delete,
                "replace" => Kind::Replace,
                "move" => Kind::Move,
                _ => return Err("the operation type is not add, insert, delete, replace or move"),
            },
            _ => return Err("an operation has a `type`"),
        };
        let path = one(&parts, "path")?
            .and_then(|p| p.get("valueString"))
            .and_then(Value::as_str)
            .ok_or("an operation has a `path` string")?;
        for (name, _) in &parts {
            if !matches!(
                *name,
                "type" | "path" | "name" | "value" | "index" | "source" | "destination"
            ) {
                return Err("an operation has a part it does not take");
            }
            one(&parts, name)?;
        }
        Ok(Operation {
            kind,
            path: parse(path)?,
            parts,
        })
    }

    fn part(&self, name: &str) -> Option<&'p Value> {
        self.parts.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    fn name(&self) -> Result<&'p str, &'static str> {
        self.part("name")
            .and_then(|p| p.get("valueString"))
            .and_then(Value::as_str)
            .ok_or("an add operation has a `name` string")
    }

    fn index(&self, name: &'static str) -> Result<usize, &'static str> {
        self.part(name)
            .and_then(|p| p.get("valueInteger"))
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("insert and move take `index`, `source` and `destination` as non-negative integers")
    }

    fn value(&self) -> Result<&'p Value, &'static str> {
        self.part("value").ok_or("this operation has a `value`")
    }
}

/// Applies a FHIRPath Patch (`Parameters`) to a copy of `doc`.
pub(super) fn apply(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    // No `parameter` at all is an empty patch (FHIR JSON leaves out empty lists).
    let params = match patch.get("parameter") {
        None => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(PatchError::Malformed(0, "a FHIRPath Patch's `parameter` is a list")),
    };
    let ops = params
        .iter()
        .enumerate()
        .map(|(i, p)| Operation::read(p).map_err(|e| PatchError::Malformed(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let rtype = doc
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or(PatchError::Failed(0, "the resource has no type"))?
        .to_owned();
    let mut out = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        run(&mut out, &rtype, op).map_err(|e| match e {
            Fault::Malformed(m) => PatchError::Malformed(i, m),
            Fault::Failed(m) => PatchError::Failed(i, m),
        })?;
    }
    Ok(out)
}

enum Fault {
    Malformed(&'static str),
    Failed(&'static str),
}

/// Where an element sits and what it is, without a borrow of the document.
struct Place {
    at: Vec<Step>,
    context: Option<String>,
    choice: Option<&'static str>,
}

impl From<Node<'_>> for Place {
    fn from(n: Node<'_>) -> Self {
        Place {
            at: n.at,
            context: n.context,
            choice: n.choice,
        }
    }
}

fn places(doc: &Value, rtype: &str, expr: &Expr) -> Result<Vec<Place>, Fault> {
    Ok(select(doc, rtype, expr)
        .map_err(Fault::Malformed)?
        .into_iter()
        .map(Place::from)
        .collect())
}

fn single(mut found: Vec<Place>) -> Result<Place, Fault> {
    match (found.pop(), found.is_empty()) {
        (Some(p), true) => Ok(p),
        (None, _) => Err(Fault::Failed("the path selects no element")),
        (Some(_), false) => Err(Fault::Failed("the path selects more than one element")),
    }
}

fn run(doc: &mut Value, rtype: &str, op: &Operation<'_>) -> Result<(), Fault> {
    match op.kind {
        Kind::Add => {
            let target = single(places(doc, rtype, &op.path)?)?;
            let name = op.name().map_err(Fault::Malformed)?;
            add(doc, &target, name, op.value().map_err(Fault::Malformed)?)
        }
        Kind::Insert => {
            let (parent, name) = list_of(doc, rtype, &op.path)?;
            let index = op.index("index").map_err(Fault::Malformed)?;
            let rt = resource_type(op.value().map_err(Fault::Malformed)?);
            let context = parent.context.as_deref().and_then(|c| child_context(c, name, rt));
            let value = value_of(op.value().map_err(Fault::Malformed)?, context.as_deref(), 0)?.1;
            let list = list_mut(doc, &parent.at, name)?;
            if index > list.len() {
                return Err(Fault::Failed("the index is past the end of the list"));
            }
            list.insert(index, value);
            Ok(())
        }
        Kind::Move => {
            let (parent, name) = list_of(doc, rtype, &op.path)?;
            let (from, to) = (
                op.index("source").map_err(Fault::Malformed)?,
                op.index("destination").map_err(Fault::Malformed)?,
            );
            let list = list_mut(doc, &parent.at, name)?;
            if from >= list.len() || to >= list.len() {
                return Err(Fault::Failed("source and destination must be within the list"));
            }
            let v = list.remove(from);
            list.insert(to, v);
            Ok(())
        }
        Kind::Delete => {
            let found = places(doc, rtype, &op.path)?;
            if found.is_empty() {
                return Ok(());
            }
            let target = single(found)?;
            if target.at.is_empty() {
                return Err(Fault::Failed("the resource itself cannot be deleted by a patch"));
            }
            remove(doc, &target.at);
            Ok(())
        }
        Kind::Replace => {
            let target = single(places(doc, rtype, &op.path)?)?;
            replace(doc, target, op.value().map_err(Fault::Malformed)?)
        }
    }
}

fn resource_type(part: &Value) -> Option<&str> {
    part.get("resource")?.get("resourceType")?.as_str()
}

/// `add`: a new child `name` of the one element the path selects, appended to its list
/// when the element repeats, set when it does not and is absent.
fn add(doc: &mut Value, target: &Place, name: &str, part: &Value) -> Result<(), Fault> {
    let context = target.context.as_deref();
    // For a choice element, every type of it counts as the element (`valueString` is there
    // when `value` is to be added as `valueQuantity`).
    let (key, repeats, value, choice_of) = match context {
        Some(c) if is_choice(c, name) => {
            let (suffix, value) = value_of(part, None, 0)?;
            let suffix = suffix.ok_or(Fault::Malformed("a choice element takes a typed value[x]"))?;
            (format!("{name}{suffix}"), false, value, Some(c))
        }
        _ => {
            let repeats = context.is_some_and(|c| element(c, name).repeats);
            let child = context.and_then(|c| child_context(c, name, resource_type(part)));
            (name.to_owned(), repeats, value_of(part, child.as_deref(), 0)?.1, None)
        }
    };
    let obj = get_mut(doc, &target.at)
        .and_then(Value::as_object_mut)
        .ok_or(Fault::Failed("the path does not select an element with children"))?;
    let exists = match choice_of {
        Some(c) => obj.keys().any(|k| choice(c, k).is_some_and(|(base, _)| base == name)),
        None => obj.contains_key(&key),
    };
    if repeats {
        match obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(list) => list.push(value),
            _ => return Err(Fault::Failed("the list is not stored as a list")),
        }
    } else if exists {
        return Err(Fault::Failed("the element already exists (replace it instead)"));
    } else {
        obj.insert(key, value);
    }
    Ok(())
}

/// `replace`: the one element the path selects gets the new value; a choice element may
/// change type (`valueString` in place of `valueQuantity`).
fn replace(doc: &mut Value, target: Place, part: &Value) -> Result<(), Fault> {
    let Some((last, parent_at)) = target.at.split_last() else {
        return Err(Fault::Failed("the resource itself cannot be replaced by a patch"));
    };
    if let (Some(base), Step::Key(old)) = (target.choice, last) {
        let (suffix, value) = value_of(part, None, 0)?;
        let suffix = suffix.ok_or(Fault::Malformed("a choice element takes a typed value[x]"))?;
        let obj = get_mut(doc, parent_at)
            .and_then(Value::as_object_mut)
            .ok_or(Fault::Failed("the path selects no element"))?;
        obj.shift_remove(old);
        obj.insert(format!("{base}{suffix}"), value);
        return Ok(());
    }
    let value = value_of(part, target.context.as_deref(), 0)?.1;
    let slot = get_mut(doc, &target.at).ok_or(Fault::Failed("the path selects no element"))?;
    *slot = value;
    Ok(())
}

/// For `insert` and `move`: the path names a list (`Patient.identifier`); its owner must be
/// one element and the named element must repeat.
fn list_of<'e>(doc: &Value, rtype: &str, path: &'e Expr) -> Result<(Place, &'e str), Fault> {
    let Expr::Member(base, name) = path else {
        return Err(Fault::Malformed("insert and move take the path of a list"));
    };
    let parent = match base {
        Some(b) => single(places(doc, rtype, b)?)?,
        None => Place {
            at: Vec::new(),
            context: Some(rtype.to_owned()),
            choice: None,
        },
    };
    if !parent.context.as_deref().is_some_and(|c| element(c, name).repeats) {
        return Err(Fault::Failed("the path does not name a list"));
    }
    Ok((parent, name.as_str()))
}

fn list_mut<'d>(doc: &'d mut Value, parent: &[Step], name: &str) -> Result<&'d mut Vec<Value>, Fault> {
    let obj = get_mut(doc, parent)
        .and_then(Value::as_object_mut)
        .ok_or(Fault::Failed("the path does not select an element with children"))?;
    match obj.entry(name.to_owned()).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(list) => Ok(list),
        _ => Err(Fault::Failed("the list is not stored as a list")),
    }
}

fn get_mut<'d>(doc: &'d mut Value, at: &[Step]) -> Option<&'d mut Value> {
    at.iter().try_fold(doc, |cur, step| match step {
        Step::Key(k) => cur.get_mut(k.as_str()),
        Step::At(i) => cur.get_mut(*i),
    })
}

/// Removes the element at `at`, then any list or object the removal left empty (FHIR has no
/// empty elements).
fn remove(doc: &mut Value, at: &[Step]) {
    let mut at = at.to_vec();
    while let Some(last) = at.pop() {
        let Some(parent) = get_mut(doc, &at) else { return };
        match (parent, &last) {
            (Value::Object(m), Step::Key(k)) => {
                m.shift_remove(k);
            }
            (Value::Array(a), Step::At(i)) if *i < a.len() => {
                a.remove(*i);
            }
            _ => return,
        }
        let emptied = get_mut(doc, &at).is_some_and(|v| match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        });
        if !emptied || at.is_empty() {
            return;
        }
    }
}

/// An operation's `value` part as FHIR JSON, with the type its `value[x]` named (`Quantity`
/// for `valueQuantity`): a typed value as given, a resource, or an element built from
/// nested parts (for types without a name, such as backbone elements).
fn value_of(part: &Value, context: Option<&str>, depth: usize) -> Result<(Option<String>, Value), Fault> {
    if depth > MAX_PART_DEPTH {
        return Err(Fault::Malformed("a value nests parts too deeply"));
    }
    let obj = part.as_object().ok_or(Fault::Malformed("a part is an object"))?;
    if let Some((key, v)) = obj.iter().find(|(k, _)| k.len() > 5 && k.starts_with("value")) {
        let suffix = key.get(5..).unwrap_or("");
        if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err(Fault::Malformed("a value is given as value[x]"));
        }
        return Ok((Some(suffix.to_owned()), v.clone()));
    }
    if let Some(r) = obj.get("resource") {
        return Ok((None, r.clone()));
    }
    let parts = obj
        .get("part")
        .and_then(Value::as_array)
        .ok_or(Fault::Malformed("a value is a value[x], a resource or parts"))?;
    let mut out = Map::new();
    for p in parts {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or(Fault::Malformed("every part of a value has a name"))?;
        let (key, repeats, value) = match context {
            Some(c) if is_choice(c, name) => {
                let (suffix, value) = value_of(p, None, depth + 1)?;
                let suffix = suffix.ok_or(Fault::Malformed("a choice element takes a typed value[x]"))?;
                (format!("{name}{suffix}"), false, value)
            }
            _ => {
                let child = context.and_then(|c| child_context(c, name, resource_type(p)));
                let value = value_of(p, child.as_deref(), depth + 1)?.1;
                (
                    name.to_owned(),
                    context.is_some_and(|c| element(c, name).repeats),
                    value,
                )
            }
        };
        if repeats {
            match out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(list) => list.push(value),
                _ => return Err(Fault::Malformed("a value mixes a list and a single element")),
            }
        } else if out.insert(key, value).is_some() {
            return Err(Fault::Malformed("a value gives a single element twice"));
        }
    }
    if out.is_empty() {
        return Err(Fault::Malformed("a value has no parts"));
    }
    Ok((None, Value::Object(out)))
}

#[cfg(test)]
#[path = "operations_tests.rs"]
mod tests;
