//! Who may see what, end to end: accounts and tokens from the CLI, then every read path
//! (read, search, chains, `_has`, includes, `$everything`, history, batches) answering only
//! what the caller's role, scopes and care relationships allow — on both backends.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

struct World {
    dr1: String,
    pa: String,
    pb: String,
    pc: String,
    /// Observation ids per patient (a, b, c).
    obs: [Vec<String>; 3],
}

fn ids(bundle: &Value, rtype: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["resource"]["resourceType"] == rtype)
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).clone()).collect()
}

async fn world(app: &TestApp) -> World {
    let dr1 = app
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Osler"}]}))
        .await;
    let mut patients = Vec::new();
    for family in ["Alvarez", "Bergstrom", "Castellanos"] {
        patients.push(
            app.create(&json!({"resourceType": "Patient", "name": [{"family": family}]}))
                .await,
        );
    }
    let mut obs: [Vec<String>; 3] = Default::default();
    for (i, p) in patients.iter().enumerate() {
        for (code, category) in [("8867-4", "vital-signs"), (format!("lab-{i}").as_str(), "laboratory")] {
            obs[i].push(
                app.create(&json!({
                    "resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": format!("Patient/{p}")}
                }))
                .await,
            );
        }
    }
    // A's observation points at B's (an include must not cross into B for A).
    let cross = app
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "cross"}]},
            "subject": {"reference": format!("Patient/{}", patients[0])},
            "hasMember": [{"reference": format!("Observation/{}", obs[1][0])}]
        }))
        .await;
    obs[0].push(cross);
    // dr1 is related to A (an open encounter) and B (an active care team); not to C.
    app.create(&json!({
        "resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
        "subject": {"reference": format!("Patient/{}", patients[0])},
        "participant": [{"individual": {"reference": format!("Practitioner/{dr1}")}}],
        "period": {"start": "2020-01-01T08:00:00Z"}
    }))
    .await;
    app.create(&json!({
        "resourceType": "CareTeam", "status": "active",
        "subject": {"reference": format!("Patient/{}", patients[1])},
        "participant": [{"member": {"reference": format!("Practitioner/{dr1}")}}]
    }))
    .await;
    // C had an encounter with dr1 long ago: no relationship now.
    app.create(&json!({
        "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": format!("Patient/{}", patients[2])},
        "participant": [{"individual": {"reference": format!("Practitioner/{dr1}")}}],
        "period": {"start": "2001-01-01T08:00:00Z", "end": "2001-01-01T09:00:00Z"}
    }))
    .await;
    World {
        dr1,
        pa: patients[0].clone(),
        pb: patients[1].clone(),
        pc: patients[2].clone(),
        obs,
    }
}

