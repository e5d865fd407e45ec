//! `_summary=true` and `_summary=text`: which top-level elements a summary keeps. FHIR marks summary elements in
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

/// The top-level elements R4 makes mandatory (minimum cardinality 1), by resource type:
/// `_summary=text` keeps them beside `text`, `id` and `meta`. A choice element is named by
/// its base (`medication` for `medication[x]`). Types not listed have none. Checked against
/// every official example and Synthea resource in the tests (a valid resource has them all).
const MANDATORY: &[(&str, &[&str])] = &[
    ("Account", &["status"]),
    ("ActivityDefinition", &["status"]),
    ("AdverseEvent", &["actuality", "subject"]),
    ("AllergyIntolerance", &["patient"]),
    ("Appointment", &["status", "participant"]),
    ("AppointmentResponse", &["appointment", "participantStatus"]),
    ("AuditEvent", &["type", "recorded", "agent", "source"]),
    ("Basic", &["code"]),
    ("Binary", &["contentType"]),
    ("BodyStructure", &["patient"]),
    ("Bundle", &["type"]),
    (
        "CapabilityStatement",
        &["status", "date", "kind", "fhirVersion", "format"],
    ),
    ("CarePlan", &["status", "intent", "subject"]),
    ("ChargeItem", &["status", "code", "subject"]),
    ("ChargeItemDefinition", &["url", "status"]),
    (
        "Claim",
        &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "provider",
            "priority",
            "insurance",
        ],
    ),
    (
        "ClaimResponse",
        &["status", "type", "use", "patient", "created", "insurer", "outcome"],
    ),
    ("ClinicalImpression", &["status", "subject"]),
    ("CodeSystem", &["status", "content"]),
    ("Communication", &["status"]),
    ("CommunicationRequest", &["status"]),
    ("CompartmentDefinition", &["url", "name", "status", "code", "search"]),
    ("Composition", &["status", "type", "date", "author", "title"]),
    ("ConceptMap", &["status"]),
    ("Condition", &["subject"]),
    ("Consent", &["status", "scope", "category"]),
    ("Coverage", &["status", "beneficiary", "payor"]),
    (
        "CoverageEligibilityRequest",
        &["status", "purpose", "patient", "created", "insurer"],
    ),
    (
        "CoverageEligibilityResponse",
        &[
            "status", "purpose", "patient", "created", "request", "outcome", "insurer",
        ],
    ),
    ("DetectedIssue", &["status"]),
    ("DeviceMetric", &["type", "category"]),
    ("DeviceRequest", &["intent", "code", "subject"]),
    ("DeviceUseStatement", &["status", "subject", "device"]),
    ("DiagnosticReport", &["status", "code"]),
    ("DocumentManifest", &["status", "content"]),
    ("DocumentReference", &["status", "content"]),
    ("Encounter", &["status", "class"]),
    ("Endpoint", &["status", "connectionType", "payloadType", "address"]),
    ("EpisodeOfCare", &["status", "patient"]),
    ("EventDefinition", &["status", "trigger"]),
    (
        "ExplanationOfBenefit",
        &[
            "status",
            "type",
            "use",
            "patient",
            "created",
            "insurer",
            "provider",
            "outcome",
            "insurance",
        ],
    ),
    ("FamilyMemberHistory", &["status", "patient", "relationship"]),
    ("Flag", &["status", "code", "subject"]),
    ("Goal", &["lifecycleStatus", "description", "subject"]),
    ("GraphDefinition", &["name", "status", "start"]),
    ("Group", &["type", "actual"]),
    ("GuidanceResponse", &["module", "status"]),
    ("ImagingStudy", &["status", "subject"]),
    ("Immunization", &["status", "vaccineCode", "patient", "occurrence"]),
    (
        "ImmunizationEvaluation",
        &["status", "patient", "targetDisease", "immunizationEvent", "doseStatus"],
    ),
    ("ImmunizationRecommendation", &["patient", "date", "recommendation"]),
    (
        "ImplementationGuide",
        &["url", "name", "status", "packageId", "fhirVersion"],
    ),
    ("Invoice", &["status"]),
    ("Library", &["status", "type"]),
    ("Linkage", &["item"]),
    ("List", &["status", "mode"]),
    ("Measure", &["status"]),
    ("MeasureReport", &["status", "type", "measure", "period"]),
    ("Media", &["status", "content"]),
    (
        "MedicationAdministration",
        &["status", "medication", "subject", "effective"],
    ),
    ("MedicationDispense", &["status", "medication"]),
    ("MedicationRequest", &["status", "intent", "medication", "subject"]),
    ("MedicationStatement", &["status", "medication", "subject"]),
    ("MessageDefinition", &["status", "date", "event"]),
    ("MessageHeader", &["event", "source"]),
    ("MolecularSequence", &["coordinateSystem"]),
    ("NamingSystem", &["name", "status", "kind", "date", "uniqueId"]),
    ("NutritionOrder", &["status", "intent", "patient", "dateTime"]),
    ("Observation", &["status", "code"]),
    ("ObservationDefinition", &["code"]),
    (
        "OperationDefinition",
        &["name", "status", "kind", "code", "system", "type", "instance"],
    ),
    ("OperationOutcome", &["issue"]),
    (
        "PaymentNotice",
        &["status", "created", "payment", "recipient", "amount"],
    ),
    (
        "PaymentReconciliation",
        &["status", "created", "paymentDate", "paymentAmount"],
    ),
    ("PlanDefinition", &["status"]),
    ("Procedure", &["status", "subject"]),
    ("Provenance", &["target", "recorded", "agent"]),
    ("Questionnaire", &["status"]),
    ("QuestionnaireResponse", &["status"]),
    ("RelatedPerson", &["patient"]),
    ("RequestGroup", &["status", "intent"]),
    ("ResearchStudy", &["status"]),
    ("ResearchSubject", &["status", "study", "individual"]),
    ("RiskAssessment", &["status", "subject"]),
    ("Schedule", &["actor"]),
    (
        "SearchParameter",
        &["url", "name", "status", "description", "code", "base", "type"],
    ),
    ("ServiceRequest", &["status", "intent", "subject"]),
    ("Slot", &["schedule", "status", "start", "end"]),
    (
        "StructureDefinition",
        &["url", "name", "status", "kind", "abstract", "type"],
    ),
    ("StructureMap", &["url", "name", "status", "group"]),
    ("Subscription", &["status", "reason", "criteria", "channel"]),
    ("Substance", &["code"]),
    ("SupplyRequest", &["item", "quantity"]),
    ("Task", &["status", "intent"]),
    ("TerminologyCapabilities", &["status", "date", "kind"]),
    ("TestReport", &["status", "testScript", "result"]),
    ("TestScript", &["url", "name", "status"]),
    ("ValueSet", &["status"]),
    ("VerificationResult", &["status"]),
    (
        "VisionPrescription",
        &[
            "status",
            "created",
            "patient",
            "dateWritten",
            "prescriber",
            "lensSpecification",
        ],
    ),
];

