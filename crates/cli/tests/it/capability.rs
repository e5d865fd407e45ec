//! Every claim of the CapabilityStatement, checked against the running server.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn codes(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_statement_is_truthful() {
    let app = spawn_app(&Backend::Sqlite).await;
    let cap = app
        .client
        .get(app.url("metadata"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(cap["resourceType"], "CapabilityStatement");
    assert_eq!(cap["fhirVersion"], "4.0.1");
    assert_eq!(cap["kind"], "instance");
    let rest = &cap["rest"][0];
    assert_eq!(rest["mode"], "server");
    for format in cap["format"].as_array().unwrap() {
        let r = app
            .client
            .post(app.url("Basic"))
            .bearer_auth(&app.data.token)
            .header("content-type", format.as_str().unwrap())
            .body(r#"{"resourceType":"Basic","code":{"text":"f"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "format {format}");
    }
    let patched = app
        .create(&json!({"resourceType": "Basic", "code": {"text": "p"}}))
        .await;
    for format in cap["patchFormat"].as_array().unwrap() {
        let body = match format.as_str().unwrap() {
            "application/json-patch+json" => r#"[{"op": "add", "path": "/language", "value": "en"}]"#,
            "application/fhir+json" => {
                r#"{"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                    {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Basic.language"},
                    {"name": "value", "valueCode": "de"}]}]}"#
            }
            other => panic!("unchecked patch format {other}"),
        };
        let r = app
            .client
            .patch(app.url(&format!("Basic/{patched}")))
            .bearer_auth(&app.data.token)
            .header("content-type", format.as_str().unwrap())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "patch format {format}");
    }
    assert_eq!(app.get(&format!("Basic/{patched}")).await.json()["language"], "de");
    let system = codes(&rest["interaction"]);
    let known_system = ["transaction", "batch", "history-system", "search-system"];
    for s in &system {
        assert!(known_system.contains(&s.as_str()), "unchecked system interaction {s}");
    }
    let resources = rest["resource"].as_array().unwrap();
    for res in resources {
        let t = res["type"].as_str().unwrap();
        let interactions = codes(&res["interaction"]);
        let known = [
            "read",
            "vread",
            "update",
            "patch",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type",
        ];
        for i in &interactions {
            assert!(known.contains(&i.as_str()), "{t}: unchecked interaction {i}");
        }
        let has = |i: &str| interactions.iter().any(|x| x == i);
        let ident = json!([{"system": "urn:cap", "value": format!("id-{t}")}]);
        let mut id = None;
        if has("create") {
            let r = app.post(t, &json!({"resourceType": t, "identifier": ident})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{t} create");
            id = r.json()["id"].as_str().map(str::to_owned);
        }
        if res["conditionalCreate"] == true {
            let cond = format!("identifier=urn:cap|id-{t}");
            let r = app
                .request(
                    Method::POST,
                    t,
                    Some(&json!({"resourceType": t})),
                    &[("if-none-exist", &cond)],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{t} conditional create finds the match");
        }
        if res["updateCreate"] == true {
            let r = app
                .put(&format!("{t}/uc-1"), &json!({"resourceType": t, "id": "uc-1"}))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{t} update-create");
        }
        let id = id.unwrap_or_else(|| "uc-1".into());
        if res["conditionalUpdate"] == true {
            let cond = format!("{t}?identifier=urn:cap|id-{t}");
            let r = app
                .put(
                    &cond,
                    &json!({"resourceType": t, "identifier": ident, "language": "fr"}),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{t} conditional update: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.json()["id"], id.as_str(), "{t} conditional update hits the match");
            // put it back as it was, so the version counts below hold
            let r = app
                .put(
                    &format!("{t}/{id}"),
                    &json!({"resourceType": t, "id": id, "identifier": ident}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
        if has("read") {
            assert_eq!(app.get(&format!("{t}/{id}")).await.status, StatusCode::OK, "{t} read");
        }
        if has("update") {
            let r = app
                .put(
                    &format!("{t}/{id}"),
                    &json!({"resourceType": t, "id": id, "identifier": ident, "language": "en"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{t} update");
        }
        if has("patch") {
            let r = app
                .client
                .patch(app.url(&format!("{t}/{id}")))
                .bearer_auth(&app.data.token)
                .header("content-type", "application/json-patch+json")
                .body(r#"[{"op": "replace", "path": "/language", "value": "de"}]"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{t} patch");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["language"].as_str(), Some("de"), "{t} patch");
        }
        if has("vread") || res["readHistory"] == true {
            assert_eq!(
                app.get(&format!("{t}/{id}/_history/1")).await.status,
                StatusCode::OK,
                "{t} vread"
            );
        }
        if has("history-instance") {
            let base = if res["conditionalUpdate"] == true { 4 } else { 2 };
            let expected = if has("patch") { base + 1 } else { base };
            let total = app.get(&format!("{t}/{id}/_history")).await.json()["total"].clone();
            assert_eq!(total, expected, "{t} history-instance");
        }
        if has("history-type") {
            assert!(
                app.get(&format!("{t}/_history")).await.json()["total"]
                    .as_u64()
                    .unwrap()
                    >= 2,
                "{t} history-type"
            );
        }
        if has("search-type") {
            for sp in res["searchParam"].as_array().unwrap() {
                let name = sp["name"].as_str().unwrap();
                let value = match (name, sp["type"].as_str().unwrap()) {
                    ("_id", _) => id.clone(),
                    ("identifier", _) => format!("urn:cap|id-{t}"),
                    (_, "string") => "ab".to_owned(),
                    (_, "token") => "x".to_owned(),
                    (_, "reference") => "Patient/x".to_owned(),
                    (_, "date") => "2020-01-01".to_owned(),
                    (_, "number" | "quantity") => "1".to_owned(),
                    (_, "uri") => "http://x".to_owned(),
                    (n, "composite") if n.contains("date") => "x$2020".to_owned(),
                    (_, "composite") => "x$1".to_owned(),
                    ("near", "special") => "42.36|-71.06|5|km".to_owned(),
                    ("_filter", "special") => format!("_id%20eq%20{id}%20or%20_id%20eq%20none"),
                    (_, other) => panic!("{t}.{name}: unchecked type {other}"),
                };
                let r = app.get(&format!("{t}?{name}={value}")).await;
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "{t}?{name}: {}",
                    String::from_utf8_lossy(&r.body)
                );
                let b = r.json();
                assert_eq!(b["type"], "searchset");
                if matches!(name, "_id" | "identifier" | "_filter") {
                    assert_eq!(b["total"], 1, "{t}?{name}");
                }
            }
        }
        for op in res["operation"].as_array().into_iter().flatten() {
            match (t, op["name"].as_str().unwrap()) {
                ("Patient", "everything") => {}
                ("Patient", "export") => {
                    let (_, manifest) = app.export_and_wait("Patient/$export?_type=Patient").await;
                    assert_eq!(manifest["output"][0]["type"], "Patient", "Patient $export");
                    continue;
                }
                ("Group", "export") => {
                    let member = app.create(&json!({"resourceType": "Patient", "gender": "other"})).await;
                    let group = app
                        .create(&json!({"resourceType": "Group", "type": "person", "actual": true,
                            "member": [{"entity": {"reference": format!("Patient/{member}")}}]}))
                        .await;
                    let (_, manifest) = app
                        .export_and_wait(&format!("Group/{group}/$export?_type=Patient"))
                        .await;
                    assert_eq!(manifest["output"][0]["count"], 1, "Group $export");
                    continue;
                }
                other => panic!("unchecked operation {other:?}"),
            }
            let b = app.get(&format!("Patient/{id}/$everything")).await;
            assert_eq!(b.status, StatusCode::OK, "{t} $everything");
            assert!(
                b.json()["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["resource"]["id"] == id.as_str())
            );
        }
        if rest["compartment"].as_array().is_some_and(|c| !c.is_empty()) && t == "Patient" {
            let b = app.get(&format!("Patient/{id}/Observation")).await;
            assert_eq!(b.status, StatusCode::OK, "compartment search");
        }
        if res["conditionalDelete"] == "single" {
            let u = app
                .put(
                    &format!("{t}/cd-1"),
                    &json!({"resourceType": t, "id": "cd-1", "identifier": [{"system": "urn:cd", "value": t}]}),
                )
                .await;
            assert_eq!(u.status, StatusCode::CREATED);
            let r = app.delete(&format!("{t}?identifier=urn:cd|{t}")).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{t} conditional delete");
            assert_eq!(app.get(&format!("{t}/cd-1")).await.status, StatusCode::GONE);
        }
        if has("delete") {
            assert_eq!(
                app.delete(&format!("{t}/{id}")).await.status,
                StatusCode::NO_CONTENT,
                "{t} delete"
            );
            assert_eq!(app.get(&format!("{t}/{id}")).await.status, StatusCode::GONE);
        }
    }
    // system interactions
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Basic", "code": {"text": "t"}}, "request": {"method": "POST", "url": "Basic"}}]});
    assert_eq!(app.post("", &tx).await.json()["type"], "transaction-response");
    let mut batch = tx.clone();
    batch["type"] = json!("batch");
    assert_eq!(app.post("", &batch).await.json()["type"], "batch-response");
    assert!(app.get("_history").await.json()["total"].as_u64().unwrap() > 0);
    let common: Vec<&str> = rest["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        common.contains(&"_lastUpdated") && common.contains(&"_tag"),
        "{common:?}"
    );
    for p in rest["searchParam"].as_array().unwrap() {
        let value = match p["type"].as_str().unwrap() {
            "token" => "x",
            "date" => "ge2000-01-01",
            "uri" => "http://x",
            other => panic!("unchecked system parameter type {other}"),
        };
        let r = app.get(&format!("?{}={value}", p["name"].as_str().unwrap())).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "system search by {p}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let across = app.get("?_type=Basic,Patient&_total=accurate").await.json();
    assert_eq!(across["type"], "searchset", "search-system");
    assert!(across["total"].as_u64().unwrap() > 0, "search-system");
    for op in rest["operation"].as_array().into_iter().flatten() {
        assert_eq!(op["name"], "export", "unchecked system operation");
        let (_, manifest) = app.export_and_wait("$export?_type=Basic").await;
        assert!(manifest["output"][0]["count"].as_u64().unwrap() > 0, "system $export");
    }
}