async fn get(app: &TestApp, token: &str, path: &str) -> Resp {
    app.request_as(token, Method::GET, path, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_sees_their_own_compartment_and_nothing_else() {
    for backend in backends("a_patient_sees_their_own_compartment_and_nothing_else").await {
        let app = spawn_app(&backend).await;
        let w = world(&app).await;
        let link = format!("Patient/{}", w.pa);
        let t = app.account_token("alvarez", "patient", &["--patient", &link], "patient/*.rs", "15m");
        let b = backend.name();

        // read
        assert_eq!(
            get(&app, &t, &format!("Patient/{}", w.pa)).await.status,
            StatusCode::OK,
            "{b}"
        );
        for path in [
            format!("Patient/{}", w.pb),
            format!("Observation/{}", w.obs[1][0]),
            format!("Observation/{}/_history/1", w.obs[2][0]),
            format!("Observation/{}/_history", w.obs[1][1]),
            format!("Patient/{}/$everything", w.pb),
            "Observation/does-not-exist".to_owned(),
        ] {
            let r = get(&app, &t, &path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{b} {path}");
            // indistinguishable from a resource that does not exist
            assert_eq!(r.outcome(), "resource not found", "{b} {path}");
        }
        assert_eq!(
            get(&app, &t, &format!("Practitioner/{}", w.dr1)).await.status,
            StatusCode::OK,
            "directory data is readable"
        );

        // search, totals, chains, _has, includes
        let own = set(&w.obs[0].iter().collect::<Vec<_>>());
        let all = get(&app, &t, "Observation?_total=accurate").await.json();
        assert_eq!(ids(&all, "Observation"), own, "{b}");
        assert_eq!(all["total"], own.len(), "{b}: totals count only what may be seen");
        let other = get(&app, &t, &format!("Observation?subject=Patient/{}", w.pb))
            .await
            .json();
        assert!(ids(&other, "Observation").is_empty(), "{b}");
        let chained = get(&app, &t, "Observation?subject.name=Bergstrom").await.json();
        assert!(
            ids(&chained, "Observation").is_empty(),
            "{b}: chains search only what may be seen"
        );
        let has_b = get(&app, &t, "Patient?_has:Observation:subject:code=lab-1")
            .await
            .json();
        assert!(
            ids(&has_b, "Patient").is_empty(),
            "{b}: _has is no oracle for B's codes"
        );
        let has_a = get(&app, &t, "Patient?_has:Observation:subject:code=lab-0")
            .await
            .json();
        assert_eq!(ids(&has_a, "Patient"), set(&[&w.pa]), "{b}");
        let inc = get(&app, &t, "Observation?code=cross&_include=Observation:has-member")
            .await
            .json();
        assert_eq!(
            ids(&inc, "Observation"),
            set(&[&w.obs[0][2]]),
            "{b}: no include across patients"
        );
        let rev = get(&app, &t, "Patient?_revinclude=Observation:subject").await.json();
        assert_eq!(ids(&rev, "Patient"), set(&[&w.pa]), "{b}");
        assert_eq!(ids(&rev, "Observation"), own, "{b}");
        let sorted = get(&app, &t, "Observation?_sort=-_lastUpdated&_count=1").await.json();
        assert!(own.is_superset(&ids(&sorted, "Observation")), "{b}");

        // $everything and history
        let every = get(&app, &t, &format!("Patient/{}/$everything", w.pa)).await.json();
        assert_eq!(ids(&every, "Observation"), own, "{b}");
        assert!(
            ids(&every, "Encounter").len() == 1 && ids(&every, "CareTeam").is_empty(),
            "{b}"
        );
        let hist = get(&app, &t, "Observation/_history").await.json();
        assert_eq!(ids(&hist, "Observation"), own, "{b}");
        assert_eq!(get(&app, &t, "_history").await.status, StatusCode::FORBIDDEN, "{b}");

        // a batch answers entry by entry with the same decision
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Observation/{}", w.obs[0][0])}},
            {"request": {"method": "GET", "url": format!("Observation/{}", w.obs[1][0])}},
            {"request": {"method": "GET", "url": "Observation?code=8867-4"}}
        ]});
        let r = app.request_as(&t, Method::POST, "", Some(&batch)).await;
        assert_eq!(r.status, StatusCode::OK, "{b}");
        let entries = r.json()["entry"].as_array().unwrap().clone();
        assert!(
            entries[0]["response"]["status"].as_str().unwrap().starts_with("200"),
            "{b}"
        );
        assert!(
            entries[1]["response"]["status"].as_str().unwrap().starts_with("404"),
            "{b}"
        );
        assert_eq!(ids(&entries[2]["resource"], "Observation"), set(&[&w.obs[0][0]]), "{b}");

        // writes: the role decides the type, the reach decides the patient
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                         "subject": {"reference": link}});
        let r = app.request_as(&t, Method::POST, "Observation", Some(&obs)).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{b}: patients do not write observations"
        );
        let t_write = app
            .cli(&["token", "--user", "alvarez", "--scope", "patient/Consent.cruds"])
            .unwrap();
        let consent = |p: &str| {
            json!({"resourceType": "Consent", "status": "active",
                   "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                   "category": [{"text": "privacy"}], "patient": {"reference": format!("Patient/{p}")}})
        };
        let r = app
            .request_as(&t_write, Method::POST, "Consent", Some(&consent(&w.pa)))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{b}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let r = app
            .request_as(&t_write, Method::POST, "Consent", Some(&consent(&w.pb)))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{b}: not for another patient");

        // scopes narrow further: type-limited, granular
        let t_obs = app
            .cli(&["token", "--user", "alvarez", "--scope", "patient/Observation.rs"])
            .unwrap();
        assert_eq!(
            get(&app, &t_obs, &format!("Patient/{}", w.pa)).await.status,
            StatusCode::FORBIDDEN
        );
        let t_lab = app
            .cli(&[
                "token",
                "--user",
                "alvarez",
                "--scope",
                "patient/Observation.rs?category=laboratory",
            ])
            .unwrap();
        let labs = get(&app, &t_lab, "Observation").await.json();
        assert_eq!(ids(&labs, "Observation"), set(&[&w.obs[0][1]]), "{b}: granular scope");
        assert_eq!(
            get(&app, &t_lab, &format!("Observation/{}", w.obs[0][0])).await.status,
            StatusCode::NOT_FOUND,
            "{b}: a vital sign is outside a laboratory scope"
        );

        // a malformed scope is refused by the CLI, not widened
        assert!(
            app.cli(&["token", "--user", "alvarez", "--scope", "patient/Observation.sr"])
                .is_err()
        );

        // tampering, disabling and expiry: 401 on the next request
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(get(&app, &forged, "Observation").await.status, StatusCode::UNAUTHORIZED);
        // (the CLI is another process: the server notices within its epoch poll, 250 ms)
        let poll = std::time::Duration::from_millis(300);
        app.cli(&["user", "disable", "--username", "alvarez"]).unwrap();
        tokio::time::sleep(poll).await;
        assert_eq!(
            get(&app, &t, "Observation").await.status,
            StatusCode::UNAUTHORIZED,
            "{b}"
        );
        app.cli(&["user", "enable", "--username", "alvarez"]).unwrap();
        tokio::time::sleep(poll).await;
        // Disabling ended the account's sessions: enabling it again does not revive them.
        assert_eq!(
            get(&app, &t, "Observation").await.status,
            StatusCode::UNAUTHORIZED,
            "{b}"
        );
        let fresh = app
            .cli(&["token", "--user", "alvarez", "--scope", "patient/*.rs"])
            .unwrap();
        assert_eq!(get(&app, &fresh, "Observation").await.status, StatusCode::OK, "{b}");
        let short = app
            .cli(&["token", "--user", "alvarez", "--scope", "patient/*.rs", "--ttl", "1s"])
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(
            get(&app, &short, "Observation").await.status,
            StatusCode::UNAUTHORIZED,
            "{b}"
        );

        // the account list shows names to operators only through the CLI
        let list = app.cli(&["user", "list"]).unwrap();
        assert!(list.contains("alvarez\tpatient\tPatient/"), "{list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_see_what_their_role_and_relationships_allow() {
    for backend in backends("staff_see_what_their_role_and_relationships_allow").await {
        let app = spawn_app(&backend).await;
        let w = world(&app).await;
        let b = backend.name();
        let dr = format!("Practitioner/{}", w.dr1);
        let t = app.account_token("osler", "physician", &["--practitioner", &dr], "user/*.cruds", "15m");

        // related to A and B, not C
        let seen = ids(&get(&app, &t, "Observation?_count=100").await.json(), "Observation");
        let want: BTreeSet<String> = w.obs[0].iter().chain(&w.obs[1]).cloned().collect();
        assert_eq!(seen, want, "{b}");
        assert_eq!(
            get(&app, &t, &format!("Patient/{}", w.pc)).await.status,
            StatusCode::NOT_FOUND,
            "{b}"
        );
        let mine = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                          "subject": {"reference": format!("Patient/{}", w.pa)}});
        let r = app.request_as(&t, Method::POST, "Observation", Some(&mine)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b}");
        let theirs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                            "subject": {"reference": format!("Patient/{}", w.pc)}});
        let r = app.request_as(&t, Method::POST, "Observation", Some(&theirs)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{b}");
        let r = app
            .request_as(&t, Method::DELETE, &format!("Observation/{}", w.obs[2][0]), None)
            .await;
        assert!(
            r.status.is_success(),
            "{b}: a delete of what may not be seen changes nothing"
        );
        assert_eq!(
            app.get(&format!("Observation/{}", w.obs[2][0])).await.status,
            StatusCode::OK,
            "{b}: C's observation is still there"
        );

        // a receptionist: every patient's demographics, no clinical data
        let t = app.account_token("front", "receptionist", &[], "user/*.cruds", "15m");
        let patients = ids(&get(&app, &t, "Patient").await.json(), "Patient");
        assert_eq!(patients, set(&[&w.pa, &w.pb, &w.pc]), "{b}");
        assert_eq!(get(&app, &t, "Observation").await.status, StatusCode::FORBIDDEN, "{b}");
        let rev = get(&app, &t, "Patient?_revinclude=Observation:subject").await.json();
        assert!(ids(&rev, "Observation").is_empty(), "{b}: includes obey the role");

        // ... and sees identifiers masked everywhere, but keeps them when it writes back
        let mrn = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Dunmore"}],
                            "identifier": [{"system": "urn:mrn", "value": "MRN-0042-7781"}]}))
            .await;
        let shown = get(&app, &t, &format!("Patient/{mrn}")).await.json();
        assert_eq!(shown["identifier"][0]["value"], "•••••••••7781", "{b}");
        assert_eq!(shown["meta"]["security"][0]["code"], "MASKED", "{b}");
        let found = get(&app, &t, "Patient?identifier=urn:mrn|MRN-0042-7781").await;
        let found = found.json();
        assert_eq!(
            ids(&found, "Patient"),
            set(&[&mrn]),
            "{b}: the full value still finds it"
        );
        assert!(
            !String::from_utf8_lossy(&serde_json::to_vec(&found).unwrap()).contains("0042-7781"),
            "{b}"
        );
        let hist = get(&app, &t, &format!("Patient/{mrn}/_history")).await;
        assert!(
            !String::from_utf8_lossy(&hist.body).contains("0042-7781"),
            "{b}: history is masked too"
        );
        let mut edited = shown.clone();
        edited["telecom"] = json!([{"system": "phone", "value": "555-0101"}]);
        let r = app
            .request_as(&t, Method::PUT, &format!("Patient/{mrn}"), Some(&edited))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b}: {}", String::from_utf8_lossy(&r.body));
        assert!(
            !String::from_utf8_lossy(&r.body).contains("0042-7781"),
            "{b}: the echo is masked"
        );
        let stored = app.get(&format!("Patient/{mrn}")).await.json();
        assert_eq!(
            stored["identifier"][0]["value"], "MRN-0042-7781",
            "{b}: the identifier survived"
        );
        assert_eq!(stored["telecom"][0]["value"], "555-0101", "{b}");
        assert!(stored["meta"].get("security").is_none(), "{b}: no MASKED label stored");
        let patch = json!([{"op": "test", "path": "/identifier/0/value", "value": "MRN-0042-7781"}]);
        let r = app
            .client
            .patch(app.url(&format!("Patient/{mrn}")))
            .bearer_auth(&t)
            .header("content-type", "application/json-patch+json")
            .body(serde_json::to_vec(&patch).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{b}: no patch oracle on masked fields"
        );

        // an administrator manages the directory and reads no patient data
        let t = app.account_token("root", "admin", &[], "user/*.cruds", "15m");
        assert_eq!(get(&app, &t, "Patient").await.status, StatusCode::FORBIDDEN, "{b}");
        assert_eq!(
            get(&app, &t, &format!("Practitioner/{}", w.dr1)).await.status,
            StatusCode::OK
        );

        // clinical roles need a practitioner link; patient accounts a patient
        let pw = app.data.path().join("x.pw");
        std::fs::write(&pw, "a long enough password\n").unwrap();
        let pw = pw.to_str().unwrap();
        let e = app
            .cli(&[
                "user",
                "add",
                "--username",
                "n1",
                "--role",
                "nurse",
                "--password-file",
                pw,
            ])
            .unwrap_err();
        assert!(e.contains("--practitioner"), "{e}");
        let e = app
            .cli(&[
                "user",
                "add",
                "--username",
                "n2",
                "--role",
                "patient",
                "--password-file",
                pw,
            ])
            .unwrap_err();
        assert!(e.contains("--patient"), "{e}");
        let e = app
            .cli(&[
                "user",
                "add",
                "--username",
                "osler",
                "--role",
                "admin",
                "--password-file",
                pw,
            ])
            .unwrap_err();
        assert!(e.contains("taken"), "{e}");
        std::fs::write(app.data.path().join("x.pw"), "short\n").unwrap();
        let e = app
            .cli(&[
                "user",
                "add",
                "--username",
                "n3",
                "--role",
                "admin",
                "--password-file",
                pw,
            ])
            .unwrap_err();
        assert!(e.contains("at least 12"), "{e}");
    }
}

