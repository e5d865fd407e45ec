//! `_summary=true`: which top-level elements a summary keeps. FHIR marks summary elements in
//! its StructureDefinitions (`isSummary`); this server derives them from its own search
//! parameter table instead: an element is in the summary when a search parameter of the type
//! reads it (FHIR's rule of thumb: what is searched is summarised), plus `id`, `meta` and
//! `implicitRules`. docs/API.md says so; the result carries the SUBSETTED tag either way.

use carevault_domain::ResourceType;
use carevault_domain::search::params;

/// Type suffixes of FHIR choice elements (`value[x]` as `valueQuantity`, …). `Date` and
/// `Time` are left out: ordinary elements end in them too (`birthDate`).
const CHOICE_TYPES: &[&str] = &[
    "Quantity",
    "CodeableConcept",
    "String",
    "Boolean",
    "Integer",
    "Range",
    "Ratio",
    "SampledData",
    "DateTime",
    "Period",
    "Reference",
    "Age",
    "Attachment",
    "Coding",
    "Uri",
    "Canonical",
    "Identifier",
    "Timing",
];

/// The element names a summary of `rtype` keeps. A choice variant the parameters read
/// (`valueQuantity`) keeps the whole choice (`value`: every variant), as FHIR marks it.
pub fn summary_elements(rtype: ResourceType) -> Vec<String> {
    let mut out: Vec<String> = vec!["implicitRules".into()];
    let mut add = |name: &str| {
        if !name.is_empty() && name != "meta" && !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    };
    for p in params::all(rtype) {
        for path in p.paths {
            let first = path.split('.').next().unwrap_or("");
            let name = first.split('(').next().unwrap_or("").trim_end_matches('!');
            let base = CHOICE_TYPES.iter().find_map(|t| {
                name.strip_suffix(t)
                    .filter(|b| b.starts_with(|c: char| c.is_ascii_lowercase()))
            });
            add(name);
            if let Some(base) = base {
                add(base);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_follow_the_searched_elements() {
        let p = summary_elements(ResourceType::Patient);
        for e in [
            "identifier",
            "name",
            "birthDate",
            "gender",
            "address",
            "telecom",
            "active",
        ] {
            assert!(p.iter().any(|x| x == e), "Patient summary lacks {e}: {p:?}");
        }
        assert!(
            !p.iter().any(|x| x == "text" || x == "contained" || x == "photo"),
            "{p:?}"
        );
        let o = summary_elements(ResourceType::Observation);
        for e in ["status", "code", "subject", "value", "effective", "category"] {
            assert!(o.iter().any(|x| x == e), "Observation summary lacks {e}: {o:?}");
        }
        assert!(!o.iter().any(|x| x == "note"), "{o:?}");
    }
}
