//! Time-dependent access with an injected clock: token expiry, break-the-glass expiry and
//! relationship windows, without sleeping. Runs on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::access::{Access, Reach, ScopeSet};
use crate::{NewAccount, ReadOutcome, Username, Vault};
use carevault_crypto::Password;
use carevault_domain::{FixedClock, Resource, ResourceId, ResourceType, Timestamp};
use carevault_storage::AnyStore;
use serde_json::json;
use std::sync::Arc;

const MINUTE: i64 = 60_000;

async fn vault(dir: &std::path::Path, clock: FixedClock) -> Vault<AnyStore> {
    crate::test_vault::sqlite_vault(&dir.join("t.db"), clock).await
}

async fn create(v: &Vault<AnyStore>, body: serde_json::Value) -> ResourceId {
    let system = Access::unchecked_system();
    let r = Resource::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
    v.session(&system).create(r).await.unwrap().resource.id
}

async fn account(v: &Vault<AnyStore>, name: &str, role: crate::access::Role, practitioner: Option<ResourceId>) {
    v.add_user(NewAccount {
        username: Username::parse(name).unwrap(),
        role,
        patient: None,
        practitioner,
        password: Password::new("a long enough password".into()),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grants_and_windows_expire_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-06-01T10:00:00Z").unwrap());
    let v = vault(dir.path(), clock.clone()).await;
    let dr = create(&v, json!({"resourceType": "Practitioner"})).await;
    let p = create(&v, json!({"resourceType": "Patient"})).await;
    let obs = create(
        &v,
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "subject": {"reference": format!("Patient/{p}")}}),
    )
    .await;
    // An encounter that ended at 09:00 today: a relationship for 14 days.
    create(
        &v,
        json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
               "subject": {"reference": format!("Patient/{p}")},
               "participant": [{"individual": {"reference": format!("Practitioner/{dr}")}}],
               "period": {"start": "2026-06-01T08:00:00Z", "end": "2026-06-01T09:00:00Z"}}),
    )
    .await;
    let dr2 = create(&v, json!({"resourceType": "Practitioner"})).await;
    account(&v, "osler", crate::access::Role::Physician, Some(dr.clone())).await;
    account(&v, "cushing", crate::access::Role::Physician, Some(dr2.clone())).await;
    let scopes = ScopeSet::parse("user/*.rs").unwrap();
    let name = Username::parse("osler").unwrap();
    let token = v.mint_token(&name, &scopes, 15 * 60).await.unwrap();

    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert_eq!(access.reach(), &Reach::Patients(vec![p.clone()]));
    let read = |a: Arc<Access>| {
        let v = &v;
        let obs = obs.clone();
        async move { v.session(&a).read(ResourceType::Observation, &obs).await.unwrap() }
    };
    assert!(matches!(read(access).await, ReadOutcome::Found(_)));

    // 15 minutes later the token is dead.
    clock.advance_millis(15 * MINUTE);
    assert!(v.authenticate(&token).await.unwrap().is_err(), "expired");

    // 15 days on, a fresh token no longer reaches the patient: the window closed.
    clock.advance_millis(15 * 24 * 60 * MINUTE);
    let token = v.mint_token(&name, &scopes, 15 * 60).await.unwrap();
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert_eq!(access.reach(), &Reach::Patients(Vec::new()));
    assert!(matches!(read(access).await, ReadOutcome::NotFound));

    // Break the glass as the other physician: 60 minutes of access, then none.
    let other = Username::parse("cushing").unwrap();
    let token = v.mint_token(&other, &scopes, 24 * 60 * 60).await.unwrap();
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert!(matches!(read(access.clone()).await, ReadOutcome::NotFound));
    let grant = v
        .session(&access)
        .break_the_glass(&p, "unconscious in the emergency room")
        .await
        .unwrap();
    assert_eq!(grant.expires.millis() - grant.started.millis(), 60 * MINUTE);
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert!(matches!(read(access).await, ReadOutcome::Found(_)));
    clock.advance_millis(59 * MINUTE);
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert!(matches!(read(access).await, ReadOutcome::Found(_)));
    clock.advance_millis(MINUTE);
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert!(
        matches!(read(access).await, ReadOutcome::NotFound),
        "the grant has expired"
    );
    // It stays on record for review.
    let system = Access::unchecked_system();
    let grants = v.session(&system).emergency_grants(Some(&p), true).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].reason, "unconscious in the emergency room");
}

