#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use carevault_domain::ResourceType as T;

fn pid(s: &str) -> ResourceId {
    ResourceId::parse(s).unwrap()
}

fn patient_subject() -> Subject {
    Subject {
        user_id: "u1".into(),
        role: Role::Patient,
        patient: Some(pid("p1")),
        practitioner: None,
    }
}

fn staff(role: Role) -> Subject {
    Subject {
        user_id: "u2".into(),
        role,
        patient: None,
        practitioner: Some(pid("dr1")),
    }
}

/// What a scope string grants a physician with a relationship to p1 and p2, with no launch
/// context, as "Type:letters" for Observation, Patient and Practitioner, or an error.
fn decision(scope: &str) -> String {
    let scopes = match ScopeSet::parse(scope) {
        Ok(s) => s,
        Err(_) => return "error".into(),
    };
    let a = Access::decide(&staff(Role::Physician), &scopes, vec![pid("p1"), pid("p2")], None);
    let mut out = Vec::new();
    for t in [T::Observation, T::Patient, T::Practitioner] {
        let letters: String = [
            (Perms::CREATE, 'c'),
            (Perms::READ, 'r'),
            (Perms::UPDATE, 'u'),
            (Perms::DELETE, 'd'),
            (Perms::SEARCH, 's'),
        ]
        .iter()
        .filter(|(p, _)| a.allows(t, *p))
        .map(|(_, c)| *c)
        .collect();
        if !letters.is_empty() {
            let granular = matches!(a.filter(t, Perms::READ), Some(TypeFilter::AnyOf(_)));
            out.push(format!("{}:{letters}{}", t.as_str(), if granular { "?" } else { "" }));
        }
    }
    if out.is_empty() {
        "nothing".into()
    } else {
        out.join(" ")
    }
}

#[test]
fn scope_table() {
    let table: &[(&str, &str)] = &[
        // v2 letters
        ("user/Observation.rs", "Observation:rs"),
        ("user/Observation.r", "Observation:r"),
        ("user/Observation.s", "Observation:s"),
        ("user/Observation.c", "Observation:c"),
        ("user/Observation.cu", "Observation:cu"),
        ("user/Observation.cruds", "Observation:cruds"),
        ("user/Observation.crus", "Observation:crus"),
        ("user/Observation.d", "Observation:d"),
        ("user/*.rs", "Observation:rs Patient:rs Practitioner:rs"),
        // the role caps it: a physician may not write directory data
        ("user/*.cruds", "Observation:cruds Patient:cruds Practitioner:rs"),
        ("user/Practitioner.cruds", "Practitioner:rs"),
        ("user/Patient.rs user/Observation.rs", "Observation:rs Patient:rs"),
        ("user/Patient.r user/Patient.s", "Patient:rs"),
        ("  user/Patient.rs   ", "Patient:rs"),
        ("user/Patient.rs user/Patient.rs", "Patient:rs"),
        // v1
        ("user/Observation.read", "Observation:rs"),
        ("user/Observation.write", "Observation:cud"),
        ("user/Observation.*", "Observation:cruds"),
        ("user/*.read", "Observation:rs Patient:rs Practitioner:rs"),
        ("user/*.*", "Observation:cruds Patient:cruds Practitioner:rs"),
        // granular
        ("user/Observation.rs?category=vital-signs", "Observation:rs?"),
        (
            "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "Observation:rs?",
        ),
        ("user/Observation.r?code=1234-5", "Observation:r?"),
        (
            "user/Observation.rs?category=vital-signs user/Observation.rs",
            "Observation:rs",
        ),
        ("user/Observation.rs?category=a&status=final", "Observation:rs?"),
        ("user/Observation.rs?category=vital%2Dsigns", "Observation:rs?"),
        // patient scopes need a patient in context; a physician token has none here
        ("patient/Observation.rs", "nothing"),
        ("patient/*.read", "nothing"),
        // system scopes are for backend clients, not users
        ("system/*.rs", "nothing"),
        ("system/Observation.read", "nothing"),
        // context scopes grant no data
        ("openid fhirUser", "nothing"),
        ("launch/patient", "nothing"),
        (
            "launch launch/encounter offline_access online_access profile",
            "nothing",
        ),
        ("openid user/Patient.rs", "Patient:rs"),
        ("", "nothing"),
        // malformed: refused, never widened
        ("user/Observation.sr", "error"),
        ("user/Observation.rr", "error"),
        ("user/Observation.x", "error"),
        ("user/Observation.", "error"),
        ("user/Observation", "error"),
        ("user/Observation.READ", "error"),
        ("user/Observations.rs", "error"),
        ("user/observation.rs", "error"),
        ("user/.rs", "error"),
        ("users/Observation.rs", "error"),
        ("admin/*.rs", "error"),
        ("/Observation.rs", "error"),
        ("user*.rs", "error"),
        ("user/Observation.rs?", "error"),
        ("user/Observation.rs?category", "error"),
        ("user/Observation.rs?=x", "error"),
        ("user/Observation.rs?category=", "error"),
        ("user/Observation.rs?_id=1", "error"),
        ("user/Observation.cruds?category=x", "error"),
        ("user/Observation.read?category=x", "error"),
        ("user/Observation.rs?category=%zz", "error"),
        ("user/Patient.rs email", "error"),
        ("user/Patient.rs launch/patients", "error"),
        ("OPENID", "error"),
        ("user/Patient.rs\tuser/Observation.rs", "error"),
    ];
    assert!(table.len() >= 50, "the table must hold at least 50 scopes");
    for (scope, want) in table {
        assert_eq!(decision(scope), *want, "scope {scope:?}");
    }
}

