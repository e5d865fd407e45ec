//! Evaluates a parsed FHIRPath expression over a resource's JSON, keeping for every element
//! it selects where it sits (a JSON path) and what it is (its definition context), so a
//! patch can then change it.

use super::fhirpath::{Expr, Func};
use crate::elements::{child_context, choice, is_choice, type_context};
use serde_json::Value;

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    At(usize),
}

/// An element of the resource a path selected.
#[derive(Debug, Clone)]
pub(super) struct Node<'a> {
    pub value: &'a Value,
    pub at: Vec<Step>,
    /// Where its children are defined; `None` for primitives and unknown elements.
    pub context: Option<String>,
    /// For one type of a choice element (`valueQuantity`), the element's name (`value`).
    pub choice: Option<&'static str>,
}

#[derive(Debug, Clone)]
enum Item<'a> {
    Node(Node<'a>),
    Value(Value),
}

impl Item<'_> {
    fn json(&self) -> &Value {
        match self {
            Item::Node(n) => n.value,
            Item::Value(v) => v,
        }
    }
}

/// The elements `expr` selects in `resource` (whose type is `rtype`).
pub(super) fn select<'a>(resource: &'a Value, rtype: &str, expr: &Expr) -> Result<Vec<Node<'a>>, &'static str> {
    let root = Node {
        value: resource,
        at: Vec::new(),
        context: Some(rtype.to_owned()),
        choice: None,
    };
    eval(expr, &[Item::Node(root)])?
        .into_iter()
        .map(|i| match i {
            Item::Node(n) => Ok(n),
            Item::Value(_) => Err("the path must select elements of the resource"),
        })
        .collect()
}

fn eval<'a>(expr: &Expr, input: &[Item<'a>]) -> Result<Vec<Item<'a>>, &'static str> {
    Ok(match expr {
        Expr::This => input.to_vec(),
        Expr::Literal(v) => vec![Item::Value(v.clone())],
        Expr::Member(base, name) => {
            let from = match base {
                Some(b) => eval(b, input)?,
                None => input.to_vec(),
            };
            let mut out = Vec::new();
            for item in from {
                if let Item::Node(n) = item {
                    members(n, name, &mut out);
                }
            }
            out
        }
        Expr::Index(base, i) => eval(base, input)?.into_iter().nth(*i).into_iter().collect(),
        Expr::Call(base, func) => {
            let from = match base {
                Some(b) => eval(b, input)?,
                None => input.to_vec(),
            };
            call(func, from)?
        }
        Expr::Equals(left, equal, right) => {
            let (l, r) = (eval(left, input)?, eval(right, input)?);
            if l.is_empty() || r.is_empty() {
                Vec::new()
            } else {
                let same = l.len() == r.len() && l.iter().zip(&r).all(|(a, b)| same_value(a.json(), b.json()));
                vec![Item::Value(Value::Bool(same == *equal))]
            }
        }
        Expr::And(left, right) => match (truth(&eval(left, input)?), truth(&eval(right, input)?)) {
            (Some(false), _) | (_, Some(false)) => vec![Item::Value(Value::Bool(false))],
            (Some(true), Some(true)) => vec![Item::Value(Value::Bool(true))],
            _ => Vec::new(),
        },
        Expr::Or(left, right) => match (truth(&eval(left, input)?), truth(&eval(right, input)?)) {
            (Some(true), _) | (_, Some(true)) => vec![Item::Value(Value::Bool(true))],
            (Some(false), Some(false)) => vec![Item::Value(Value::Bool(false))],
            _ => Vec::new(),
        },
    })
}

fn call<'a>(func: &Func, from: Vec<Item<'a>>) -> Result<Vec<Item<'a>>, &'static str> {
    Ok(match func {
        Func::Where(cond) => {
            let mut out = Vec::new();
            for item in from {
                if truth(&eval(cond, std::slice::from_ref(&item))?) == Some(true) {
                    out.push(item);
                }
            }
            out
        }
        Func::First => from.into_iter().take(1).collect(),
        Func::Last => from.into_iter().last().into_iter().collect(),
        Func::Exists => vec![Item::Value(Value::Bool(!from.is_empty()))],
        Func::Not => match truth(&from) {
            Some(b) => vec![Item::Value(Value::Bool(!b))],
            None => Vec::new(),
        },
    })
}

