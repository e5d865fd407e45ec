//! Transaction and batch bundles over HTTP.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn tx(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_rewrite_references_and_are_atomic() {
    for backend in backends("transactions_rewrite_references_and_are_atomic").await {
        let app = spawn_app(&backend).await;
        let prac = app
            .create(&json!({"resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "12345"}]}))
            .await;
        let bundle = tx(vec![
            json!({"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
                   "request": {"method": "POST", "url": "Patient"}}),
            json!({"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                   "subject": {"reference": "urn:uuid:p1"},
                   "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|12345"}]},
                   "request": {"method": "POST", "url": "Observation"}}),
            json!({"resource": {"resourceType": "Organization", "id": "org-tx", "name": "Tx Org"},
                   "request": {"method": "PUT", "url": "Organization/org-tx"}}),
        ]);
        let r = app.post("", &bundle).await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let out = r.json();
        assert_eq!(out["type"], "transaction-response");
        let e = out["entry"].as_array().unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0]["response"]["status"], "201 Created");
        assert_eq!(e[2]["response"]["status"], "201 Created");
        let loc = e[1]["response"]["location"].as_str().unwrap();
        let obs = app.get(loc).await.json();
        let pat_loc = e[0]["response"]["location"].as_str().unwrap();
        let pat_id = pat_loc.split('/').nth(1).unwrap();
        assert_eq!(obs["subject"]["reference"], format!("Patient/{pat_id}"));
        assert_eq!(obs["performer"][0]["reference"], format!("Practitioner/{prac}"));

        // a failing entry (stale ifMatch) undoes the whole transaction
        let before = app.get("_history").await.json()["total"].as_u64().unwrap();
        let bad = tx(vec![
            json!({"resource": {"resourceType": "Patient", "name": [{"family": "Never"}]}, "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": {"resourceType": "Organization", "id": "org-tx", "name": "Changed"},
                   "request": {"method": "PUT", "url": "Organization/org-tx", "ifMatch": "W/\"9\""}}),
        ]);
        let r = app.post("", &bad).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        r.outcome();
        let bad_ref = tx(vec![
            json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:nowhere"}},
                   "request": {"method": "POST", "url": "Observation"}}),
        ]);
        let r = app.post("", &bad_ref).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.outcome().contains("entry 1"));
        let unresolvable = tx(vec![
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "performer": [{"reference": "Practitioner?identifier=urn:none|0"}]}, "request": {"method": "POST", "url": "Observation"}}),
        ]);
        assert_eq!(
            app.post("", &unresolvable).await.status,
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            app.get("_history").await.json()["total"].as_u64().unwrap(),
            before,
            "{}: nothing written",
            backend.name()
        );

        // ifNoneExist inside a transaction matches the existing practitioner
        let again = tx(vec![
            json!({"fullUrl": "urn:uuid:pr", "resource": {"resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "12345"}]},
            "request": {"method": "POST", "url": "Practitioner", "ifNoneExist": "identifier=http://hl7.org/fhir/sid/us-npi|12345"}}),
        ]);
        let r = app.post("", &again).await.json();
        assert_eq!(r["entry"][0]["response"]["status"], "200 OK");
        assert!(
            r["entry"][0]["response"]["location"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Practitioner/{prac}/"))
        );

        // DELETE, conditional PUT and GET inside one transaction
        let mixed = tx(vec![
            json!({"request": {"method": "GET", "url": format!("Practitioner/{prac}")}}),
            json!({"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:m", "value": "1"}], "active": true},
                   "request": {"method": "PUT", "url": "Patient?identifier=urn:m|1"}}),
            json!({"request": {"method": "DELETE", "url": "Organization/org-tx"}}),
        ]);
        let r = app.post("", &mixed).await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let r = r.json();
        assert_eq!(r["entry"][0]["response"]["status"], "200 OK");
        assert_eq!(r["entry"][1]["response"]["status"], "201 Created");
        assert_eq!(r["entry"][2]["response"]["status"], "204 No Content");
        assert_eq!(app.get("Organization/org-tx").await.status, StatusCode::GONE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_entries_succeed_and_fail_independently() {
    for backend in backends("batch_entries_succeed_and_fail_independently").await {
        let app = spawn_app(&backend).await;
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "active": true}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "id": "p2"}, "request": {"method": "PUT", "url": "Patient/other"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"resource": {"resourceType": "Device", "id": "d1"}, "request": {"method": "PUT", "url": "Device/d1"}}
        ]});
        let r = app.post("", &batch).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = r.json();
        assert_eq!(r["type"], "batch-response");
        let st: Vec<&str> = r["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(st, ["201 Created", "400 Bad Request", "404 Not Found", "201 Created"]);
        assert_eq!(r["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
        assert_eq!(app.get("_history").await.json()["total"], 2);
    }
}