/// A nurse on Ward A of Cardiology; one patient admitted there, one on Ward B of the same
/// department, one discharged from Ward A: (nurse, on A, on B, cardiology).
async fn ward_world(v: &Vault<AnyStore>) -> (ResourceId, ResourceId, ResourceId, ResourceId) {
    let ward_a = create(v, json!({"resourceType": "Location", "name": "Ward A"})).await;
    let ward_b = create(v, json!({"resourceType": "Location", "name": "Ward B"})).await;
    let cardiology = create(v, json!({"resourceType": "Organization", "name": "Cardiology"})).await;
    let nurse = create(v, json!({"resourceType": "Practitioner"})).await;
    create(
        v,
        json!({"resourceType": "PractitionerRole", "active": true,
               "practitioner": {"reference": format!("Practitioner/{nurse}")},
               "organization": {"reference": format!("Organization/{cardiology}")},
               "location": [{"reference": format!("Location/{ward_a}")}],
               "period": {"start": "2026-01-01T00:00:00Z"}}),
    )
    .await;
    let admitted = |ward: &ResourceId, p: &ResourceId, status: &str| {
        json!({"resourceType": "Encounter", "status": status, "class": {"code": "IMP"},
               "subject": {"reference": format!("Patient/{p}")},
               "location": [{"location": {"reference": format!("Location/{ward}")}}],
               "serviceProvider": {"reference": format!("Organization/{cardiology}")},
               "period": {"start": "2026-05-30T08:00:00Z"}})
    };
    let on_a = create(v, json!({"resourceType": "Patient"})).await;
    let on_b = create(v, json!({"resourceType": "Patient"})).await;
    let discharged = create(v, json!({"resourceType": "Patient"})).await;
    create(v, admitted(&ward_a, &on_a, "in-progress")).await;
    create(v, admitted(&ward_b, &on_b, "in-progress")).await;
    create(v, admitted(&ward_a, &discharged, "finished")).await;
    (nurse, on_a, on_b, cardiology)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ward_staff_reach_admitted_patients_and_consent_may_name_an_organization() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-06-01T10:00:00Z").unwrap());
    let v = vault(dir.path(), clock.clone()).await;
    let (nurse, on_a, _, cardiology) = ward_world(&v).await;
    account(&v, "nightingale", crate::access::Role::Nurse, Some(nurse.clone())).await;
    let name = Username::parse("nightingale").unwrap();
    let scopes = ScopeSet::parse("user/*.rs").unwrap();
    let token = v.mint_token(&name, &scopes, 60 * 60).await.unwrap();
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert_eq!(
        access.reach(),
        &Reach::Patients(vec![on_a.clone()]),
        "the ward's admitted patient only: not another ward's, not a discharged one"
    );

    // A consent that refuses the nurse's organization shuts them out of that patient.
    create(
        &v,
        json!({"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": format!("Patient/{on_a}")},
               "provision": {"type": "deny", "actor": [{"role": {"text": "department"},
                   "reference": {"reference": format!("Organization/{cardiology}")}}]}}),
    )
    .await;
    let access = v.authenticate(&token).await.unwrap().unwrap();
    assert!(matches!(
        v.session(&access).read(ResourceType::Patient, &on_a).await.unwrap(),
        ReadOutcome::NotFound
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_relationships_when_the_policy_turns_them_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-06-01T10:00:00Z").unwrap());
    let v = vault(dir.path(), clock).await.with_policy(crate::AccessPolicy {
        department_relationships: true,
        ward_relationships: false,
        ..crate::AccessPolicy::default()
    });
    let (nurse, on_a, on_b, cardiology) = ward_world(&v).await;
    let links = v.care_links(&nurse).await.unwrap();
    let mut got: Vec<&str> = links.patients.iter().map(ResourceId::as_str).collect();
    got.sort_unstable();
    let mut want = vec![on_a.as_str(), on_b.as_str()];
    want.sort_unstable();
    assert_eq!(got, want, "every patient admitted to the department, on any ward");
    assert_eq!(links.organizations, vec![cardiology]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_acts_for_those_they_hold_authority_over() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-06-01T10:00:00Z").unwrap());
    let v = vault(dir.path(), clock).await;
    let child = create(&v, json!({"resourceType": "Patient"})).await;
    let friend = create(&v, json!({"resourceType": "Patient"})).await;
    let former = create(&v, json!({"resourceType": "Patient"})).await;
    let related = |p: &ResourceId, code: &str, extra: serde_json::Value| {
        let mut r = json!({"resourceType": "RelatedPerson", "patient": {"reference": format!("Patient/{p}")},
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": code}]}]});
        for (k, val) in extra.as_object().unwrap() {
            r[k] = val.clone();
        }
        r
    };
    let guardian = create(&v, related(&child, "GUARD", json!({"active": true}))).await;
    let just_a_friend = create(&v, related(&friend, "FRND", json!({}))).await;
    let lapsed = create(
        &v,
        related(&former, "POWATT", json!({"period": {"end": "2026-01-01T00:00:00Z"}})),
    )
    .await;
    let links: Vec<serde_json::Value> = [&guardian, &just_a_friend, &lapsed]
        .iter()
        .map(|r| json!({"other": {"reference": format!("RelatedPerson/{r}")}, "type": "seealso"}))
        .collect();
    let me = create(&v, json!({"resourceType": "Patient", "link": links})).await;
    v.add_user(NewAccount {
        username: Username::parse("parent").unwrap(),
        role: crate::access::Role::Patient,
        patient: Some(me.clone()),
        practitioner: None,
        password: Password::new("a long enough password".into()),
    })
    .await
    .unwrap();
    let name = Username::parse("parent").unwrap();
    let user = v
        .mint_token(&name, &ScopeSet::parse("user/*.rs").unwrap(), 600)
        .await
        .unwrap();
    let access = v.authenticate(&user).await.unwrap().unwrap();
    assert_eq!(
        access.reach(),
        &Reach::Patients(vec![me.clone(), child.clone()]),
        "own record and the child's: not a friend's, not a lapsed power of attorney"
    );
    // `patient/` scopes stay on the patient's own record.
    let own_only = v
        .mint_token(&name, &ScopeSet::parse("patient/*.rs").unwrap(), 600)
        .await
        .unwrap();
    let access = v.authenticate(&own_only).await.unwrap().unwrap();
    assert_eq!(access.reach(), &Reach::Patients(vec![me]));
}