/// FHIRPath's singleton evaluation of a collection as a boolean: empty is unknown, one
/// boolean is itself, one other item is true, several is an error treated as unknown.
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [one] => Some(one.json().as_bool().unwrap_or(true)),
        _ => None,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The children called `name` of `n`: a JSON property of that name (each item of an array),
/// or for a choice element the property that carries a type (`value` finds `valueQuantity`);
/// a resource named by its type selects itself.
fn members<'a>(n: Node<'a>, name: &str, out: &mut Vec<Item<'a>>) {
    let Some(obj) = n.value.as_object() else { return };
    if obj.get("resourceType").and_then(Value::as_str) == Some(name) {
        out.push(Item::Node(n));
        return;
    }
    let mut push = |key: &str, value: &'a Value, context: Option<String>, choice_of: Option<&'static str>| {
        let mut at = n.at.clone();
        at.push(Step::Key(key.to_owned()));
        match value {
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let mut at = at.clone();
                    at.push(Step::At(i));
                    let context = match (&n.context, v.get("resourceType").and_then(Value::as_str)) {
                        (Some(c), Some(rt)) => child_context(c, key, Some(rt)),
                        _ => context.clone(),
                    };
                    out.push(Item::Node(Node {
                        value: v,
                        at,
                        context,
                        choice: choice_of,
                    }));
                }
            }
            v => out.push(Item::Node(Node {
                value: v,
                at,
                context,
                choice: choice_of,
            })),
        }
    };
    if let Some(v) = obj.get(name) {
        let rt = v.get("resourceType").and_then(Value::as_str);
        let context = n.context.as_deref().and_then(|c| child_context(c, name, rt));
        push(name, v, context, None);
        return;
    }
    let Some(context) = n.context.as_deref() else { return };
    if !is_choice(context, name) {
        return;
    }
    for (key, v) in obj {
        if let Some((base, suffix)) = choice(context, key)
            && base == name
        {
            push(key, v, type_context(&suffix), Some(base));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::super::fhirpath::parse;
    use super::*;
    use serde_json::json;

    fn paths(doc: &Value, expr: &str) -> Vec<Vec<Step>> {
        let rtype = doc["resourceType"].as_str().unwrap();
        select(doc, rtype, &parse(expr).unwrap())
            .unwrap()
            .into_iter()
            .map(|n| n.at)
            .collect()
    }

    fn key(k: &str) -> Step {
        Step::Key(k.to_owned())
    }

    #[test]
    fn paths_select_elements_with_their_place() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "a", "value": "1"}, {"system": "b", "value": "2"}],
            "name": [{"use": "official", "given": ["Ann", "Bo"]}, {"use": "nickname", "given": ["Cy"]}],
            "contact": [{"name": {"family": "Dee"}}]
        });
        assert_eq!(paths(&p, "Patient"), vec![Vec::<Step>::new()]);
        assert_eq!(paths(&p, "Patient.name.given").len(), 3);
        assert_eq!(
            paths(&p, "Patient.name.where(use = 'nickname').given.first()"),
            vec![vec![key("name"), Step::At(1), key("given"), Step::At(0)]]
        );
        assert_eq!(
            paths(&p, "Patient.identifier.where(system = 'b' and value = '2')"),
            vec![vec![key("identifier"), Step::At(1)]]
        );
        assert_eq!(paths(&p, "Patient.identifier.where(system != 'b')").len(), 1);
        assert_eq!(
            paths(&p, "Patient.identifier.where(system = 'a' or system = 'b')").len(),
            2
        );
        assert_eq!(paths(&p, "Patient.name[1].given.last()").len(), 1);
        assert_eq!(paths(&p, "Patient.name.where(given.exists().not())").len(), 0);
        assert!(paths(&p, "Patient.birthDate").is_empty());
        let nodes = select(&p, "Patient", &parse("Patient.contact.name").unwrap()).unwrap();
        assert_eq!(nodes[0].context.as_deref(), Some("HumanName"));
        assert!(select(&p, "Patient", &parse("'text'").unwrap()).is_err());
    }

    #[test]
    fn a_choice_element_is_found_by_its_name() {
        let o = json!({"resourceType": "Observation", "valueQuantity": {"value": 72}, "status": "final"});
        let nodes = select(&o, "Observation", &parse("Observation.value").unwrap()).unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].at, vec![key("valueQuantity")]);
        assert_eq!(nodes[0].choice, Some("value"));
        assert_eq!(nodes[0].context.as_deref(), Some("Quantity"));
        assert_eq!(paths(&o, "Observation.value.where(value = 72.0)").len(), 1);
    }
}
