//! The shape of FHIR R4 elements, as far as a patch needs it: whether an element repeats
//! (so a JSON array holds it) and what it contains (so a path can walk into it). The table
//! (`table.rs`) is generated from HL7's R4 StructureDefinitions by `tools/gen_elements.py`.
//!
//! A *context* names where an element's children are defined: a resource or data type
//! (`Patient`, `HumanName`) or a backbone element's path (`Patient.contact`).

mod table;

#[cfg(test)]
mod tests;

use table::ELEMENTS;

/// FHIR's primitive types, as they appear after `value` in a choice element's JSON name
/// (`valueString`, `valueDateTime`), with the first letter upper-cased.
const PRIMITIVES: &[&str] = &[
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "Date",
    "DateTime",
    "Decimal",
    "Id",
    "Instant",
    "Integer",
    "Markdown",
    "Oid",
    "PositiveInt",
    "String",
    "Time",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
];

/// What an element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A primitive value (or an element the table does not know).
    Primitive,
    /// An element with children of its own, defined under its path.
    Backbone,
    /// A complex data type or resource (`HumanName`, `Resource`).
    Complex(&'static str),
    /// The same shape as the element at this path (`Questionnaire.item.item`).
    SameAs(&'static str),
    /// A choice of types: the JSON name carries the type (`valueQuantity`).
    Choice,
}

/// One element of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub repeats: bool,
    pub shape: Shape,
}

fn lookup(path: &str) -> Option<&'static str> {
    ELEMENTS
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .and_then(|i| ELEMENTS.get(i))
        .map(|(_, spec)| *spec)
}

fn parse(spec: &'static str) -> Element {
    let (repeats, rest) = match spec.strip_prefix('*') {
        Some(rest) => (true, rest),
        None => (false, spec),
    };
    let shape = match rest {
        "" => Shape::Primitive,
        "+" => Shape::Backbone,
        "[x]" => Shape::Choice,
        other => match other.strip_prefix('=') {
            Some(path) => Shape::SameAs(path),
            None => Shape::Complex(other),
        },
    };
    Element { repeats, shape }
}

/// The element `name` of `context`, as named in the definitions (a choice element as
/// `value[x]`). Unknown names are single primitives.
pub fn element(context: &str, name: &str) -> Element {
    if name == "extension" || name == "modifierExtension" {
        return Element {
            repeats: true,
            shape: Shape::Complex("Extension"),
        };
    }
    lookup(&format!("{context}.{name}")).map_or(
        Element {
            repeats: false,
            shape: Shape::Primitive,
        },
        parse,
    )
}

/// A JSON property name of `context` that is one type of a choice element: `valueQuantity`
/// gives `("value", "Quantity")`.
pub fn choice(context: &str, json_name: &str) -> Option<(&'static str, String)> {
    json_name
        .char_indices()
        .filter(|(i, c)| *i > 0 && c.is_ascii_uppercase())
        .find_map(|(i, _)| {
            let (base, suffix) = json_name.split_at(i);
            let path = format!("{context}.{base}[x]");
            let index = ELEMENTS.binary_search_by(|(p, _)| (*p).cmp(path.as_str())).ok()?;
            let (full, _) = ELEMENTS.get(index)?;
            let base = full.rsplit('.').next()?.strip_suffix("[x]")?;
            Some((base, suffix.to_owned()))
        })
}

/// Whether `name` of `context` is a choice element (`value` of `Observation`).
pub fn is_choice(context: &str, name: &str) -> bool {
    lookup(&format!("{context}.{name}[x]")).is_some()
}

/// The context of a value of a choice element's type (`Quantity` for `valueQuantity`), or
/// `None` for a primitive type.
pub fn type_context(type_suffix: &str) -> Option<String> {
    (!PRIMITIVES.contains(&type_suffix)).then(|| type_suffix.to_owned())
}

/// The context of the children of `name` in `context`, for a value `resource_type` names
/// when the element holds a resource (`contained`, `Bundle.entry.resource`).
pub fn child_context(context: &str, name: &str, resource_type: Option<&str>) -> Option<String> {
    match element(context, name).shape {
        Shape::Primitive | Shape::Choice => None,
        Shape::Backbone => Some(format!("{context}.{name}")),
        Shape::SameAs(path) => Some(path.to_owned()),
        Shape::Complex("Resource") => resource_type.map(str::to_owned),
        Shape::Complex(t) => Some(t.to_owned()),
    }
}
