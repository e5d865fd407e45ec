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

/// PATCH entries (a Binary holding a JSON Patch, or a Parameters holding a FHIRPath Patch) and GET entries that search, in
/// transactions and batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_patch_and_search() {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&v).unwrap());
    for backend in backends("bundles_patch_and_search").await {
        let app = spawn_app(&backend).await;
        let p = app
            .create(&json!({"resourceType": "Patient", "gender": "female", "identifier": [{"system": "urn:t", "value": "pt-1"}]}))
            .await;
        let patch = |id: &str, ops: Value| {
            json!({"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": b64(ops)},
                   "request": {"method": "PATCH", "url": format!("Patient/{id}")}})
        };
        // A transaction patches, creates, then searches; the search sees the writes.
        let r = app
            .post(
                "",
                &tx(vec![
                    json!({"request": {"method": "GET", "url": "Patient?identifier=urn:t|pt-1"}}),
                    patch(&p, json!([{"op": "replace", "path": "/gender", "value": "male"}])),
                    json!({"resource": {"resourceType": "Patient", "gender": "other", "identifier": [{"system": "urn:t", "value": "pt-2"}]},
                           "request": {"method": "POST", "url": "Patient"}}),
                    json!({"request": {"method": "GET", "url": "Patient?identifier=urn:t|pt-1,urn:t|pt-2&_total=accurate"}}),
                    json!({"request": {"method": "GET", "url": format!("Patient/{p}")}}),
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let b = r.json();
        let e = b["entry"].as_array().unwrap();
        assert_eq!(e[0]["response"]["status"], "200 OK");
        assert_eq!(e[0]["resource"]["type"], "searchset");
        assert_eq!(
            e[0]["resource"]["entry"][0]["resource"]["gender"], "male",
            "GET runs after the writes"
        );
        assert_eq!(e[1]["response"]["status"], "200 OK");
        assert_eq!(e[1]["response"]["etag"], "W/\"2\"");
        assert_eq!(e[2]["response"]["status"], "201 Created");
        assert_eq!(e[3]["resource"]["total"], 2);
        assert_eq!(e[4]["resource"]["gender"], "male", "a read entry carries its resource");
        assert_eq!(app.get(&format!("Patient/{p}")).await.json()["gender"], "male");

        // A failing patch fails the whole transaction: nothing written.
        let r = app
            .post(
                "",
                &tx(vec![
                    patch(&p, json!([{"op": "replace", "path": "/gender", "value": "unknown"}])),
                    patch(&p, json!([{"op": "remove", "path": "/nothing-here"}])),
                ]),
            )
            .await;
        assert!(r.status.is_client_error(), "{}", r.status);
        assert_eq!(app.get(&format!("Patient/{p}")).await.json()["meta"]["versionId"], "2");
        let r = app
            .post(
                "",
                &tx(vec![patch(
                    &p,
                    json!([{"op": "replace", "path": "/id", "value": "other"}]),
                )]),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        // A FHIRPath Patch (a Parameters) works as an entry too; a malformed one fails the
        // transaction with 400, and any other resource is refused with the formats it takes.
        let fhirpath = |op: Value| {
            json!({"resource": {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": op}]},
                   "request": {"method": "PATCH", "url": format!("Patient/{p}")}})
        };
        let r = app
            .post(
                "",
                &tx(vec![fhirpath(json!([
                    {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
                    {"name": "name", "valueString": "birthDate"}, {"name": "value", "valueDate": "1960-06-01"}
                ]))]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["entry"][0]["response"]["etag"], "W/\"3\"");
        assert_eq!(app.get(&format!("Patient/{p}")).await.json()["birthDate"], "1960-06-01");
        let r = app
            .post(
                "",
                &tx(vec![fhirpath(json!([
                    {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.name.descendants()"}
                ]))]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = app
            .post(
                "",
                &tx(vec![
                    json!({"resource": {"resourceType": "Basic", "code": {"text": "x"}},
                                "request": {"method": "PATCH", "url": format!("Patient/{p}")}}),
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.outcome().contains("FHIRPath Patch"), "{}", r.outcome());

        // In a batch, a bad search fails alone; a conditional patch finds its target.
        let r = app
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                    {"request": {"method": "GET", "url": "Patient?birthdate=lt2000"}},
                    {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                                  "data": b64(json!([{"op": "add", "path": "/active", "value": true}]))},
                     "request": {"method": "PATCH", "url": "Patient?identifier=urn:t|pt-1"}},
                    {"request": {"method": "GET", "url": "Patient?_count=1"}}
                ]}),
            )
            .await;
        let b = r.json();
        let e = b["entry"].as_array().unwrap();
        assert_eq!(e[0]["response"]["status"], "400 Bad Request");
        assert_eq!(e[0]["response"]["outcome"]["resourceType"], "OperationOutcome");
        assert_eq!(e[1]["response"]["status"], "200 OK");
        assert_eq!(e[2]["resource"]["entry"].as_array().unwrap().len(), 1);
        assert_eq!(app.get(&format!("Patient/{p}")).await.json()["active"], true);
    }
}

/// Concurrent conditional creates of one condition — `If-None-Exist`, a transaction's
/// `ifNoneExist`, a conditional update that matches nothing — make one resource; the others
/// find it (each kind spelled two ways, which must not matter).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_creates_make_one_resource() {
    for backend in backends("racing_conditional_creates_make_one_resource").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        for mode in ["header", "transaction", "conditional-update"] {
            let value = format!("race-{mode}");
            let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:race", "value": value}]});
            let mut tasks = Vec::new();
            for n in 0..12 {
                // The same condition, percent-encoded or not.
                let condition = if n % 2 == 0 {
                    format!("identifier=urn:race|{value}")
                } else {
                    format!("identifier=urn%3Arace%7C{value}")
                };
                let (method, url, body, header) = match mode {
                    "header" => ("POST", app.url("Patient"), patient.clone(), Some(condition)),
                    "transaction" => (
                        "POST",
                        app.url(""),
                        tx(vec![json!({"resource": patient,
                            "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}})]),
                        None,
                    ),
                    _ => ("PUT", app.url(&format!("Patient?{condition}")), patient.clone(), None),
                };
                let client = app.client.clone();
                let token = app.data.token.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rb = client
                        .request(method.parse().unwrap(), url)
                        .bearer_auth(token)
                        .header("content-type", "application/fhir+json")
                        .body(serde_json::to_vec(&body).unwrap());
                    if let Some(h) = header {
                        rb = rb.header("if-none-exist", h);
                    }
                    let r = rb.send().await.unwrap();
                    let status = r.status();
                    let body: Value = r.json().await.unwrap();
                    // A transaction's own status is 200; its entry tells created from found.
                    let entry = body["entry"][0]["response"]["status"].as_str().map(str::to_owned);
                    (status, entry, body)
                }));
            }
            let mut created = 0;
            for t in tasks {
                let (status, entry, body) = t.await.unwrap();
                assert!(status.is_success(), "{b} {mode}: {status} {body}");
                if status == StatusCode::CREATED || entry.as_deref().is_some_and(|s| s.starts_with("201")) {
                    created += 1;
                }
            }
            let found = app
                .get(&format!("Patient?identifier=urn:race|{value}&_summary=count"))
                .await
                .json();
            assert_eq!(found["total"], 1, "{b} {mode}: one resource");
            assert_eq!(created, 1, "{b} {mode}: one of them created it");
        }
    }
}

/// Transactions racing to patch one resource (no `ifMatch`) each plan again after losing,
/// and every patch lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_transactions_patching_one_resource_all_land() {
    use base64::Engine as _;
    for backend in backends("racing_transactions_patching_one_resource_all_land").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let id = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Base"}]}))
            .await;
        let mut tasks = Vec::new();
        for k in 0..8 {
            let patch = json!([{"op": "add", "path": "/name/-", "value": {"family": format!("Tx{k}")}}]);
            let data = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            let bundle = tx(vec![json!({
                "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data},
                "request": {"method": "PATCH", "url": format!("Patient/{id}")}})]);
            let (client, url, token) = (app.client.clone(), app.url(""), app.data.token.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/fhir+json")
                    .body(bundle.to_string())
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            }));
        }
        for t in tasks {
            let (status, text) = t.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{b}: {text}");
        }
        let r = app.get(&format!("Patient/{id}")).await.json();
        assert_eq!(r["name"].as_array().unwrap().len(), 9, "{b}: every patch landed: {r}");
    }
}