fn privacy_consent(patient: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "status": "active",
           "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
           "patient": {"reference": format!("Patient/{patient}")},
           "provision": provision})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_narrows_staff_and_a_revocation_holds_on_the_next_request() {
    for backend in backends("consent_narrows_staff_and_a_revocation_holds_on_the_next_request").await {
        let app = spawn_app(&backend).await;
        let w = world(&app).await;
        let b = backend.name();
        let psy = app
            .create(&json!({
                "resourceType": "Observation", "status": "final",
                "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
                "code": {"coding": [{"system": "http://loinc.org", "code": "psy-1"}]},
                "subject": {"reference": format!("Patient/{}", w.pb)}
            }))
            .await;
        let dr = format!("Practitioner/{}", w.dr1);
        let t = app.account_token("osler", "physician", &["--practitioner", &dr], "user/*.cruds", "15m");

        // sensitive data is closed without a consent that names it
        assert_eq!(
            get(&app, &t, &format!("Observation/{psy}")).await.status,
            StatusCode::NOT_FOUND,
            "{b}"
        );
        let seen = ids(
            &get(&app, &t, &format!("Observation?subject=Patient/{}", w.pb))
                .await
                .json(),
            "Observation",
        );
        assert_eq!(seen, set(&w.obs[1].iter().collect::<Vec<_>>()), "{b}");
        // ... while the patient sees their own record whole
        let link = format!("Patient/{}", w.pb);
        let tb = app.account_token("bergstrom", "patient", &["--patient", &link], "patient/*.rs", "15m");
        assert_eq!(
            get(&app, &tb, &format!("Observation/{psy}")).await.status,
            StatusCode::OK,
            "{b}"
        );

        // B permits PSY to dr1: visible on the next request
        let permit = privacy_consent(
            &w.pb,
            json!({"type": "permit",
                   "actor": [{"role": {"text": "treating"}, "reference": {"reference": dr}}],
                   "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}),
        );
        app.create(&permit).await;
        assert_eq!(
            get(&app, &t, &format!("Observation/{psy}")).await.status,
            StatusCode::OK,
            "{b}"
        );
        // A denies dr1 everything: gone on the next request, back after the revocation
        let deny = privacy_consent(
            &w.pa,
            json!({"type": "deny", "actor": [{"role": {"text": "any"}, "reference": {"reference": dr}}]}),
        );
        let consent_id = app.create(&deny).await;
        assert_eq!(
            get(&app, &t, &format!("Patient/{}", w.pa)).await.status,
            StatusCode::NOT_FOUND,
            "{b}"
        );
        let all = get(&app, &t, "Observation?_count=100").await.json();
        assert!(
            ids(&all, "Observation").is_disjoint(&set(&w.obs[0].iter().collect::<Vec<_>>())),
            "{b}"
        );
        let has = get(&app, &t, "Patient?_has:Observation:subject:code=lab-0")
            .await
            .json();
        assert!(
            ids(&has, "Patient").is_empty(),
            "{b}: no _has oracle through a denied patient"
        );
        let mut revoked = deny.clone();
        revoked["id"] = json!(consent_id);
        revoked["status"] = json!("inactive");
        assert_eq!(
            app.put(&format!("Consent/{consent_id}"), &revoked).await.status,
            StatusCode::OK
        );
        assert_eq!(
            get(&app, &t, &format!("Patient/{}", w.pa)).await.status,
            StatusCode::OK,
            "{b}"
        );

        // a nested deny by class: A hides observations from everyone, the rest stays
        let by_class = privacy_consent(
            &w.pa,
            json!({"type": "permit", "provision": [
                {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}
            ]}),
        );
        app.create(&by_class).await;
        let all = get(&app, &t, "Observation?_count=100").await.json();
        assert!(
            ids(&all, "Observation").is_disjoint(&set(&w.obs[0].iter().collect::<Vec<_>>())),
            "{b}"
        );
        assert_eq!(
            get(&app, &t, &format!("Patient/{}", w.pa)).await.status,
            StatusCode::OK,
            "{b}"
        );
    }
}

fn grants(v: &Value) -> Vec<Value> {
    v["parameter"].as_array().cloned().unwrap_or_default()
}

fn part<'a>(grant: &'a Value, name: &str) -> &'a Value {
    grant["part"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_the_glass_is_time_boxed_alerted_reviewed_and_shown_to_the_patient() {
    for backend in backends("break_the_glass_is_time_boxed_alerted_reviewed_and_shown_to_the_patient").await {
        let app = spawn_app(&backend).await;
        let w = world(&app).await;
        let b = backend.name();
        let dr2 = app
            .create(&json!({"resourceType": "Practitioner", "name": [{"prefix": ["Dr."], "given": ["Harvey"], "family": "Cushing"}]}))
            .await;
        let t = app.account_token(
            "cushing",
            "physician",
            &["--practitioner", &format!("Practitioner/{dr2}")],
            "user/*.rs",
            "15m",
        );
        let c_obs = format!("Observation/{}", w.obs[2][0]);
        assert_eq!(get(&app, &t, &c_obs).await.status, StatusCode::NOT_FOUND, "{b}");

        let ask = |reason: &str| json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]});
        let path = format!("Patient/{}/$break-the-glass", w.pc);
        let r = app.request_as(&t, Method::POST, &path, Some(&ask("now"))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: a reason is required");
        let reason = "collapsed in the waiting room, Castellanos-canary";
        let r = app.request_as(&t, Method::POST, &path, Some(&ask(reason))).await;
        assert_eq!(r.status, StatusCode::OK, "{b}: {}", String::from_utf8_lossy(&r.body));
        let g = grants(&r.json()).remove(0);
        let id = part(&g, "id")["valueString"].as_str().unwrap().to_owned();
        let start = part(&g, "start")["valueInstant"].as_str().unwrap().to_owned();
        let end = part(&g, "end")["valueInstant"].as_str().unwrap().to_owned();
        let minutes = |s: &str| {
            let t = s.split('T').nth(1).unwrap();
            let h: i64 = t[0..2].parse().unwrap();
            let m: i64 = t[3..5].parse().unwrap();
            h * 60 + m
        };
        assert_eq!(
            (minutes(&end) - minutes(&start)).rem_euclid(24 * 60),
            60,
            "{b}: an hour by default"
        );

        // the very next request reaches the patient
        assert_eq!(get(&app, &t, &c_obs).await.status, StatusCode::OK, "{b}");
        // a receptionist cannot break the glass
        let tr = app.account_token("front", "receptionist", &[], "user/*.rs", "15m");
        let r = app.request_as(&tr, Method::POST, &path, Some(&ask(reason))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{b}");

        // alerted in the log, with opaque ids and never the reason
        let log = app.log_text();
        assert!(
            log.contains("break-the-glass") && log.contains(&id),
            "{b}: no alert in the log"
        );
        assert!(
            !log.contains("Castellanos-canary"),
            "{b}: the reason leaked into the log"
        );

        // the patient sees it; another patient does not
        let tc = app.account_token(
            "castellanos",
            "patient",
            &["--patient", &format!("Patient/{}", w.pc)],
            "patient/*.rs",
            "15m",
        );
        let mine = get(&app, &tc, "$emergency-access").await.json();
        assert_eq!(grants(&mine).len(), 1, "{b}");
        assert_eq!(part(&grants(&mine)[0], "reason")["valueString"], reason);
        // ... and who it was: the clinician's name and role, not an account id to decode
        let staff = part(&grants(&mine)[0], "staff").clone();
        let staff_part = |n: &str| {
            staff["part"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(staff_part("name")["valueString"], "Dr. Harvey Cushing", "{b}");
        assert_eq!(staff_part("role")["valueCode"], "physician", "{b}");
        let ta = app.account_token(
            "alvarez",
            "patient",
            &["--patient", &format!("Patient/{}", w.pa)],
            "patient/*.rs",
            "15m",
        );
        assert!(
            grants(&get(&app, &ta, "$emergency-access").await.json()).is_empty(),
            "{b}"
        );
        assert_eq!(
            get(&app, &ta, &format!("$emergency-access?patient=Patient/{}", w.pc))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&app, &t, "$emergency-access").await.status,
            StatusCode::FORBIDDEN,
            "{b}"
        );

        // the privacy officer reviews it once
        let pending = app.cli(&["emergency", "list", "--unreviewed"]).unwrap();
        assert!(pending.contains(&id), "{b}: {pending}");
        let pw = app.data.path().join("aud.pw");
        std::fs::write(&pw, "a long enough password\n").unwrap();
        app.cli(&[
            "user",
            "add",
            "--username",
            "privacy",
            "--role",
            "auditor",
            "--password-file",
            pw.to_str().unwrap(),
        ])
        .unwrap();
        let e = app
            .cli(&[
                "emergency",
                "review",
                "--id",
                &id,
                "--verdict",
                "appropriate",
                "--reviewer",
                "cushing",
            ])
            .unwrap_err();
        assert!(e.contains("privacy officer"), "{b}: {e}");
        app.cli(&[
            "emergency",
            "review",
            "--id",
            &id,
            "--verdict",
            "appropriate",
            "--reviewer",
            "privacy",
        ])
        .unwrap();
        assert!(
            !app.cli(&["emergency", "list", "--unreviewed"]).unwrap().contains(&id),
            "{b}"
        );
        assert!(
            app.cli(&[
                "emergency",
                "review",
                "--id",
                &id,
                "--verdict",
                "inappropriate",
                "--reviewer",
                "privacy"
            ])
            .is_err(),
            "{b}: reviewed once"
        );
        let seen = get(&app, &tc, "$emergency-access").await.json();
        assert_eq!(
            part(part(&grants(&seen)[0], "review"), "verdict")["valueCode"],
            "appropriate"
        );
    }
}

/// A response reduced to what must not differ between two servers with different random
/// parts: status, total, the entries (type, id, mode, resource without `meta.lastUpdated`)
/// and which paging links exist (their cursors are sealed with random nonces).
fn normalized(r: &Resp) -> Value {
    let mut v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if v["resourceType"] == "Bundle" {
        let links: Vec<Value> = v["link"]
            .as_array()
            .map(|ls| ls.iter().map(|l| l["relation"].clone()).collect())
            .unwrap_or_default();
        v["link"] = json!(links);
        v.as_object_mut().map(|o| o.remove("id"));
        v.as_object_mut().map(|o| o.remove("meta"));
        for e in v["entry"].as_array_mut().into_iter().flatten() {
            let url = e["fullUrl"].as_str().unwrap_or("").to_owned();
            e["fullUrl"] = json!(url.rsplit('/').take(2).collect::<Vec<_>>().join("/"));
            if let Some(m) = e["resource"]["meta"].as_object_mut() {
                m.remove("lastUpdated");
            }
            if let Some(m) = e["response"].as_object_mut() {
                m.remove("lastModified");
            }
        }
    }
    json!({"status": r.status.as_u16(), "body": v})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_are_no_oracle_for_a_resource_the_caller_may_not_see() {
    for backend in backends("searches_are_no_oracle_for_a_resource_the_caller_may_not_see").await {
        let b = backend.name();
        let mut apps = Vec::new();
        for with_hidden in [false, true] {
            let app = spawn_app(&another(&backend).await).await;
            let put = |path: &str, body: Value| {
                let app = &app;
                let path = path.to_owned();
                async move {
                    let r = app.put(&path, &body).await;
                    assert!(r.status.is_success(), "{path}: {}", String::from_utf8_lossy(&r.body));
                }
            };
            put(
                "Practitioner/dr-1",
                json!({"resourceType": "Practitioner", "id": "dr-1"}),
            )
            .await;
            for (id, family) in [("pat-a", "Alvarez"), ("pat-b", "Bergstrom")] {
                put(
                    &format!("Patient/{id}"),
                    json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]}),
                )
                .await;
            }
            put(
                "Encounter/enc-a",
                json!({"resourceType": "Encounter", "id": "enc-a", "status": "in-progress",
                "class": {"code": "AMB"}, "subject": {"reference": "Patient/pat-a"},
                "participant": [{"individual": {"reference": "Practitioner/dr-1"}}],
                "period": {"start": "2020-01-01T00:00:00Z"}}),
            )
            .await;
            for (n, (code, value, date)) in [
                ("shared", 40, "2019-05-01"),
                ("shared", 60, "2021-05-01"),
                ("other", 80, "2022-05-01"),
            ]
            .iter()
            .enumerate()
            {
                put(&format!("Observation/obs-a-{n}"), json!({"resourceType": "Observation", "id": format!("obs-a-{n}"),
                    "status": "final", "code": {"coding": [{"system": "urn:t", "code": code}]},
                    "subject": {"reference": "Patient/pat-a"}, "encounter": {"reference": "Encounter/enc-a"},
                    "effectiveDateTime": date,
                    // A points at the hidden resource (dangling where it does not exist).
                    "hasMember": [{"reference": "Observation/obs-hidden"}],
                    "valueQuantity": {"value": value, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}})).await;
            }
            if with_hidden {
                // B's observation: same code as A's, pointing at A's encounter and observation.
                put(
                    "Observation/obs-hidden",
                    json!({"resourceType": "Observation", "id": "obs-hidden",
                    "status": "final", "code": {"coding": [{"system": "urn:t", "code": "shared"}]},
                    "subject": {"reference": "Patient/pat-b"}, "encounter": {"reference": "Encounter/enc-a"},
                    "derivedFrom": [{"reference": "Observation/obs-a-0"}], "effectiveDateTime": "2020-05-01",
                    "valueQuantity": {"value": 99, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}),
                )
                .await;
            }
            let t = app.account_token(
                "osler",
                "physician",
                &["--practitioner", "Practitioner/dr-1"],
                "user/*.rs",
                "15m",
            );
            apps.push((app, t));
        }
        let queries = [
            "Observation",
            "Observation?_total=accurate",
            "Observation?_summary=count",
            "Observation?code=urn:t|shared&_total=accurate",
            // Shapes a tally answers for an unguarded caller (never for this one).
            "Observation?code=shared&_summary=count",
            "Observation?code=urn:t|shared&date=ge2020&_summary=count",
            "Observation?code=urn:t|shared&date=2020&_total=accurate",
            "Observation?code:not=other&_total=accurate",
            "Observation?value-quantity=gt50",
            "Observation?value-quantity=ge99",
            "Observation?date=ge2020-01-01&date=le2020-12-31",
            "Observation?_sort=-date&_count=2",
            "Observation?_sort=value-quantity",
            "Observation?_count=1&_total=accurate",
            "Observation?encounter=Encounter/enc-a&_total=accurate",
            "Observation?derived-from=Observation/obs-a-0",
            "Observation?subject=Patient/pat-b",
            "Observation?subject.name=Bergstrom",
            "Observation?encounter.status=in-progress&_total=accurate",
            "Observation?_has:Observation:derived-from:code=shared",
            "Observation?_include=Observation:derived-from",
            "Observation?_include=Observation:has-member",
            "Observation?_include=Observation:has-member&_include:iterate=Observation:derived-from",
            "Observation?has-member=Observation/obs-hidden&_total=accurate",
            "Observation?has-member.value-quantity=99",
            "Observation?_revinclude=Observation:derived-from",
            "Encounter?_revinclude=Observation:encounter",
            "Encounter?_has:Observation:encounter:value-quantity=99",
            "Patient?_has:Observation:subject:code=shared",
            "Patient?_has:Observation:subject:date=2020",
            "Patient?name=Bergstrom",
            "Patient/pat-a/Observation?_total=accurate",
            "Patient/pat-a/$everything",
            "Observation/obs-hidden",
            "Observation/obs-hidden/_history",
            "Observation/_history",
        ];
        for q in queries {
            let mut answers = Vec::new();
            for (app, t) in &apps {
                answers.push(normalized(&app.request_as(t, Method::GET, q, None).await));
            }
            assert_eq!(
                answers[0], answers[1],
                "{b}: {q} answers differently when the hidden resource exists"
            );
        }
        // The hidden resource is really there for the system.
        assert_eq!(
            apps[1].0.get("Observation/obs-hidden").await.status,
            StatusCode::OK,
            "{b}"
        );
    }
}
