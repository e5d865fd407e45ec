//! Create, read, vread, update, delete and their headers.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn patient(family: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Ada"]}], "gender": "female",
           "birthDate": "1970-01-02", "identifier": [{"system": "urn:test:mrn", "value": format!("mrn-{family}")}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_delete() {
    for backend in backends("create_read_update_delete").await {
        let app = spawn_app(&backend).await;
        let be = backend.name();

        // create: 201, server id, Location, ETag, Last-Modified, meta
        let r = app
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "id": "client-chosen", "active": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{be}");
        let body = r.json();
        let id = body["id"].as_str().unwrap().to_owned();
        assert_ne!(id, "client-chosen", "{be}: POST ignores a client id");
        assert_eq!(body["meta"]["versionId"], "1");
        assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
        assert!(r.header("last-modified").is_some());
        let loc = r.header("location").unwrap();
        assert!(loc.ends_with(&format!("/Patient/{id}/_history/1")), "{loc}");
        assert!(r.header("content-type").unwrap().starts_with("application/fhir+json"));

        // read
        let r = app.get(&format!("Patient/{id}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json(), body);
        assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

        // update: new version; identical content: no new version
        let mut changed = body.clone();
        changed["active"] = json!(false);
        let r = app.put(&format!("Patient/{id}"), &changed).await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["meta"]["versionId"], "2");
        let r = app.put(&format!("Patient/{id}"), &changed).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json()["meta"]["versionId"],
            "2",
            "{be}: identical content makes no version"
        );

        // vread
        let r = app.get(&format!("Patient/{id}/_history/1")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["active"], true);
        assert_eq!(
            app.get(&format!("Patient/{id}/_history/9")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&format!("Patient/{id}/_history/x")).await.status,
            StatusCode::NOT_FOUND
        );

        // If-Match: stale → 412, current → 200
        let mut third = changed.clone();
        third["gender"] = json!("other");
        let r = app
            .request(
                Method::PUT,
                &format!("Patient/{id}"),
                Some(&third),
                &[("if-match", "W/\"1\"")],
            )
            .await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        r.outcome();
        let r = app
            .request(
                Method::PUT,
                &format!("Patient/{id}"),
                Some(&third),
                &[("if-match", "W/\"2\"")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["meta"]["versionId"], "3");

        // delete with a stale If-Match → 412; then delete → 204; read → 410; vread of old still works
        let r = app
            .request(
                Method::DELETE,
                &format!("Patient/{id}"),
                None,
                &[("if-match", "W/\"2\"")],
            )
            .await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        let r = app.delete(&format!("Patient/{id}")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app.get(&format!("Patient/{id}")).await;
        assert_eq!(r.status, StatusCode::GONE);
        r.outcome();
        assert_eq!(
            app.get(&format!("Patient/{id}/_history/3")).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.delete(&format!("Patient/{id}")).await.status,
            StatusCode::NO_CONTENT,
            "idempotent"
        );

        // create-on-update with a client id: 201 and Location
        let r = app
            .put(
                "Patient/my-own-id",
                &json!({"resourceType": "Patient", "id": "my-own-id"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(r.header("location").unwrap().contains("/Patient/my-own-id/_history/1"));
        // a deleted resource may be brought back by an update
        let r = app.put(&format!("Patient/{id}"), &changed).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["meta"]["versionId"], "5");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_return_and_media_types() {
    for backend in backends("prefer_return_and_media_types").await {
        let app = spawn_app(&backend).await;
        let p = patient("Prefer");
        let r = app
            .request(Method::POST, "Patient", Some(&p), &[("prefer", "return=minimal")])
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(r.body.is_empty());
        assert!(r.header("location").is_some());
        let r = app
            .request(
                Method::POST,
                "Patient",
                Some(&p),
                &[("prefer", "return=OperationOutcome")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
        let r = app
            .request(
                Method::POST,
                "Patient",
                Some(&p),
                &[("prefer", "return=representation")],
            )
            .await;
        assert_eq!(r.json()["resourceType"], "Patient");
        // application/json is accepted like application/fhir+json
        let r = app
            .client
            .post(app.url("Patient"))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&p).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_create_by_identifier_and_id() {
    for backend in backends("conditional_create_by_identifier_and_id").await {
        let app = spawn_app(&backend).await;
        let p = patient("Cond");
        let h = [("if-none-exist", "identifier=urn:test:mrn|mrn-Cond")];
        let r = app.request(Method::POST, "Patient", Some(&p), &h).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let r = app.request(Method::POST, "Patient", Some(&p), &h).await;
        assert_eq!(r.status, StatusCode::OK, "a match is returned, not created again");
        assert_eq!(r.json()["id"], id.as_str());
        let by_id = format!("_id={id}");
        let r = app
            .request(Method::POST, "Patient", Some(&p), &[("if-none-exist", &by_id)])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        // two matches → 412
        app.post("Patient", &p).await;
        let r = app.request(Method::POST, "Patient", Some(&p), &h).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        r.outcome();
        // an unsupported condition is a clear 400
        let r = app
            .request(Method::POST, "Patient", Some(&p), &[("if-none-exist", "nonsense=Cond")])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            !r.outcome().contains("Cond"),
            "the outcome does not echo the search value"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_with_the_same_if_match_exactly_one_wins() {
    for backend in backends("concurrent_updates_with_the_same_if_match_exactly_one_wins").await {
        let app = spawn_app(&backend).await;
        let id = app
            .create(&json!({"resourceType": "Observation", "status": "preliminary",
            "code": {"text": "x"}}))
            .await;
        let mut tasks = Vec::new();
        for n in 0..12 {
            let client = app.client.clone();
            let url = app.url(&format!("Observation/{id}"));
            let token = app.data.token.clone();
            let body =
                json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": format!("v{n}")}});
            tasks.push(tokio::spawn(async move {
                client
                    .put(url)
                    .bearer_auth(token)
                    .header("if-match", "W/\"1\"")
                    .header("content-type", "application/fhir+json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        let mut ok = 0;
        let mut stale = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => ok += 1,
                StatusCode::PRECONDITION_FAILED => stale += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!((ok, stale), (1, 11), "{}", backend.name());
        let r = app.get(&format!("Observation/{id}")).await;
        assert_eq!(r.json()["meta"]["versionId"], "2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_r4_type_is_accepted() {
    let app = spawn_app(&Backend::Sqlite).await;
    let cap = app.get("metadata").await.json();
    let types: Vec<String> = cap["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.len() >= 140);
    for t in &types {
        let r = app
            .put(
                &format!("{t}/any-{}", t.to_lowercase()),
                &json!({"resourceType": t, "id": format!("any-{}", t.to_lowercase())}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{t}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_updates_with_checks() {
    for backend in backends("json_patch_updates_with_checks").await {
        let app = spawn_app(&backend).await;
        let id = app
            .create(&json!({"resourceType": "Patient", "active": true, "name": [{"family": "Patcher"}]}))
            .await;
        let patch = |body: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut rb = app
                .client
                .patch(app.url(&format!("Patient/{id}")))
                .bearer_auth(&app.data.token)
                .header("content-type", "application/json-patch+json")
                .body(body);
            if let Some((k, v)) = extra {
                rb = rb.header(k, v);
            }
            rb.send()
        };
        let r = patch(r#"[{"op": "replace", "path": "/active", "value": false}, {"op": "add", "path": "/name/0/given", "value": ["Pat"]}]"#, None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (
                v["active"].as_bool(),
                v["name"][0]["given"][0].as_str(),
                v["meta"]["versionId"].as_str()
            ),
            (Some(false), Some("Pat"), Some("2"))
        );
        // a failing test op, a stale If-Match, an id change, a bad document, a wrong media type
        type Case = (&'static str, Option<(&'static str, &'static str)>, StatusCode);
        let cases: [Case; 5] = [
            (
                r#"[{"op": "test", "path": "/active", "value": true}]"#,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                r#"[{"op": "replace", "path": "/active", "value": true}]"#,
                Some(("if-match", "W/\"1\"")),
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                r#"[{"op": "replace", "path": "/id", "value": "other"}]"#,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (r#"{"op": "add"}"#, None, StatusCode::BAD_REQUEST),
            (
                r#"[{"op": "replace", "path": "/birthDate", "value": "1/2/3"}]"#,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (body, extra, want) in cases {
            let r = patch(body, extra).await.unwrap();
            assert_eq!(r.status(), want, "{body}");
        }
        let r = app
            .client
            .patch(app.url(&format!("Patient/{id}")))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            app.get(&format!("Patient/{id}")).await.json()["meta"]["versionId"],
            "2",
            "failed patches wrote nothing"
        );
        let r = app
            .client
            .patch(app.url("Patient/missing"))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/json-patch+json")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

/// FHIRPath Patch: a Parameters of operations, applied in order over HTTP; failures answer
/// 400 (malformed) or 422 (does not fit), write nothing, and echo no value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirpath_patch_updates_with_checks() {
    fn op(parts: Value) -> Value {
        json!({"name": "operation", "part": parts})
    }
    fn params(ops: Vec<Value>) -> String {
        json!({"resourceType": "Parameters", "parameter": ops}).to_string()
    }
    for backend in backends("fhirpath_patch_updates_with_checks").await {
        let app = spawn_app(&backend).await;
        let id = app
            .create(&json!({"resourceType": "Patient",
                "identifier": [{"system": "urn:mrn", "value": "Fpcanary-1"}],
                "name": [{"use": "official", "family": "Fpcanaryname", "given": ["Ann"]}, {"use": "nickname", "given": ["Annie"]}],
                "telecom": [{"system": "phone", "value": "555-0101"}],
                "birthDate": "1970-01-01"}))
            .await;
        let send = |body: String, if_match: Option<&'static str>| {
            let mut rb = app
                .client
                .patch(app.url(&format!("Patient/{id}")))
                .bearer_auth(&app.data.token)
                .header("content-type", "application/fhir+json")
                .body(body);
            if let Some(v) = if_match {
                rb = rb.header("if-match", v);
            }
            rb.send()
        };
        let body = params(vec![
            op(
                json!([{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient.name.where(use = 'official')"},
                      {"name": "name", "valueString": "given"}, {"name": "value", "valueString": "Beth"}]),
            ),
            op(
                json!([{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.birthDate"},
                      {"name": "value", "valueDate": "1971-02-03"}]),
            ),
            op(
                json!([{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.telecom.where(system = 'phone')"}]),
            ),
            op(
                json!([{"name": "type", "valueCode": "insert"}, {"name": "path", "valueString": "Patient.identifier"},
                      {"name": "index", "valueInteger": 0},
                      {"name": "value", "valueIdentifier": {"system": "urn:other", "value": "x-2"}}]),
            ),
            op(
                json!([{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
                      {"name": "name", "valueString": "contact"},
                      {"name": "value", "part": [{"name": "name", "valueHumanName": {"family": "Kin"}},
                                                 {"name": "telecom", "valueContactPoint": {"system": "email", "value": "kin@example.org"}}]}]),
            ),
        ]);
        let r = send(body, Some("W/\"1\"")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["meta"]["versionId"], "2");
        assert_eq!(v["name"][0]["given"], json!(["Ann", "Beth"]));
        assert_eq!(v["name"][1]["given"], json!(["Annie"]));
        assert_eq!(v["birthDate"], "1971-02-03");
        assert!(v.get("telecom").is_none(), "{v}");
        assert_eq!(v["identifier"][0]["value"], "x-2");
        assert_eq!(v["identifier"][1]["value"], "Fpcanary-1");
        assert_eq!(v["contact"][0]["telecom"][0]["system"], "email");
        // The stored version is the patched one, and a search sees the new birth date.
        assert_eq!(
            app.get(&format!("Patient/{id}")).await.json()["birthDate"],
            "1971-02-03"
        );
        let found = app.get("Patient?birthdate=1971-02-03").await.json();
        assert_eq!(found["entry"][0]["resource"]["id"], id.as_str());

        let replace_gender = || {
            params(vec![op(
                json!([{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
                                  {"name": "value", "valueCode": "female"}]),
            )])
        };
        let cases: Vec<(String, Option<&'static str>, StatusCode)> = vec![
            // nothing to replace
            (replace_gender(), None, StatusCode::UNPROCESSABLE_ENTITY),
            // the path selects several names
            (
                params(vec![op(
                    json!([{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.name"}]),
                )]),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            // a single element that exists is not added twice
            (
                params(vec![op(
                    json!([{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
                                      {"name": "name", "valueString": "birthDate"}, {"name": "value", "valueDate": "1999-09-09"}]),
                )]),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            // the result is not a valid Patient
            (
                params(vec![op(
                    json!([{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.birthDate"},
                                      {"name": "value", "valueDate": "Fpcanary-birth"}]),
                )]),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            // FHIRPath this server does not evaluate; an unknown operation
            (
                params(vec![op(json!([{"name": "type", "valueCode": "delete"},
                                      {"name": "path", "valueString": "Patient.name.where(family.startsWith('Fpcanary'))"}]))]),
                None,
                StatusCode::BAD_REQUEST,
            ),
            (
                params(vec![op(
                    json!([{"name": "type", "valueCode": "upsert"}, {"name": "path", "valueString": "Patient"}]),
                )]),
                None,
                StatusCode::BAD_REQUEST,
            ),
            // a stale version
            (
                params(vec![op(
                    json!([{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.contact"}]),
                )]),
                Some("W/\"1\""),
                StatusCode::PRECONDITION_FAILED,
            ),
            // a FHIR body that is not a Parameters is not a patch
            (
                json!({"resourceType": "Patient", "gender": "female"}).to_string(),
                None,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            ("{not json".to_owned(), None, StatusCode::BAD_REQUEST),
        ];
        for (body, if_match, want) in cases {
            let r = send(body.clone(), if_match).await.unwrap();
            assert_eq!(r.status(), want, "{body}");
            let text = r.text().await.unwrap();
            assert!(text.contains("OperationOutcome"), "{text}");
            assert!(!text.contains("Fpcanary"), "a value leaked into an error: {text}");
        }
        assert_eq!(
            app.get(&format!("Patient/{id}")).await.json()["meta"]["versionId"],
            "2",
            "failed patches wrote nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_update_and_delete_by_search() {
    for backend in backends("conditional_update_and_delete_by_search").await {
        let app = spawn_app(&backend).await;
        let body = json!({"resourceType": "Patient", "name": [{"family": "Condupdate"}], "gender": "other"});
        let r = app.put("Patient?family=condupdate&gender=other", &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "no match creates");
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let mut changed = body.clone();
        changed["active"] = json!(true);
        let r = app.put("Patient?family=condupdate&gender=other", &changed).await;
        assert_eq!(r.status, StatusCode::OK, "one match updates");
        assert_eq!(r.json()["id"], id.as_str());
        app.create(&body).await;
        assert_eq!(
            app.put("Patient?family=condupdate", &changed).await.status,
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            app.delete("Patient?family=condupdate").await.status,
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            app.delete("Patient?family=condupdate&active=true").await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(app.get(&format!("Patient/{id}")).await.status, StatusCode::GONE);
        assert_eq!(
            app.delete("Patient?family=nobody-at-all").await.status,
            StatusCode::NO_CONTENT
        );
        // without a condition these are not allowed on the type
        assert_eq!(app.delete("Patient").await.status, StatusCode::METHOD_NOT_ALLOWED);
        // a transaction's conditional reference may use any search parameter
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "Patient?family=condupdate&gender=other"}},
             "request": {"method": "POST", "url": "Observation"}}]});
        let r = app.post("", &tx).await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let loc = r.json()["entry"][0]["response"]["location"]
            .as_str()
            .unwrap()
            .to_owned();
        let obs = app.get(&loc).await.json();
        assert!(obs["subject"]["reference"].as_str().unwrap().starts_with("Patient/"));
        assert_ne!(
            obs["subject"]["reference"],
            format!("Patient/{id}").as_str(),
            "the deleted one is not matched"
        );
    }
}

/// Concurrent patches without `If-Match` all apply, each on top of the others (none lost,
/// none refused); a patch that names a version someone else replaced still fails with 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_without_if_match_all_apply() {
    for backend in backends("concurrent_patches_without_if_match_all_apply").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let id = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Base"}]}))
            .await;
        let mut tasks = Vec::new();
        for k in 0..12 {
            let (client, url, token) = (
                app.client.clone(),
                app.url(&format!("Patient/{id}")),
                app.data.token.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let body = json!([{"op": "add", "path": "/name/-", "value": {"family": format!("Patch{k}")}}]);
                let r = client
                    .patch(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json-patch+json")
                    .body(body.to_string())
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
        assert_eq!(r["name"].as_array().unwrap().len(), 13, "{b}: every patch applied: {r}");
        assert_eq!(r["meta"]["versionId"], "13", "{b}");
        let stale = app
            .client
            .patch(app.url(&format!("Patient/{id}")))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/json-patch+json")
            .header("if-match", "W/\"12\"")
            .body(r#"[{"op": "add", "path": "/active", "value": true}]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED, "{b}");
    }
}

/// Conditional reads: `If-None-Match` naming the current ETag (weakly compared, or `*`), or
/// `If-Modified-Since` no earlier than the last update, answer 304 with the validators and
/// no body; anything else reads as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_reads_answer_304_when_the_copy_is_current() {
    let app = spawn_app(&Backend::Sqlite).await;
    let id = app.create(&patient("Cached")).await;
    let path = format!("Patient/{id}");
    let get = |headers: Vec<(&'static str, String)>, path: String| {
        let app = &app;
        async move {
            let mut rb = app.client.get(app.url(&path)).bearer_auth(&app.data.token);
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            let r = rb.send().await.unwrap();
            let (status, etag) = (
                r.status(),
                r.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()),
            );
            (status, etag, r.bytes().await.unwrap().len())
        }
    };
    let (s, etag, len) = get(vec![("if-none-match", "W/\"1\"".into())], path.clone()).await;
    assert_eq!(
        (s, etag.as_deref(), len),
        (StatusCode::NOT_MODIFIED, Some("W/\"1\""), 0)
    );
    for current in ["\"1\"", "*", "W/\"7\", W/\"1\""] {
        let (s, _, _) = get(vec![("if-none-match", current.into())], path.clone()).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED, "{current}");
    }
    let (s, _, len) = get(vec![("if-none-match", "W/\"2\"".into())], path.clone()).await;
    assert!(s == StatusCode::OK && len > 0);
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    let earlier = httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(3600));
    assert_eq!(
        get(vec![("if-modified-since", later.clone())], path.clone()).await.0,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get(vec![("if-modified-since", earlier)], path.clone()).await.0,
        StatusCode::OK
    );
    // If-None-Match wins over If-Modified-Since.
    let both = vec![("if-none-match", "W/\"9\"".to_owned()), ("if-modified-since", later)];
    assert_eq!(get(both, path.clone()).await.0, StatusCode::OK);
    // A new version: the old ETag reads it; a vread of the old version is still current.
    let mut body = patient("Cached");
    body["id"] = json!(id);
    body["active"] = json!(true);
    assert_eq!(app.put(&path, &body).await.status, StatusCode::OK);
    let (s, etag, _) = get(vec![("if-none-match", "W/\"1\"".into())], path.clone()).await;
    assert_eq!((s, etag.as_deref()), (StatusCode::OK, Some("W/\"2\"")));
    let old = format!("{path}/_history/1");
    assert_eq!(
        get(vec![("if-none-match", "W/\"1\"".into())], old).await.0,
        StatusCode::NOT_MODIFIED
    );
    let cap = app.get("metadata").await.json();
    assert_eq!(cap["rest"][0]["resource"][0]["conditionalRead"], "full-support");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_patch_changes_the_one_match() {
    for backend in backends("conditional_patch_changes_the_one_match").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let mrn = |v: &str| json!([{"system": "urn:mrn", "value": v}]);
        let one = app
            .create(&json!({"resourceType": "Patient", "identifier": mrn("C-1"), "active": true}))
            .await;
        for _ in 0..2 {
            app.create(&json!({"resourceType": "Patient", "identifier": mrn("C-2")}))
                .await;
        }
        let patch = |query: &str, body: &str, if_match: Option<&str>| {
            let mut rb = app
                .client
                .patch(app.url(&format!("Patient?{query}")))
                .bearer_auth(&app.data.token)
                .header("content-type", "application/json-patch+json")
                .body(body.to_owned());
            if let Some(v) = if_match {
                rb = rb.header("if-match", v);
            }
            rb.send()
        };
        let deactivate = r#"[{"op": "replace", "path": "/active", "value": false}]"#;
        let r = patch("identifier=urn:mrn|C-1", deactivate, None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{b}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (v["id"].as_str(), v["active"].as_bool()),
            (Some(one.as_str()), Some(false)),
            "{b}"
        );
        assert_eq!(
            app.get(&format!("Patient/{one}")).await.json()["meta"]["versionId"],
            "2",
            "{b}"
        );
        // A stale If-Match, no match, several matches, no condition at all.
        let stale = patch("identifier=urn:mrn|C-1", deactivate, Some("W/\"1\""))
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED, "{b}");
        let none = patch("identifier=urn:mrn|nobody", deactivate, None).await.unwrap();
        assert_eq!(none.status(), StatusCode::NOT_FOUND, "{b}");
        let several = patch("identifier=urn:mrn|C-2", deactivate, None).await.unwrap();
        assert_eq!(several.status(), StatusCode::PRECONDITION_FAILED, "{b}");
        let bare = app
            .client
            .patch(app.url("Patient"))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/json-patch+json")
            .body(deactivate)
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), StatusCode::METHOD_NOT_ALLOWED, "{b}");
        // Recorded as a patch of the resource.
        let audit = app.get("$audit?subtype=patch").await.json();
        assert_eq!(
            audit["total"]
                .as_u64()
                .or(audit["entry"].as_array().map(|a| a.len() as u64)),
            Some(5),
            "{b}"
        );
    }
}