/// A condition claimed by a record the caller may not see neither blocks the caller's own
/// conditional create nor tells it that the record exists: the create goes ahead, as it would
/// without the claim (a header create, a transaction, a conditional update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_on_a_hidden_record_neither_blocks_nor_reveals() {
    for backend in backends("a_claim_on_a_hidden_record_neither_blocks_nor_reveals").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let dr = app
            .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Own"}]}))
            .await;
        let mine = app.create(&json!({"resourceType": "Patient", "active": true})).await;
        let hidden = app.create(&json!({"resourceType": "Patient", "active": true})).await;
        app.create(&json!({
            "resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
            "subject": {"reference": format!("Patient/{mine}")},
            "participant": [{"individual": {"reference": format!("Practitioner/{dr}")}}],
            "period": {"start": "2020-01-01T08:00:00Z"}
        }))
        .await;
        let t = app.account_token(
            "own",
            "physician",
            &["--practitioner", &format!("Practitioner/{dr}")],
            "user/*.cruds",
            "15m",
        );
        let obs = |patient: &str, ident: &str| {
            json!({"resourceType": "Observation", "status": "final",
                   "identifier": [{"system": "urn:lab", "value": ident}],
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                   "subject": {"reference": format!("Patient/{patient}")}})
        };
        for (n, how) in ["header", "transaction", "conditional-update"].iter().enumerate() {
            let ident = format!("lab-{n}");
            let condition = format!("identifier=urn:lab|{ident}");
            // The administrator's conditional create claims the condition for the hidden
            // patient's observation.
            let r = app
                .request(
                    reqwest::Method::POST,
                    "Observation",
                    Some(&obs(&hidden, &ident)),
                    &[("if-none-exist", condition.as_str())],
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{b} {how}");
            let body = obs(&mine, &ident);
            let (status, text) = match *how {
                "header" => {
                    let r = app
                        .client
                        .post(app.url("Observation"))
                        .bearer_auth(&t)
                        .header("content-type", "application/fhir+json")
                        .header("if-none-exist", &condition)
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    (r.status(), r.text().await.unwrap())
                }
                "transaction" => {
                    let bundle = tx(vec![json!({"resource": body,
                        "request": {"method": "POST", "url": "Observation", "ifNoneExist": condition}})]);
                    let r = app.request_as(&t, reqwest::Method::POST, "", Some(&bundle)).await;
                    let text = String::from_utf8_lossy(&r.body).into_owned();
                    assert!(text.contains("\"201"), "{b} {how}: the entry created: {text}");
                    (r.status, text)
                }
                _ => {
                    let r = app
                        .request_as(
                            &t,
                            reqwest::Method::PUT,
                            &format!("Observation?{condition}"),
                            Some(&body),
                        )
                        .await;
                    (r.status, String::from_utf8_lossy(&r.body).into_owned())
                }
            };
            let want = if *how == "transaction" {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            assert_eq!(status, want, "{b} {how}: {text}");
            assert!(!text.contains(&hidden), "{b} {how}: nothing of the hidden record");
        }
    }
}

