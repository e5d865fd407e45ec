//! Bulk Data export: kick-off, polling, manifest, NDJSON files, levels (system, Patient,
//! Group), `_type` and `_since`, cancellation, expiry and the refusals.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Every resource of a manifest's files: type → ids, checking each line and count.
async fn download(app: &TestApp, manifest: &Value) -> BTreeMap<String, BTreeSet<String>> {
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["transactionTime"].as_str().is_some());
    assert!(manifest["request"].as_str().unwrap().starts_with(&app.url("")));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in manifest["output"].as_array().unwrap() {
        let url = f["url"].as_str().unwrap();
        let anonymous = app.client.get(url).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "files need the token");
        let r = app.client.get(url).bearer_auth(&app.data.token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        let text = r.text().await.unwrap();
        let mut n = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"], f["type"], "one type per file");
            let id = v["id"].as_str().unwrap().to_owned();
            // Each line is the resource as a read returns it.
            let read = app.get(&format!("{}/{id}", f["type"].as_str().unwrap())).await;
            assert_eq!(read.json(), v);
            out.entry(f["type"].as_str().unwrap().to_owned())
                .or_default()
                .insert(id);
            n += 1;
        }
        assert_eq!(f["count"], n, "the manifest counts the lines");
    }
    out
}

fn ids(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_at_every_level() {
    for backend in backends("bulk_export_at_every_level").await {
        let app = spawn_app(&backend).await;
        let org = app
            .create(&json!({"resourceType": "Organization", "name": "Ward 7"}))
            .await;
        let doc = app
            .create(&json!({"resourceType": "Practitioner", "gender": "female"}))
            .await;
        let mut patients = Vec::new();
        let mut observations = Vec::new();
        for i in 0..3 {
            let p = app
                .create(&json!({"resourceType": "Patient", "gender": "female", "managingOrganization": {"reference": format!("Organization/{org}")}}))
                .await;
            for j in 0..(i + 1) {
                observations.push(
                    app.create(&json!({"resourceType": "Observation", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": format!("Patient/{p}")},
                        "performer": [{"reference": format!("Practitioner/{doc}")}],
                        "valueQuantity": {"value": 60 + j, "unit": "/min"}}))
                        .await,
                );
            }
            patients.push(p);
        }
        let group = app
            .create(
                &json!({"resourceType": "Group", "type": "person", "actual": true, "member": [
                {"entity": {"reference": format!("Patient/{}", patients[2])}},
                {"entity": {"reference": format!("Patient/{}", patients[0])}, "inactive": true}]}),
            )
            .await;

        // System level: everything.
        let (_, m) = app.export_and_wait("$export").await;
        let all = download(&app, &m).await;
        assert_eq!(all["Patient"], ids(&patients.iter().collect::<Vec<_>>()));
        assert_eq!(all["Observation"], ids(&observations.iter().collect::<Vec<_>>()));
        assert_eq!(all["Organization"], ids(&[&org]));
        assert_eq!(all["Practitioner"], ids(&[&doc]));
        assert_eq!(all["Group"], ids(&[&group]));

        // Patient level: patients and their compartments (a Group is in its members'
        // compartments), no shared resources.
        let (_, m) = app.export_and_wait("Patient/$export").await;
        let level = download(&app, &m).await;
        assert_eq!(level.keys().collect::<Vec<_>>(), ["Group", "Observation", "Patient"]);
        assert_eq!(level["Observation"].len(), 6);

        // Group level: the active member only (patient 2 has three observations).
        let (_, m) = app.export_and_wait(&format!("Group/{group}/$export")).await;
        let g = download(&app, &m).await;
        assert_eq!(g["Patient"], ids(&[&patients[2]]));
        assert_eq!(g["Observation"], ids(&observations[3..].iter().collect::<Vec<_>>()));

        // _type narrows; _since keeps only later changes.
        let (_, m) = app.export_and_wait("$export?_type=Organization,Practitioner").await;
        assert_eq!(
            download(&app, &m).await.keys().collect::<Vec<_>>(),
            ["Organization", "Practitioner"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let since = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let later = app.create(&json!({"resourceType": "Patient", "gender": "male"})).await;
        let (_, m) = app
            .export_and_wait(&format!("$export?_since={}", since.replace('+', "%2B")))
            .await;
        let newer = download(&app, &m).await;
        assert_eq!(newer.len(), 1, "{newer:?}");
        assert_eq!(newer["Patient"], ids(&[&later]));
        // An export with nothing to say still finishes, with no files.
        let (_, m) = app.export_and_wait("$export?_type=Claim").await;
        assert_eq!(m["output"], json!([]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_refusals_cancellation_and_expiry() {
    for backend in backends("bulk_export_refusals_cancellation_and_expiry").await {
        let data = init(&backend);
        let app = start_with_env(data, &[], &[("CAREVAULT_EXPORT_TTL_SECS", "2")]);
        app.create(&json!({"resourceType": "Patient", "gender": "female"}))
            .await;
        let kick = |path: &'static str, prefer: bool| {
            let mut r = app.client.get(app.url(path)).bearer_auth(&app.data.token);
            if prefer {
                r = r.header("prefer", "respond-async");
            }
            r.send()
        };
        for (path, prefer, why) in [
            ("$export", false, "respond-async"),
            ("$export?_outputFormat=text/csv", true, "_outputFormat"),
            ("$export?_type=Nonsense", true, "unknown resource type"),
            (
                "Patient/$export?_type=Practitioner",
                true,
                "outside the patient compartment",
            ),
            (
                "$export?includeAssociatedData=LatestProvenanceResources",
                true,
                "does not support",
            ),
            ("$export?foo=bar", true, "takes _outputFormat"),
        ] {
            let r = kick(path, prefer).await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["resourceType"], "OperationOutcome");
            assert!(b.to_string().contains(why), "{path}: {b}");
        }
        let r = app
            .client
            .get(app.url("Group/does-not-exist/$export"))
            .bearer_auth(&app.data.token)
            .header("prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            app.get("$export-status/0123456789abcdef0123456789abcdef").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.get("$export-status/..%2F..").await.status, StatusCode::NOT_FOUND);
        let anonymous = app.client.get(app.url("$export")).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

        // Cancelling deletes the job and its files.
        let (status, m) = app.export_and_wait("$export?_type=Patient").await;
        let file = m["output"][0]["url"].as_str().unwrap().to_owned();
        // A job belongs to whoever started it: another caller holding its URLs finds nothing.
        let other = app.account_token("exporter.two", "auditor", &[], "user/*.rs", "5m");
        for url in [&status, &file] {
            let r = app.client.get(url).bearer_auth(&other).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{}: {url}", backend.name());
        }
        let r = app.client.delete(&status).bearer_auth(&other).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "another caller cannot cancel it");
        let r = app
            .client
            .delete(&status)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let gone = app
            .client
            .get(&status)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        let gone = app.client.get(&file).bearer_auth(&app.data.token).send().await.unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);

        // After the configured lifetime (2 s here) a job and its files are gone.
        let (status, m) = app.export_and_wait("$export?_type=Patient").await;
        let file = m["output"][0]["url"].as_str().unwrap().to_owned();
        let r = app
            .client
            .get(&status)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("expires"));
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        let gone = app.client.get(&file).bearer_auth(&app.data.token).send().await.unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        let gone = app
            .client
            .get(&status)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        // The expired job's deletion is on record once, the server named as the actor.
        let log = app.get("$audit?subtype=export-expired").await.json();
        let entries = log["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{log}");
        let e = &entries[0]["resource"];
        assert_eq!(e["action"], "D");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "system");
        let job = status.rsplit('/').next().unwrap();
        assert!(e.to_string().contains(job), "the entry names the job: {e}");
    }
}

/// The stored export jobs' request text and sealed filters, straight from the database.
async fn stored_jobs(app: &TestApp) -> Vec<(String, Option<Vec<u8>>)> {
    let sql = "SELECT request, filters FROM export_jobs";
    match &app.data.backend {
        Backend::Sqlite => {
            let c = rusqlite::Connection::open(app.data.path().join("carevault.db")).unwrap();
            let mut stmt = c.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Backend::Postgres { url, .. } => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let rows = client.query(sql, &[]).await.unwrap();
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_type_filters_select_and_stay_sealed() {
    for backend in backends("bulk_export_type_filters_select_and_stay_sealed").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let quill = app
            .create(&json!({"resourceType": "Patient", "gender": "female", "name": [{"family": "Quillfeather"}]}))
            .await;
        let other = app
            .create(&json!({"resourceType": "Patient", "gender": "male", "name": [{"family": "Quimby"}]}))
            .await;
        // A name whose blind prefix tag is shared ("qui…") but that the re-check turns away.
        let near = app
            .create(&json!({"resourceType": "Patient", "gender": "female", "name": [{"family": "Quisling"}]}))
            .await;
        let obs = |p: &String, code: &str, status: &str| {
            json!({"resourceType": "Observation", "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": format!("Patient/{p}")}})
        };
        let heart_q = app.create(&obs(&quill, "8867-4", "final")).await;
        let resp_q = app.create(&obs(&quill, "9279-1", "preliminary")).await;
        let heart_o = app.create(&obs(&other, "8867-4", "preliminary")).await;
        let temp_o = app.create(&obs(&other, "8310-5", "final")).await;
        let _temp_n = app.create(&obs(&near, "8310-5", "preliminary")).await;
        let org = app
            .create(&json!({"resourceType": "Organization", "name": "Ward 9"}))
            .await;

        // One filter per type; a type without a filter exports whole.
        let (_, m) = app
            .export_and_wait("$export?_typeFilter=Patient%3Fname%3Dquil,Observation%3Fcode%3D8867-4")
            .await;
        let got = download(&app, &m).await;
        assert_eq!(got["Patient"], ids(&[&quill]), "{b}");
        assert_eq!(got["Observation"], ids(&[&heart_q, &heart_o]), "{b}");
        assert_eq!(got["Organization"], ids(&[&org]), "{b}");
        // The manifest repeats the filters; nothing of them is stored in the clear.
        let request = m["request"].as_str().unwrap();
        assert!(
            request.contains("_typeFilter=Patient%3Fname%3Dquil") && request.contains("_typeFilter=Observation%3F"),
            "{b}: {request}"
        );

        // Several filters on a type combine with OR, each resource written once; repeated
        // parameters and a comma list are the same.
        for path in [
            "$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal&_typeFilter=Observation%3Fcode%3D8867-4",
            "$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal,Observation%3Fcode%3D8867-4",
        ] {
            let (_, m) = app.export_and_wait(path).await;
            let lines: i64 = m["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["count"].as_i64().unwrap())
                .sum();
            let got = download(&app, &m).await;
            assert_eq!(got["Observation"], ids(&[&heart_q, &heart_o, &temp_o]), "{b}: {path}");
            assert_eq!(lines, 3, "{b}: {path}: no resource twice");
        }
        // A value list inside one filter, encoded on its own (%2C) or not: not cut apart.
        for path in [
            "$export?_type=Observation&_typeFilter=Observation%3Fcode%3D9279-1%252C8310-5",
            "$export?_type=Observation&_typeFilter=Observation%3Fcode%3D9279-1%2C8310-5%26status%3Dfinal",
        ] {
            let (_, m) = app.export_and_wait(path).await;
            let want = if path.contains("status") {
                ids(&[&temp_o])
            } else {
                ids(&[&resp_q, &temp_o, &_temp_n])
            };
            assert_eq!(download(&app, &m).await["Observation"], want, "{b}: {path}");
        }
        // Past the longest blind prefix (32 characters) the index proposes both long names;
        // the re-check on the decrypted patient keeps the one that matches.
        let long = app
            .create(
                &json!({"resourceType": "Patient", "name": [{"family": "Zanderwickhamptonshirebrightwater-Smythe"}]}),
            )
            .await;
        app.create(
            &json!({"resourceType": "Patient", "name": [{"family": "Zanderwickhamptonshirebrightwater-Jones"}]}),
        )
        .await;
        let (_, m) = app
            .export_and_wait("$export?_type=Patient&_typeFilter=Patient%3Fname%3Dzanderwickhamptonshirebrightwater-smy")
            .await;
        assert_eq!(download(&app, &m).await["Patient"], ids(&[&long]), "{b}");
        // A chain through an identifying parameter, re-checked on the patient.
        let (_, m) = app
            .export_and_wait(
                "Patient/$export?_type=Observation&_typeFilter=Observation%3Fsubject%3APatient.name%3Dquil",
            )
            .await;
        assert_eq!(
            download(&app, &m).await["Observation"],
            ids(&[&heart_q, &resp_q]),
            "{b}"
        );

        // `_elements`: the named top-level elements (of one type, or of every type) and the
        // mandatory ones, each resource marked SUBSETTED.
        let (_, m) = app
            .export_and_wait(
                "$export?_type=Patient,Observation&_elements=Patient.gender,status&_typeFilter=Patient%3Fname%3Dquil",
            )
            .await;
        assert!(
            m["request"]
                .as_str()
                .unwrap()
                .contains("_elements=Patient.gender,status"),
            "{b}: {m}"
        );
        let mut seen = BTreeMap::new();
        for f in m["output"].as_array().unwrap() {
            let r = app
                .client
                .get(f["url"].as_str().unwrap())
                .bearer_auth(&app.data.token)
                .send()
                .await
                .unwrap();
            for line in r.text().await.unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let t = v["resourceType"].as_str().unwrap().to_owned();
                let kept = if t == "Patient" { "gender" } else { "status" };
                let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(keys, BTreeSet::from(["resourceType", "id", "meta", kept]), "{b}: {v}");
                assert!(
                    v["meta"]["tag"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t["code"] == "SUBSETTED"),
                    "{b}"
                );
                *seen.entry(t).or_insert(0) += 1;
            }
        }
        assert_eq!(
            seen,
            BTreeMap::from([("Observation".to_owned(), 5), ("Patient".to_owned(), 1)]),
            "{b}"
        );

        // The stored jobs: the canonical request in the clear, the filters only sealed.
        let jobs = stored_jobs(&app).await;
        assert!(jobs.iter().filter(|(_, f)| f.is_some()).count() >= 6, "{b}");
        for (request, filters) in &jobs {
            assert!(
                !request.contains("_typeFilter") && !request.contains("quil"),
                "{b}: {request}"
            );
            let sealed = filters.clone().unwrap_or_default();
            for plain in [&b"quil"[..], b"8867-4", b"Observation?"] {
                assert!(
                    !sealed.windows(plain.len()).any(|w| w == plain),
                    "{b}: sealed filters hold plaintext"
                );
            }
        }
        let log = std::fs::read_to_string(&app.log).unwrap();
        assert!(
            !log.contains("quil"),
            "{b}: the server log holds a filter's search value"
        );

        // Refusals, each with a reason, and nothing started.
        let before = stored_jobs(&app).await.len();
        for (path, why) in [
            ("$export?_typeFilter=Nonsense%3Fx%3D1", "unknown resource type"),
            ("$export?_typeFilter=Patient", "[type]?[parameters]"),
            (
                "$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal",
                "_type leaves out",
            ),
            (
                "Patient/$export?_typeFilter=Organization%3Fname%3Dward",
                "does not cover",
            ),
            (
                "$export?_typeFilter=Observation%3Fstatus%3Dfinal%26_sort%3Ddate",
                "search parameters only",
            ),
            ("$export?_typeFilter=Observation%3Fcolour%3Dblue", "colour"),
            ("$export?_typeFilter=Observation%3Fdate%3Dnot-a-date", "date"),
            ("$export?_elements=Patient.name.family", "top-level element names"),
            ("$export?_elements=Nonsense.id", "unknown resource type"),
            ("Patient/$export?_elements=Organization.name", "does not cover"),
        ] {
            let r = kick_off_get(&app, path, "respond-async").await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{b}: {path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["resourceType"], "OperationOutcome");
            assert!(body.to_string().contains(why), "{b}: {path}: {body}");
        }
        let many = vec!["Observation%3Fstatus%3Dfinal"; 33].join(",");
        let r = kick_off_get(&app, &format!("$export?_typeFilter={many}"), "respond-async").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{b}: 33 filters");
        assert!(r.text().await.unwrap().contains("at most 32"), "{b}");
        assert_eq!(
            stored_jobs(&app).await.len(),
            before,
            "{b}: a refused kick-off records no job"
        );
        // `Prefer: handling=lenient` ignores what the server does not know.
        let path = "$export?_type=Observation&_typeFilter=Observation%3Fcolour%3Dblue%26status%3Dfinal";
        let r = kick_off_get(&app, path, "respond-async, handling=lenient").await;
        let (_, manifest) = app.export_finished(r, path).await;
        assert_eq!(
            download(&app, &manifest).await["Observation"],
            ids(&[&heart_q, &temp_o]),
            "{b}"
        );
    }
}

/// A GET kick-off with this `Prefer` header.
async fn kick_off_get(app: &TestApp, path: &str, prefer: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&app.data.token)
        .header("prefer", prefer)
        .send()
        .await
        .unwrap()
}

/// A POST kick-off with a `Parameters` body.
async fn kick_off_post(app: &TestApp, path: &str, params: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&app.data.token)
        .header("prefer", "respond-async")
        .header("content-type", "application/fhir+json")
        .json(&json!({"resourceType": "Parameters", "parameter": params}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_by_post_names_its_patients() {
    for backend in backends("bulk_export_by_post_names_its_patients").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let mut patients = Vec::new();
        let mut finals = Vec::new();
        for _ in 0..4 {
            let p = app
                .create(&json!({"resourceType": "Patient", "gender": "female"}))
                .await;
            for status in ["final", "preliminary"] {
                let o = app
                    .create(
                        &json!({"resourceType": "Observation", "status": status, "code": {"text": "hr"},
                        "subject": {"reference": format!("Patient/{p}")}}),
                    )
                    .await;
                if status == "final" {
                    finals.push(o);
                }
            }
            patients.push(p);
        }
        let group = app
            .create(
                &json!({"resourceType": "Group", "type": "person", "actual": true, "member": [
                {"entity": {"reference": format!("Patient/{}", patients[0])}},
                {"entity": {"reference": format!("Patient/{}", patients[1])}}]}),
            )
            .await;

        // Patient level: the named patients only, with a filter and a type list, by POST.
        let r = kick_off_post(
            &app,
            "Patient/$export",
            json!([
                {"name": "_type", "valueString": "Patient,Observation"},
                {"name": "patient", "valueReference": {"reference": format!("Patient/{}", patients[1])}},
                {"name": "patient", "valueReference": {"reference": format!("Patient/{}", patients[3])}},
                {"name": "_typeFilter", "valueString": "Observation?status=final"},
                {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            ]),
        )
        .await;
        let m = app.export_finished(r, "POST").await.1;
        // A POST kick-off's request is its URL alone.
        assert_eq!(m["request"], app.url("Patient/$export"), "{b}");
        let got = download(&app, &m).await;
        assert_eq!(got["Patient"], ids(&[&patients[1], &patients[3]]), "{b}");
        assert_eq!(got["Observation"], ids(&[&finals[1], &finals[3]]), "{b}");

        // Group level: the members among the named patients.
        let r = kick_off_post(
            &app,
            &format!("Group/{group}/$export"),
            json!([{"name": "patient", "valueReference": {"reference": format!("Patient/{}", patients[1])}},
                   {"name": "patient", "valueReference": {"reference": format!("Patient/{}", patients[2])}}]),
        )
        .await;
        let got = download(&app, &app.export_finished(r, "POST").await.1).await;
        assert_eq!(got["Patient"], ids(&[&patients[1]]), "{b}");
        // By GET too, and the canonical request names them.
        let (_, m) = app
            .export_and_wait(&format!(
                "Patient/$export?_type=Patient&patient=Patient/{}",
                patients[2]
            ))
            .await;
        assert_eq!(download(&app, &m).await["Patient"], ids(&[&patients[2]]), "{b}");
        assert!(
            m["request"]
                .as_str()
                .unwrap()
                .contains(&format!("patient=Patient%2F{}", patients[2])),
            "{b}: {m}"
        );

        // Refusals.
        for (path, params, why) in [
            (
                "$export",
                json!([{"name": "patient", "valueReference": {"reference": "Patient/x"}}]),
                "Patient and Group level",
            ),
            (
                "Patient/$export",
                json!([{"name": "patient", "valueReference": {"reference": "Observation/x"}}]),
                "references to Patients",
            ),
            (
                "Patient/$export",
                json!([{"name": "_type", "valueBoolean": true}]),
                "valueString",
            ),
            (
                "Patient/$export",
                json!([{"name": "colour", "valueString": "blue"}]),
                "$export takes",
            ),
            (
                "Patient/$export",
                json!([{"name": "includeAssociatedData", "valueCode": "LatestProvenanceResources"}]),
                "does not support",
            ),
        ] {
            let r = kick_off_post(&app, path, params).await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{b}: {path}");
            let body: Value = r.json().await.unwrap();
            assert!(body.to_string().contains(why), "{b}: {path}: {body}");
        }
        let r = app
            .client
            .post(app.url("$export"))
            .bearer_auth(&app.data.token)
            .header("prefer", "respond-async")
            .header("content-type", "application/fhir+json")
            .body("{\"resourceType\": \"Patient\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{b}: not Parameters");
        // Without Prefer: respond-async, as for GET.
        let r = app
            .client
            .post(app.url("$export"))
            .bearer_auth(&app.data.token)
            .json(&json!({"resourceType": "Parameters"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{b}: respond-async");
    }
}
