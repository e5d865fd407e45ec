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
    /// Not indexed; answered 400 (free text, `near`, …).
    Unsupported,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Identifying => "identifying",
            Class::Clinical => "clinical",
            Class::Unsupported => "unsupported",
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
        // `near` needs geometry; composites are clinical (codes with values).
        ParamKind::Special => Class::Unsupported,
        _ if is_person(rtype) => match (p.kind, p.name) {
            (ParamKind::String, _) => Class::Identifying,
            (ParamKind::Token, "identifier" | "telecom" | "phone" | "email") => Class::Identifying,
            (ParamKind::Date, "birthdate" | "death-date") => Class::Identifying,
            _ => Class::Clinical,
        },
        _ => Class::Clinical,
    }
}
