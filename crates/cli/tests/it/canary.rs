//! Canary values written through the API must not appear in any database file, dump, index,
//! log line or error body.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const CANARIES: &[&str] = &[
    "Quillfeather",
    "Zanzibaroo",
    "CANARY-SSN-918273645",
    "+1-555-0199-7788",
    "canary.zq@example.invalid",
    "Marmalade Crescent",
    "Vexhollow",
    "ZX9 8QW",
    "1901-02-03",
    "Dr. Oberwaldt-Pimm",
];

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Every form of every canary a careless store might keep.
fn forms() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for c in CANARIES {
        for f in [c.to_string(), c.to_lowercase(), c.to_uppercase(), hex(c)] {
            out.push(f.into_bytes());
        }
    }
    out
}

fn find_any(hay: &[u8]) -> Vec<String> {
    forms()
        .into_iter()
        .filter(|needle| hay.windows(needle.len()).any(|w| w == needle.as_slice()))
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .collect()
}

async fn write_canaries(app: &TestApp) {
    let patient = json!({"resourceType": "Patient",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "CANARY-SSN-918273645"}],
        "name": [{"family": "Zanzibaroo", "given": ["Quillfeather"]}],
        "telecom": [{"system": "phone", "value": "+1-555-0199-7788"}, {"system": "email", "value": "canary.zq@example.invalid"}],
        "address": [{"line": ["12 Marmalade Crescent"], "city": "Vexhollow", "postalCode": "ZX9 8QW"}],
        "birthDate": "1901-02-03"});
    let pid = app.create(&patient).await;
    app.create(
        &json!({"resourceType": "Practitioner", "name": [{"text": "Dr. Oberwaldt-Pimm"}],
        "identifier": [{"system": "urn:npi", "value": "CANARY-SSN-918273645"}]}),
    )
    .await;
    app.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "note"},
        "subject": {"reference": format!("Patient/{pid}")}, "note": [{"text": "Quillfeather lives at Marmalade Crescent"}]})).await;
    // A logical reference by identifier: indexed for `:identifier` as blind tags only.
    app.create(
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "logical"},
        "subject": {"identifier": {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "CANARY-SSN-918273645"}}}),
    )
    .await;
    let r = app
        .get("Observation?subject:identifier=http://hl7.org/fhir/sid/us-ssn|CANARY-SSN-918273645")
        .await;
    assert_eq!(r.json()["total"], 1, "search by the reference's identifier");
    // An update and a conditional create put canaries through more code paths.
    let mut again = patient.clone();
    again["id"] = json!(pid);
    again["active"] = json!(true);
    assert_eq!(app.put(&format!("Patient/{pid}"), &again).await.status, StatusCode::OK);
    let r = app
        .request(
            Method::POST,
            "Patient",
            Some(&patient),
            &[(
                "if-none-exist",
                "identifier=http://hl7.org/fhir/sid/us-ssn|CANARY-SSN-918273645",
            )],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Requests that fail must not echo canaries either.
    let r = app
        .request(
            Method::POST,
            "Patient",
            Some(&patient),
            &[("if-none-exist", "nonsense=Quillfeather")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(find_any(&r.body).is_empty(), "error body echoes a canary");
    let r = app.get("Patient?name:contains=Zanzibaroo").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(find_any(&r.body).is_empty(), "error body echoes a canary");
    // Identifying parameters are searchable through blind tags: name prefixes, phone, birth date.
    for q in [
        "name=zanzib",
        "family=ZANZIBAROO",
        "given=Quill",
        "phone=%2B1-555-0199-7788",
        "birthdate=1901-02",
        "address-city=vex",
    ] {
        let r = app.get(&format!("Patient?{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{q}");
        assert_eq!(r.json()["total"], 1, "{q}");
        // The paging links never carry the search terms.
        for l in r.json()["link"].as_array().unwrap() {
            assert!(find_any(l["url"].as_str().unwrap().as_bytes()).is_empty(), "{q}: {l}");
        }
    }
    assert_eq!(app.get("Patient?name=zanzibar0").await.json()["total"], 0);
    // A filter expression carries identifying values the same way: found, never echoed, its
    // paging links free of it; refused under `or` without repeating the value.
    let r = app
        .get("Patient?_filter=family+eq+Zanzibaroo+and+(birthdate+eq+1901-02-03+and+active+pr+true)&_count=1")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["entry"].as_array().map(Vec::len), Some(1));
    for l in r.json()["link"].as_array().unwrap() {
        assert!(
            find_any(l["url"].as_str().unwrap().as_bytes()).is_empty(),
            "_filter: {l}"
        );
    }
    let r = app.get("Patient?_filter=family+eq+Zanzibaroo+or+gender+eq+male").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(find_any(&r.body).is_empty(), "error body echoes a canary");
    // ...and a search by identifier finds it through the blind index.
    let r = app
        .get("Patient?identifier=http://hl7.org/fhir/sid/us-ssn|CANARY-SSN-918273645")
        .await;
    assert_eq!(r.json()["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_disk_or_logs() {
    for backend in backends("canaries_never_reach_disk_or_logs").await {
        let mut app = spawn_app(&backend).await;
        write_canaries(&app).await;
        // A bulk export's files are at rest too: the download carries the canaries, the
        // manifest does not, and the scans below cover the sealed files.
        let (status_url, manifest) = app.export_and_wait("$export?_type=Patient").await;
        assert!(find_any(status_url.as_bytes()).is_empty());
        assert!(
            find_any(manifest.to_string().as_bytes()).is_empty(),
            "manifest: {manifest}"
        );
        // An export filtered by an identifying value: the filter is kept sealed (the scans
        // below cover the jobs table); only the finished manifest shows it, to its owner.
        let (status_url, manifest) = app
            .export_and_wait("$export?_type=Patient&_typeFilter=Patient%3Ffamily%3DZanzibaroo")
            .await;
        assert!(find_any(status_url.as_bytes()).is_empty());
        assert_eq!(manifest["output"][0]["count"], 1);
        let file = manifest["output"][0]["url"].as_str().unwrap();
        let r = app.client.get(file).bearer_auth(&app.data.token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            !find_any(&r.bytes().await.unwrap()).is_empty(),
            "the export holds the patients"
        );
        match &backend {
            Backend::Sqlite => {
                // Scan while running (the WAL holds recent writes, the audit journal the
                // entries of recent reads), then after shutdown.
                for name in ["carevault.db", "carevault.db-wal", "audit-journal"] {
                    let bytes = std::fs::read(app.data.path().join(name)).unwrap_or_default();
                    assert!(find_any(&bytes).is_empty(), "{name} holds {:?}", find_any(&bytes));
                }
                assert!(
                    std::fs::metadata(app.data.path().join("audit-journal")).is_ok_and(|m| m.len() > 0),
                    "the reads' entries went through the journal"
                );
                app.terminate();
                let bytes = std::fs::read(app.data.path().join("carevault.db")).unwrap();
                assert!(bytes.len() > 10_000);
                assert!(
                    find_any(&bytes).is_empty(),
                    "db after checkpoint holds {:?}",
                    find_any(&bytes)
                );
            }
            Backend::Postgres { schema, .. } => {
                let base = pg_base_url().unwrap();
                let out = std::process::Command::new("pg_dump")
                    .args(["--data-only", "--schema", schema, "-d", &base])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(out.stdout.len() > 1000);
                assert!(
                    find_any(&out.stdout).is_empty(),
                    "pg_dump holds {:?}",
                    find_any(&out.stdout)
                );
            }
        }
        let log = app.log_text();
        assert!(log.len() > 100, "the server logged at debug level");
        assert!(
            find_any(log.as_bytes()).is_empty(),
            "server log holds {:?}",
            find_any(log.as_bytes())
        );
    }
}