/// The elements `_summary=text` keeps besides `id` and `meta`: the narrative and the
/// type's mandatory elements.
pub fn text_elements(rtype: ResourceType) -> Vec<String> {
    let mut out = vec!["text".to_owned()];
    if let Some((_, m)) = MANDATORY.iter().find(|(t, _)| *t == rtype.as_str()) {
        out.extend(m.iter().map(|e| (*e).to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does `resource` carry `element` (a choice element by any of its variants)?
    fn has(resource: &serde_json::Map<String, serde_json::Value>, element: &str) -> bool {
        resource.keys().any(|k| {
            k == element
                || (k.len() > element.len()
                    && k.starts_with(element)
                    && k.as_bytes()[element.len()].is_ascii_uppercase())
        })
    }

    /// Every resource of a listed type in the official examples and the Synthea bundles
    /// carries every element the table calls mandatory (a valid resource must).
    #[test]
    fn mandatory_elements_are_present_in_every_valid_example() {
        for (t, _) in MANDATORY {
            assert!(t.parse::<ResourceType>().is_ok(), "{t} is not an R4 type");
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
        if !root.exists() {
            eprintln!("NOT RUN: needs {}", root.display());
            return;
        }
        let mut resources = Vec::new();
        for dir in ["fhir-examples", "synthea"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for f in entries.flatten() {
                let Ok(bytes) = std::fs::read(f.path()) else { continue };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                    continue;
                };
                match v["entry"].as_array() {
                    Some(entries) if v["resourceType"] == "Bundle" && dir == "synthea" => {
                        resources.extend(entries.iter().map(|e| e["resource"].clone()))
                    }
                    _ => resources.push(v),
                }
            }
        }
        let mut checked = std::collections::BTreeSet::new();
        for r in &resources {
            let Some(obj) = r.as_object() else { continue };
            let Some(t) = r["resourceType"].as_str() else { continue };
            let Some((_, mandatory)) = MANDATORY.iter().find(|(name, _)| *name == t) else {
                continue;
            };
            for e in *mandatory {
                assert!(has(obj, e), "a {t} example lacks {e}, which the table calls mandatory");
            }
            checked.insert(t.to_owned());
        }
        assert!(checked.len() >= 20, "too few types checked: {checked:?}");
    }

    #[test]
    fn text_summaries_keep_the_narrative_and_the_mandatory_elements() {
        assert_eq!(text_elements(ResourceType::Patient), vec!["text"]);
        assert_eq!(text_elements(ResourceType::Observation), vec!["text", "status", "code"]);
    }

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