#[test]
fn scopes_print_back_canonically() {
    for (input, printed) in [
        ("user/Observation.read", "user/Observation.rs"),
        ("patient/*.*", "patient/*.cruds"),
        (
            "user/Observation.rs?category=vital%2Dsigns",
            "user/Observation.rs?category=vital-signs",
        ),
        ("openid fhirUser launch/patient", "openid fhirUser launch/patient"),
    ] {
        assert_eq!(ScopeSet::parse(input).unwrap().to_string(), printed);
    }
}

#[test]
fn patients_reach_their_own_compartment_only() {
    let scopes = ScopeSet::parse("patient/*.rs").unwrap();
    let a = Access::decide(&patient_subject(), &scopes, vec![pid("p9")], None);
    assert_eq!(a.reach(), &Reach::Patients(vec![pid("p1")]));
    assert_eq!(a.compartment_limit(T::Observation), Some(&[pid("p1")][..]));
    assert_eq!(
        a.compartment_limit(T::Practitioner),
        None,
        "directory data is not limited"
    );
    assert!(a.allows(T::Practitioner, Perms::READ));
    assert!(
        !a.allows(T::Bundle, Perms::READ),
        "unscoped types need the whole tenant in reach"
    );
    assert!(
        !a.allows(T::AuditEvent, Perms::READ),
        "the access report is its own endpoint"
    );
    assert!(
        !a.allows(T::Observation, Perms::CREATE),
        "patients do not write observations"
    );
    // system scopes never reach a patient's token
    let sys = ScopeSet::parse("system/*.cruds").unwrap();
    let a = Access::decide(&patient_subject(), &sys, Vec::new(), None);
    assert!(!a.allows(T::Observation, Perms::READ));
}

#[test]
fn clinicians_reach_related_patients_and_a_launch_narrows_it() {
    let scopes = ScopeSet::parse("user/*.cruds").unwrap();
    let a = Access::decide(&staff(Role::Nurse), &scopes, vec![pid("p1"), pid("p2")], None);
    assert_eq!(a.reach(), &Reach::Patients(vec![pid("p1"), pid("p2")]));
    assert!(a.allows(T::Observation, Perms::UPDATE));
    assert!(!a.allows(T::Observation, Perms::DELETE), "nurses do not delete");
    let both = ScopeSet::parse("user/*.rs patient/*.rs").unwrap();
    let a = Access::decide(&staff(Role::Physician), &both, vec![pid("p1")], Some(&pid("p1")));
    assert_eq!(a.reach(), &Reach::Patients(vec![pid("p1")]));
    let a = Access::decide(&staff(Role::Physician), &both, vec![pid("p1")], Some(&pid("p7")));
    assert_eq!(a.reach(), &Reach::Patients(Vec::new()), "a launch never adds a patient");
}

#[test]
fn non_clinical_roles_see_no_clinical_data() {
    let scopes = ScopeSet::parse("user/*.cruds").unwrap();
    for role in [Role::Admin, Role::Analyst, Role::Auditor, Role::Receptionist] {
        let a = Access::decide(&staff(role), &scopes, Vec::new(), None);
        for t in [T::Observation, T::Condition, T::MedicationRequest, T::DiagnosticReport] {
            assert!(!a.allows(t, Perms::READ), "{role} reads {}", t.as_str());
        }
    }
    let a = Access::decide(&staff(Role::Receptionist), &scopes, Vec::new(), None);
    assert!(a.allows(T::Patient, Perms::READ) && a.allows(T::Appointment, Perms::CREATE));
    let a = Access::decide(&staff(Role::Admin), &scopes, Vec::new(), None);
    assert!(!a.allows(T::Patient, Perms::READ) && a.allows(T::Practitioner, Perms::CREATE));
    let a = Access::decide(&staff(Role::Auditor), &scopes, Vec::new(), None);
    assert!(a.allows(T::AuditEvent, Perms::SEARCH) && !a.allows(T::Patient, Perms::READ));
}
