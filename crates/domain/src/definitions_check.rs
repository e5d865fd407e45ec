//! Our tables against the official R4 definitions in ../shared/testdata/fhir-definitions
//! (read at test time; never copied into the project).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::ResourceType;
use crate::search::params::{self, ParamKind};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn definitions(file: &str) -> Option<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/fhir-definitions")
        .join(file);
    match std::fs::read(&p) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap()),
        Err(_) => {
            eprintln!("NOT RUN: needs {}", p.display());
            None
        }
    }
}

/// The resource types whose every official parameter we support.
pub const SEARCH_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Organization",
    "Location",
    "HealthcareService",
    "Schedule",
    "Slot",
    "Appointment",
    "Encounter",
    "EpisodeOfCare",
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Specimen",
    "Condition",
    "Procedure",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationStatement",
    "Medication",
    "AllergyIntolerance",
    "Immunization",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Consent",
    "DocumentReference",
    "Task",
    "Communication",
    "Flag",
    "Claim",
    "ExplanationOfBenefit",
    "Coverage",
    "Provenance",
    "Group",
    "Device",
    "ImagingStudy",
    "QuestionnaireResponse",
];

#[test]
fn search_parameter_table_matches_the_official_definitions() {
    let Some(defs) = definitions("search-parameters.json") else {
        return;
    };
    let mut official: BTreeMap<(String, String), (String, BTreeSet<String>)> = BTreeMap::new();
    for e in defs["entry"].as_array().unwrap() {
        let r = &e["resource"];
        for base in r["base"].as_array().unwrap() {
            let base = base.as_str().unwrap().to_owned();
            let targets = r["target"]
                .as_array()
                .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            official.insert(
                (base, r["code"].as_str().unwrap().to_owned()),
                (r["type"].as_str().unwrap().to_owned(), targets),
            );
        }
    }
    let mut checked = 0;
    for t in SEARCH_TYPES {
        let rtype: ResourceType = t.parse().unwrap();
        let ours: BTreeSet<&str> = params::type_params(rtype).iter().map(|p| p.name).collect();
        let theirs: BTreeSet<&str> = official
            .keys()
            .filter(|(b, _)| b == t)
            .map(|(_, c)| c.as_str())
            .collect();
        assert_eq!(ours, theirs, "{t}: parameter names");
        for p in params::type_params(rtype) {
            let (kind, targets) = &official[&((*t).to_owned(), p.name.to_owned())];
            assert_eq!(p.kind.as_str(), kind, "{t}.{}: type", p.name);
            assert!(!p.paths.is_empty(), "{t}.{}: a path", p.name);
            for target in p.targets {
                assert!(
                    targets.contains(target.as_str()),
                    "{t}.{}: target {target} not official",
                    p.name
                );
            }
            if p.kind == ParamKind::Reference {
                assert!(!p.targets.is_empty(), "{t}.{}: reference targets", p.name);
            }
            if p.kind == ParamKind::Composite {
                assert!(p.components.len() >= 2, "{t}.{}: components", p.name);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 600);
    // The other types' few parameters are official too.
    for t in ResourceType::ALL.iter().filter(|t| !SEARCH_TYPES.contains(&t.as_str())) {
        for p in params::type_params(*t) {
            let Some((kind, _)) = official.get(&(t.as_str().to_owned(), p.name.to_owned())) else {
                panic!("{t}.{}: not an official parameter", p.name);
            };
            assert_eq!(p.kind.as_str(), kind, "{t}.{}: type", p.name);
        }
    }
    // `$everything`'s care dates: exactly the types of the shared `clinical-date`, each with
    // its `date` in the table.
    let clinical = defs["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["id"] == "clinical-date")
        .expect("clinical-date");
    let bases: BTreeSet<&str> = clinical["base"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    let ours: BTreeSet<&str> = params::CLINICAL_DATE.iter().map(|t| t.as_str()).collect();
    assert_eq!(ours, bases, "clinical-date types");
    for t in params::CLINICAL_DATE {
        let p = params::find(*t, "date").unwrap_or_else(|| panic!("{t}: no date"));
        assert_eq!(p.kind, ParamKind::Date, "{t}.date");
    }
    for common in params::COMMON {
        let (kind, _) = &official[&("Resource".to_owned(), common.name.to_owned())];
        assert_eq!(common.kind.as_str(), kind, "{}", common.name);
    }
}

#[test]
fn compartment_table_matches_the_official_definition() {
    let Some(def) = definitions("CompartmentDefinition-patient.json") else {
        return;
    };
    let mut seen = 0;
    for r in def["resource"].as_array().unwrap() {
        let code = r["code"].as_str().unwrap();
        let rtype: ResourceType = code.parse().unwrap_or_else(|_| panic!("{code} is an R4 type we lack"));
        let theirs: BTreeSet<&str> = r["param"]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_str().unwrap()).collect())
            .unwrap_or_default();
        let ours: BTreeSet<&str> = crate::compartment::params(rtype).iter().map(|p| p.name).collect();
        assert_eq!(ours, theirs, "{code}");
        seen += 1;
    }
    assert_eq!(seen, 145);
}
