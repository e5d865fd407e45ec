//! Importing the shared test data: Synthea transaction bundles over HTTP (every resource
//! read back equal), the conditional-reference patients and the official examples through
//! `carevault import`.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("json"))
        .collect();
    v.sort();
    v
}

fn entry_counts(files: &[PathBuf]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in files {
        let b: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        for e in b["entry"].as_array().unwrap() {
            *counts
                .entry(e["resource"]["resourceType"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    counts
}

async fn type_totals(app: &TestApp, types: impl Iterator<Item = &String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for t in types {
        // every version is a create here, so the type history counts resources
        let h = app.get(&format!("{t}/_history?_count=1")).await.json();
        out.insert(t.clone(), h["total"].as_u64().unwrap() as usize);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthea_over_http_reads_back_equal() {
    let Some(data) = testdata("synthea_over_http_reads_back_equal") else {
        return;
    };
    let files = json_files(&data.join("synthea"));
    assert_eq!(files.len(), 31);
    let expected = entry_counts(&files);
    for backend in backends("synthea_over_http_reads_back_equal").await {
        let app = spawn_app(&backend).await;
        let mut sent: Vec<(String, Value)> = Vec::new();
        for f in &files {
            let bundle: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            let r = app.post("", &bundle).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&r.body)
            );
            let out = r.json();
            let mut map = HashMap::new();
            let entries = bundle["entry"].as_array().unwrap();
            for (e, res) in entries.iter().zip(out["entry"].as_array().unwrap()) {
                assert_eq!(res["response"]["status"], "201 Created");
                let loc = res["response"]["location"].as_str().unwrap();
                let typed_id = loc.split("/_history").next().unwrap().to_owned();
                map.insert(e["fullUrl"].as_str().unwrap().to_owned(), typed_id);
            }
            for e in entries {
                let mut expect = e["resource"].clone();
                rewrite(&mut expect, &map);
                let typed_id = map[e["fullUrl"].as_str().unwrap()].clone();
                expect["id"] = Value::String(typed_id.split('/').nth(1).unwrap().to_owned());
                sent.push((typed_id, expect));
            }
        }
        assert_eq!(type_totals(&app, expected.keys()).await, expected, "{}", backend.name());
        // Read every resource back, a few at a time.
        let mut checks = tokio::task::JoinSet::new();
        for (n, (typed_id, expect)) in sent.into_iter().enumerate() {
            let client = app.client.clone();
            let url = app.url(&typed_id);
            let token = app.data.token.clone();
            checks.spawn(async move {
                let got: Value = client
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(without_meta(&got), without_meta(&expect), "{typed_id} differs");
            });
            if n % 16 == 15 {
                while checks.len() > 8 {
                    checks.join_next().await.unwrap().unwrap();
                }
            }
        }
        while let Some(c) = checks.join_next().await {
            c.unwrap();
        }
        drop(app);
        conditional_refs_read_back_equal(&data, &another(&backend).await).await;
    }
}

/// The five newer patients reference practitioners, organizations and locations by
/// identifier; after their two batch bundles, every resource reads back equal with those
/// conditional references resolved to the server's ids.
async fn conditional_refs_read_back_equal(data: &Path, backend: &Backend) {
    let app = spawn_app(backend).await;
    let files = json_files(&data.join("synthea/conditional-refs"));
    let (batches, patients): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|f| f.file_name().unwrap().to_string_lossy().contains("Information"));
    assert_eq!((batches.len(), patients.len()), (2, 5));
    let mut by_identifier: HashMap<String, String> = HashMap::new();
    for f in &batches {
        let bundle: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let out = app.post("", &bundle).await.json();
        for (e, res) in bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .zip(out["entry"].as_array().unwrap())
        {
            let status = res["response"]["status"].as_str().unwrap();
            assert!(status.starts_with("201") || status.starts_with("200"), "{status}");
            let typed_id = res["response"]["location"]
                .as_str()
                .unwrap()
                .split("/_history")
                .next()
                .unwrap()
                .to_owned();
            let rtype = e["resource"]["resourceType"].as_str().unwrap();
            for i in e["resource"]["identifier"].as_array().into_iter().flatten() {
                let key = format!(
                    "{rtype}?identifier={}|{}",
                    i["system"].as_str().unwrap_or(""),
                    i["value"].as_str().unwrap()
                );
                by_identifier.entry(key).or_insert(typed_id.clone());
            }
        }
    }
    let mut checked = 0;
    for f in &patients {
        let bundle: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let r = app.post("", &bundle).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&r.body)
        );
        let out = r.json();
        let mut map = by_identifier.clone();
        let entries = bundle["entry"].as_array().unwrap();
        for (e, res) in entries.iter().zip(out["entry"].as_array().unwrap()) {
            let typed_id = res["response"]["location"]
                .as_str()
                .unwrap()
                .split("/_history")
                .next()
                .unwrap()
                .to_owned();
            map.insert(e["fullUrl"].as_str().unwrap().to_owned(), typed_id);
        }
        for e in entries {
            let mut expect = e["resource"].clone();
            rewrite(&mut expect, &map);
            let typed_id = &map[e["fullUrl"].as_str().unwrap()];
            expect["id"] = Value::String(typed_id.split('/').nth(1).unwrap().to_owned());
            let got = app.get(typed_id).await.json();
            assert_eq!(without_meta(&got), without_meta(&expect), "{typed_id} differs");
            checked += 1;
        }
    }
    assert_eq!(checked, 238 + 259 + 238 + 706 + 245);
}

fn import(data: &DataDir, paths: &[&Path]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["import", "--data-dir"])
        .arg(data.path())
        .args(paths)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_of_synthea_and_conditional_references() {
    let Some(data) = testdata("cli_import_of_synthea_and_conditional_references") else {
        return;
    };
    let synthea = data.join("synthea");
    let cond = synthea.join("conditional-refs");
    let synthea_counts = entry_counts(&json_files(&synthea));
    let expected = entry_counts(&json_files(&cond));
    for backend in backends("cli_import_of_synthea_and_conditional_references").await {
        // The 31 older bundles repeat Organizations and Practitioners (the data, not a bug),
        // which would make the newer bundles' conditional references ambiguous: one folder
        // per data directory.
        let dir = init(&backend);
        let (ok, out, err) = import(&dir, &[&synthea]);
        assert!(ok, "{}: {out}\n{err}", backend.name());
        assert!(out.contains("resources/s"), "{out}");
        let app = start(dir, &[]);
        assert_eq!(type_totals(&app, synthea_counts.keys()).await, synthea_counts);
        drop(app);
        // The patient bundles sort before the reference data on purpose: the importer
        // retries files whose conditional references are not resolvable yet.
        let dir = init(&another(&backend).await);
        let (ok, out, err) = import(&dir, &[&cond]);
        assert!(ok, "{}: {out}\n{err}", backend.name());
        let app = start(dir, &[]);
        let got = type_totals(&app, expected.keys()).await;
        // ifNoneExist deduplicates repeated reference data inside the subset bundles.
        for (t, n) in &expected {
            let g = got[t];
            assert!(
                g == *n || (matches!(t.as_str(), "Organization" | "Location" | "Practitioner") && g <= *n && g > 0),
                "{t}: expected {n}, got {g}"
            );
        }
        // A conditional reference resolved to a real practitioner.
        let enc = app.get("Encounter/_history?_count=1").await.json();
        let reference = enc["entry"][0]["resource"]["participant"][0]["individual"]["reference"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(reference.starts_with("Practitioner/"), "{reference}");
        assert_eq!(app.get(&reference).await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_of_the_official_examples() {
    let Some(data) = testdata("cli_import_of_the_official_examples") else {
        return;
    };
    let examples = data.join("fhir-examples");
    let dir = init(&Backend::Sqlite);
    let (ok, out, err) = import(&dir, &[&examples]);
    // Two example bundles cannot run as written (a stale ifMatch and searches inside a batch):
    // they are reported by name, the rest is imported, and the exit code says so.
    assert!(!ok);
    assert!(err.contains("Bundle-bundle-transaction.json"), "{err}");
    assert!(err.contains("Bundle-bundle-request-medsallergies.json"), "{err}");
    assert!(err.contains("2 file(s) failed"), "{err}");
    assert!(out.contains("resources/s"), "{out}");
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut plain: Vec<Value> = Vec::new();
    for f in json_files(&examples) {
        let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        match (v["resourceType"].as_str(), v["type"].as_str()) {
            (Some("Bundle"), Some("transaction" | "batch")) => {
                if name.contains("bundle-transaction") || name.contains("medsallergies") {
                    continue;
                }
                for e in v["entry"].as_array().unwrap() {
                    *expected
                        .entry(e["resource"]["resourceType"].as_str().unwrap().to_owned())
                        .or_insert(0) += 1;
                }
            }
            (Some(t), _) => {
                *expected.entry(t.to_owned()).or_insert(0) += 1;
                plain.push(v);
            }
            _ => panic!("{name}"),
        }
    }
    let app = start(dir, &[]);
    for (t, n) in &expected {
        let got = app.get(&format!("{t}/_history?_count=1")).await.json()["total"]
            .as_u64()
            .unwrap() as usize;
        assert_eq!(got, *n, "{t}");
    }
    for v in plain {
        let path = format!("{}/{}", v["resourceType"].as_str().unwrap(), v["id"].as_str().unwrap());
        let got = app.get(&path).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(without_meta(&got.json()), without_meta(&v), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_of_ndjson_and_bad_files() {
    let dir = init(&Backend::Sqlite);
    let files = tempfile::tempdir().unwrap();
    let mut ndjson = String::new();
    for n in 0..1203 {
        ndjson.push_str(&format!(
            "{{\"resourceType\":\"Observation\",\"id\":\"obs-{n}\",\"status\":\"final\",\"code\":{{\"text\":\"n{n}\"}}}}\n"
        ));
    }
    // the same id twice in a row is two versions, not an error
    ndjson.push_str("{\"resourceType\":\"Patient\",\"id\":\"nd-1\",\"active\":true}\n\n");
    ndjson.push_str("{\"resourceType\":\"Patient\",\"id\":\"nd-1\",\"active\":false}\n");
    std::fs::write(files.path().join("a.ndjson"), ndjson).unwrap();
    std::fs::write(files.path().join("b.json"), "{ not json").unwrap();
    std::fs::write(
        files.path().join("c.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"ok\"}\n[1,2]\n",
    )
    .unwrap();
    std::fs::write(files.path().join("ignored.txt"), "not imported").unwrap();
    let (ok, out, err) = import(&dir, &[files.path()]);
    assert!(!ok, "bad files make the exit code non-zero");
    assert!(err.contains("b.json") && err.contains("not valid JSON"), "{err}");
    assert!(err.contains("c.ndjson"), "{err}");
    assert!(!err.contains("a.ndjson"), "{err}");
    assert!(out.contains("Observation") && out.contains("1203"), "{out}");
    let app = start(dir, &[]);
    assert_eq!(app.get("Observation/_history?_count=1").await.json()["total"], 1203);
    assert_eq!(app.get("Observation/obs-1202").await.status, StatusCode::OK);
    let p = app.get("Patient/nd-1").await.json();
    assert_eq!(
        (p["active"].as_bool(), p["meta"]["versionId"].as_str()),
        (Some(false), Some("2"))
    );
}
