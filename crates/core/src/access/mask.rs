//! Field masks: what a role sees of a resource it may read. A mask is applied wherever a body
//! leaves for the caller (read, vread, search results and includes, `_elements` and
//! `_summary` — which select from the masked body —, history, `$everything`, export, bundle
//! entries and write echoes). A masked resource carries the security label MASKED.

use super::Role;
use carevault_domain::ResourceType;
use serde_json::{Value, json};

/// How many trailing characters of a masked identifier stay visible.
pub const VISIBLE_TAIL: usize = 4;
/// The character that replaces the rest.
pub const MASK_CHAR: char = '•';

const MASKED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// One masking rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// `identifier[].value` reduced to its last characters.
    IdentifierTail,
    /// An element removed entirely.
    Remove(&'static str),
}

impl Role {
    /// The masks a role's reads of `rtype` go through.
    pub fn masks(self, rtype: ResourceType) -> &'static [Mask] {
        use ResourceType as T;
        match (self, rtype) {
            (Role::Receptionist, T::Patient | T::RelatedPerson | T::Person) => &[Mask::IdentifierTail],
            (Role::LabTechnician | Role::Pharmacist, T::Patient | T::RelatedPerson) => &[
                Mask::Remove("telecom"),
                Mask::Remove("address"),
                Mask::Remove("contact"),
            ],
            _ => &[],
        }
    }
}

/// `value` with all but its last `VISIBLE_TAIL` characters replaced.
pub fn mask_tail(value: &str) -> String {
    let n = value.chars().count();
    let keep = VISIBLE_TAIL.min(n / 2);
    value
        .chars()
        .enumerate()
        .map(|(i, c)| if i + keep < n { MASK_CHAR } else { c })
        .collect()
}

/// The body with `masks` applied, or `None` when nothing changed.
pub fn apply(masks: &[Mask], body: &[u8]) -> Option<Vec<u8>> {
    if masks.is_empty() {
        return None;
    }
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    for m in masks {
        match m {
            Mask::IdentifierTail => {
                for ident in v["identifier"].as_array_mut().into_iter().flatten() {
                    if let Some(value) = ident["value"].as_str() {
                        let masked = mask_tail(value);
                        ident["value"] = json!(masked);
                        changed = true;
                    }
                }
            }
            Mask::Remove(field) => {
                if let Some(obj) = v.as_object_mut() {
                    changed |= obj.remove(*field).is_some();
                }
            }
        }
    }
    if !changed {
        return None;
    }
    let meta = &mut v["meta"];
    if !meta.is_object() {
        *meta = json!({});
    }
    let label = json!({"system": MASKED_SYSTEM, "code": "MASKED"});
    match meta["security"].as_array_mut() {
        Some(list) => list.push(label),
        None => meta["security"] = json!([label]),
    }
    serde_json::to_vec(&v).ok()
}

/// An incoming body from a masked caller, with masked values put back from `current` (the
/// stored version): an identifier whose value is exactly the masked form of the stored one
/// with the same system keeps the stored value; removed elements the caller never saw are
/// kept as stored; the MASKED label is dropped. Anything the caller really changed stays.
pub fn unmask(masks: &[Mask], incoming: &mut Value, current: &Value) {
    for m in masks {
        match m {
            Mask::IdentifierTail => {
                let stored: Vec<(String, String)> = current["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| {
                        Some((
                            i["system"].as_str().unwrap_or("").to_owned(),
                            i["value"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                for ident in incoming["identifier"].as_array_mut().into_iter().flatten() {
                    let system = ident["system"].as_str().unwrap_or("").to_owned();
                    let Some(value) = ident["value"].as_str() else { continue };
                    if let Some((_, real)) = stored.iter().find(|(s, r)| *s == system && mask_tail(r) == value) {
                        ident["value"] = json!(real);
                    }
                }
            }
            Mask::Remove(field) => {
                if incoming.get(*field).is_none()
                    && let Some(kept) = current.get(*field)
                {
                    incoming[*field] = kept.clone();
                }
            }
        }
    }
    if let Some(list) = incoming["meta"]["security"].as_array_mut() {
        list.retain(|l| !(l["code"] == "MASKED" && l["system"] == MASKED_SYSTEM));
        if list.is_empty()
            && let Some(meta) = incoming["meta"].as_object_mut()
        {
            meta.remove("security");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_keep_their_tail_and_come_back_on_write() {
        assert_eq!(mask_tail("123456789"), "•••••6789");
        assert_eq!(mask_tail("12"), "•2");
        let stored = json!({"resourceType": "Patient", "identifier": [
            {"system": "urn:mrn", "value": "MRN-0042-7781"}, {"system": "urn:ssn", "value": "999-12-3456"}]});
        let masks = Role::Receptionist.masks(ResourceType::Patient);
        let shown: Value =
            serde_json::from_slice(&apply(masks, &serde_json::to_vec(&stored).unwrap()).unwrap()).unwrap();
        assert_eq!(shown["identifier"][0]["value"], "•••••••••7781");
        assert_eq!(shown["meta"]["security"][0]["code"], "MASKED");
        // the receptionist sends it back with a new phone number: identifiers survive
        let mut incoming = shown.clone();
        incoming["telecom"] = json!([{"system": "phone", "value": "555"}]);
        unmask(masks, &mut incoming, &stored);
        assert_eq!(incoming["identifier"], stored["identifier"]);
        assert!(incoming.get("meta").is_none_or(|m| m.get("security").is_none()));
        // a changed identifier is a change
        let mut edited = shown;
        edited["identifier"][1]["value"] = json!("111-22-3333");
        unmask(masks, &mut edited, &stored);
        assert_eq!(edited["identifier"][1]["value"], "111-22-3333");
        assert_eq!(edited["identifier"][0]["value"], "MRN-0042-7781");
        assert!(apply(Role::Physician.masks(ResourceType::Patient), b"{}").is_none());
    }
}