/// A batch's runs of plain creates go in parallel; the batch still answers every entry in
/// order, a read after a write in it sees the write, and the request has one audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_creates_answers_in_order_with_one_audit_entry() {
    for backend in backends("a_batch_of_creates_answers_in_order_with_one_audit_entry").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let create = |n: usize| {
            json!({"resource": {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": format!("batch-{n}")}]}},
                "request": {"method": "POST", "url": "Observation"}})
        };
        let mut entries: Vec<Value> = (0..150).map(create).collect();
        entries.push(
            json!({"resource": {"resourceType": "Patient", "id": "batch-p", "active": true},
            "request": {"method": "PUT", "url": "Patient/batch-p"}}),
        );
        entries.push(json!({"request": {"method": "GET", "url": "Patient/batch-p"}}));
        entries.extend((150..300).map(create));
        let r = app
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b}");
        let out = r.json();
        let got = out["entry"].as_array().unwrap();
        assert_eq!(got.len(), 302, "{b}");
        for (i, e) in got.iter().enumerate() {
            let status = e["response"]["status"].as_str().unwrap();
            match i {
                150 => assert!(status.starts_with("201"), "{b}: the PUT created: {e}"),
                151 => {
                    assert!(status.starts_with("200"), "{b}: {e}");
                    assert_eq!(e["resource"]["active"], true, "{b}: the GET sees the PUT: {e}");
                }
                _ => {
                    assert!(status.starts_with("201"), "{b} entry {i}: {e}");
                    // In order: entry i created the observation with code batch-(i or i-2).
                    let n = if i < 150 { i } else { i - 2 };
                    let location = e["response"]["location"].as_str().unwrap();
                    let made = app.get(location).await.json();
                    assert_eq!(made["code"]["coding"][0]["code"], format!("batch-{n}"), "{b} entry {i}");
                }
            }
        }
        let count = app.get("Observation?_summary=count").await.json();
        assert_eq!(count["total"], 300, "{b}");
        let officer = app.account_token("officer", "auditor", &[], "user/*.rs", "15m");
        let log = app
            .request_as(&officer, reqwest::Method::GET, "$audit?subtype=transaction", None)
            .await;
        assert_eq!(log.status, StatusCode::OK, "{b}");
        assert_eq!(
            log.json()["entry"].as_array().map_or(0, Vec::len),
            1,
            "{b}: one entry for the batch"
        );
    }
}
