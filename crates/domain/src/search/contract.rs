//! The searchability contract: which parameters are identifying (indexed only as keyed blind
//! tags) and which are clinical (indexed in plaintext, keyed by random ids). The published
//! list is docs/SEARCHABILITY.md; a test keeps the two equal.

use super::params::{ParamKind, SearchParam};
use crate::ResourceType;

/// How a parameter is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Blind tags only; candidates are decrypted and re-checked.
    Identifying,
    /// Plain index values keyed by random resource ids.
    Clinical,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Identifying => "identifying",
            Class::Clinical => "clinical",
        }
    }
}

/// Types whose demographic parameters identify a person.
pub fn is_person(rtype: ResourceType) -> bool {
    matches!(
        rtype,
        ResourceType::Patient | ResourceType::Practitioner | ResourceType::RelatedPerson | ResourceType::Person
    )
}

pub fn class_of(rtype: ResourceType, p: &SearchParam) -> Class {
    match p.kind {
        // Composites are clinical (codes with values), and so is `near` (a Location's position).
        _ if is_person(rtype) => match (p.kind, p.name) {
            (ParamKind::String, _) => Class::Identifying,
            (ParamKind::Token, "identifier" | "telecom" | "phone" | "email") => Class::Identifying,
            (ParamKind::Date, "birthdate" | "death-date") => Class::Identifying,
            _ => Class::Clinical,
        },
        _ => Class::Clinical,
    }
}
