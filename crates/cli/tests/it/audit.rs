//! The audit log over real HTTPS, on both backends: every interaction leaves exactly one
//! entry with the right interaction, action and outcome; no planted PHI reaches an entry or
//! the witness file; and the offline verifier catches every kind of tampering done to the
//! tables directly, naming the first bad entry.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::Command;

/// Direct access to the audit tables, as an attacker with the database would have.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(tokio_postgres::Client),
}

/// An audit row: index, body, leaf, mac, agent, patient, subtype, outcome, entity.
type Row = (
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
);
type HeadRow = (i64, Vec<u8>, i64, Vec<u8>);
/// A request and the entry it must leave: method, path, body, interaction, action, outcome.
type Step = (Method, String, Option<Value>, &'static str, char, &'static str);

impl Db {
    async fn open(app: &TestApp) -> Db {
        match &app.data.backend {
            Backend::Sqlite => Db::Sqlite(app.data.path().join("carevault.db")),
            Backend::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                Db::Postgres(client)
            }
        }
    }

    /// The log's rows once they stop changing: on SQLite a read's entry is durable in the
    /// server's journal when its response leaves, and in the table a moment later.
    async fn rows(&self) -> Vec<Row> {
        self.rows_at_least(0).await
    }

    /// The log's rows once there are at least `n` and they stop changing (so that an entry
    /// too many is seen, not left for the next look).
    async fn rows_at_least(&self, n: usize) -> Vec<Row> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut rows = self.read_rows().await;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let again = self.read_rows().await;
            if (again.len() == rows.len() && again.len() >= n) || std::time::Instant::now() > deadline {
                return again;
            }
            rows = again;
        }
    }

    async fn read_rows(&self) -> Vec<Row> {
        let sql = "SELECT idx, body, leaf, mac, agent, patient, subtype, outcome, entity FROM audit_log ORDER BY idx";
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Db::Postgres(c) => c
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                        r.get(7),
                        r.get(8),
                    )
                })
                .collect(),
        }
    }

    async fn heads(&self) -> Vec<HeadRow> {
        let sql = "SELECT size, root, at, signature FROM audit_heads ORDER BY size";
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Db::Postgres(c) => c
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
        }
    }

    /// Replaces both tables' contents.
    async fn restore(&self, rows: &[Row], heads: &[HeadRow]) {
        self.exec("DELETE FROM audit_log").await;
        self.exec("DELETE FROM audit_heads").await;
        for r in rows {
            self.insert(r).await;
        }
        for h in heads {
            match self {
                Db::Sqlite(p) => {
                    rusqlite::Connection::open(p)
                        .unwrap()
                        .execute(
                            "INSERT INTO audit_heads (size, root, at, signature) VALUES (?1, ?2, ?3, ?4)",
                            rusqlite::params![h.0, h.1, h.2, h.3],
                        )
                        .unwrap();
                }
                Db::Postgres(c) => {
                    c.execute(
                        "INSERT INTO audit_heads (size, root, at, signature) VALUES ($1, $2, $3, $4)",
                        &[&h.0, &h.1, &h.2, &h.3],
                    )
                    .await
                    .unwrap();
                }
            }
        }
    }

    async fn insert(&self, r: &Row) {
        let sql = "INSERT INTO audit_log (idx, recorded, body, leaf, mac, agent, patient, subtype, outcome, entity)
                   VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9)";
        match self {
            Db::Sqlite(p) => {
                rusqlite::Connection::open(p)
                    .unwrap()
                    .execute(
                        &sql.replace('$', "?"),
                        rusqlite::params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8],
                    )
                    .unwrap();
            }
            Db::Postgres(c) => {
                c.execute(sql, &[&r.0, &r.1, &r.2, &r.3, &r.4, &r.5, &r.6, &r.7, &r.8])
                    .await
                    .unwrap();
            }
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(p) => {
                rusqlite::Connection::open(p).unwrap().execute_batch(sql).unwrap();
            }
            Db::Postgres(c) => {
                c.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// Overwrites one entry's body (and, if asked, its leaf hash) with `body`.
    async fn set_body(&self, idx: i64, body: &[u8], leaf: Option<&[u8]>) {
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                c.execute(
                    "UPDATE audit_log SET body = ?1 WHERE idx = ?2",
                    rusqlite::params![body, idx],
                )
                .unwrap();
                if let Some(l) = leaf {
                    c.execute(
                        "UPDATE audit_log SET leaf = ?1 WHERE idx = ?2",
                        rusqlite::params![l, idx],
                    )
                    .unwrap();
                }
            }
            Db::Postgres(c) => {
                c.execute("UPDATE audit_log SET body = $1 WHERE idx = $2", &[&body, &idx])
                    .await
                    .unwrap();
                if let Some(l) = leaf {
                    c.execute("UPDATE audit_log SET leaf = $1 WHERE idx = $2", &[&l, &idx])
                        .await
                        .unwrap();
                }
            }
        }
    }
}

/// `carevault audit verify`: whether it passed, and the first bad entry it names.
fn verify(app: &TestApp) -> (bool, Option<i64>, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(app.data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text
        .lines()
        .find_map(|l| l.strip_prefix("first bad entry: "))
        .map(|n| n.trim().parse().unwrap());
    (
        out.status.success(),
        first,
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

fn leaf(body: &[u8]) -> Vec<u8> {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(&[0]);
    c.update(body);
    c.finish().as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interaction_is_recorded_once_without_phi_and_tampering_is_caught() {
    for backend in backends("every_interaction_is_recorded_once_without_phi_and_tampering_is_caught").await {
        let mut app = start(init(&backend), &[]);
        let b = backend.name();
        let db = Db::open(&app).await;
        let before = db.rows().await.len();

        // A workload touching every kind of interaction, each checked against the one entry
        // it must leave.
        let canary = json!({"resourceType": "Patient", "name": [{"family": "Quixotlewitz", "given": ["Zebulon"]}],
            "identifier": [{"system": "urn:mrn", "value": "MRN-CANARY-7731"}], "birthDate": "1911-02-03",
            "telecom": [{"system": "phone", "value": "+1-555-0177-333"}]});
        let r = app.request(Method::POST, "Patient", Some(&canary), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{b}");
        let pid = r.json()["id"].as_str().unwrap().to_owned();
        let steps: Vec<Step> = vec![
            (Method::GET, format!("Patient/{pid}"), None, "read", 'R', "0"),
            (
                Method::GET,
                format!("Patient/{pid}/_history/1"),
                None,
                "vread",
                'R',
                "0",
            ),
            (
                Method::GET,
                "Patient?name=Quixotlewitz".into(),
                None,
                "search-type",
                'R',
                "0",
            ),
            (
                Method::GET,
                format!("Patient/{pid}/_history"),
                None,
                "history-instance",
                'R',
                "0",
            ),
            (Method::GET, "Patient/_history".into(), None, "history-type", 'R', "0"),
            (
                Method::PUT,
                format!("Patient/{pid}"),
                Some(json!({"resourceType": "Patient", "id": pid, "active": true})),
                "update",
                'U',
                "0",
            ),
            (Method::GET, "Patient/no-such-patient".into(), None, "read", 'R', "4"),
            (
                Method::GET,
                format!("Patient/{pid}/$everything"),
                None,
                "operation:everything",
                'E',
                "0",
            ),
            (Method::GET, "metadata".into(), None, "capabilities", 'R', "0"),
            (Method::DELETE, format!("Patient/{pid}"), None, "delete", 'D', "0"),
        ];
        for (i, (m, path, body, subtype, action, outcome)) in steps.iter().enumerate() {
            let n = db.rows().await.len();
            let r = app.request(m.clone(), path, body.as_ref(), &[]).await;
            let rows = db.rows_at_least(n + 1).await;
            assert_eq!(
                rows.len(),
                n + 1,
                "{b}: step {i} {m} {path} left {} entries",
                rows.len() - n
            );
            let e: Value = serde_json::from_slice(&rows[n].1).unwrap();
            assert_eq!(e["subtype"][0]["code"], *subtype, "{b}: {m} {path}");
            assert_eq!(e["action"], action.to_string(), "{b}: {m} {path}");
            assert_eq!(e["outcome"], *outcome, "{b}: {m} {path} answered {}", r.status);
            // (the CapabilityStatement is public: no credential is looked at for it)
            let who = if *subtype == "capabilities" {
                "anonymous"
            } else {
                "system"
            };
            assert_eq!(e["agent"][0]["who"]["identifier"]["value"], who, "{b}: {e}");
        }
        // A request without a valid token is recorded too, as anonymous and refused.
        let n = db.rows().await.len();
        let r = app.client.get(app.url(&format!("Patient/{pid}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let rows = db.rows_at_least(n + 1).await;
        assert_eq!(rows.len(), n + 1, "{b}");
        let e: Value = serde_json::from_slice(&rows[n].1).unwrap();
        assert_eq!(
            (
                e["agent"][0]["who"]["identifier"]["value"].as_str(),
                e["outcome"].as_str()
            ),
            (Some("anonymous"), Some("4"))
        );
        assert!(rows.len() > before + steps.len());

        // A signed head, in the database and in the witness file; the log verifies.
        let head = app.cli(&["audit", "head"]).unwrap();
        assert!(head.starts_with("size "), "{head}");
        app.terminate();
        let witness = std::fs::read_to_string(app.data.path().join("audit-witness.jsonl")).unwrap();
        let (ok, _, text) = verify(&app);
        assert!(ok, "{b}: {text}");

        // No planted value anywhere in the log or the witness file.
        let rows = db.rows().await;
        let all: String = rows
            .iter()
            .map(|r| String::from_utf8_lossy(&r.1).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        for c in [
            "Quixotlewitz",
            "Zebulon",
            "MRN-CANARY-7731",
            "1911-02-03",
            "555-0177",
            "quixotlewitz",
        ] {
            assert!(
                !all.contains(c) && !witness.contains(c),
                "{b}: {c} reached the audit log"
            );
        }

        // The tamper matrix: each mutation made directly in the tables, then the verifier.
        let heads = db.heads().await;
        let size = rows.len() as i64;
        let cases: Vec<(&str, i64)> = vec![
            ("modify", 3),
            ("modify with its leaf recomputed", 4),
            ("delete", 5),
            ("insert", 3),
            ("reorder", 2),
            ("truncate the tail", size - 2),
            ("truncate the tail and its heads", size - 2),
        ];
        for (case, want) in cases {
            match case {
                "modify" => {
                    let mut body = rows[3].1.clone();
                    body.extend_from_slice(b" ");
                    db.set_body(3, &body, None).await;
                }
                "modify with its leaf recomputed" => {
                    let body = String::from_utf8(rows[4].1.clone())
                        .unwrap()
                        .replace("\"0\"", "\"4\"")
                        .into_bytes();
                    db.set_body(4, &body, Some(&leaf(&body))).await;
                }
                "delete" => db.exec("DELETE FROM audit_log WHERE idx = 5").await,
                "insert" => {
                    db.exec("DELETE FROM audit_log WHERE idx >= 3").await;
                    let mut forged = rows[2].clone();
                    forged.0 = 3;
                    db.insert(&forged).await;
                    for r in &rows[3..] {
                        let mut moved = r.clone();
                        moved.0 += 1;
                        db.insert(&moved).await;
                    }
                }
                "reorder" => {
                    db.exec("DELETE FROM audit_log WHERE idx IN (2, 3)").await;
                    let (mut a, mut c) = (rows[3].clone(), rows[2].clone());
                    a.0 = 2;
                    c.0 = 3;
                    db.insert(&a).await;
                    db.insert(&c).await;
                }
                "truncate the tail" => {
                    db.exec(&format!("DELETE FROM audit_log WHERE idx >= {}", size - 2))
                        .await
                }
                _ => {
                    db.exec(&format!("DELETE FROM audit_log WHERE idx >= {}", size - 2))
                        .await;
                    db.exec("DELETE FROM audit_heads").await;
                }
            }
            let (ok, first, text) = verify(&app);
            assert!(!ok, "{b}: {case} was not detected:\n{text}");
            assert_eq!(first, Some(want), "{b}: {case}:\n{text}");
            db.restore(&rows, &heads).await;
            let (ok, _, text) = verify(&app);
            assert!(ok, "{b}: restored after {case}:\n{text}");
        }
    }
}

fn unhex(s: &str) -> [u8; 32] {
    let v: Vec<u8> = (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn param<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_privacy_officer_searches_the_log_and_the_patient_sees_who_looked() {
    for backend in backends("the_privacy_officer_searches_the_log_and_the_patient_sees_who_looked").await {
        let app = start(init(&backend), &[]);
        let b = backend.name();
        let patient = app
            .create(&json!({"resourceType": "Patient", "name": [{"family": "Okafor"}]}))
            .await;
        let obs = app
            .create(
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "BP"},
                "subject": {"reference": format!("Patient/{patient}")}}),
            )
            .await;
        let dr = app
            .create(&json!({"resourceType": "Practitioner", "name": [{"given": ["Ada"], "family": "Yonath"}]}))
            .await;
        let doc = app.account_token(
            "yonath",
            "physician",
            &["--practitioner", &format!("Practitioner/{dr}")],
            "user/*.rs",
            "15m",
        );
        // Without a relationship: refused, then break the glass and read.
        assert_eq!(
            app.request_as(&doc, Method::GET, &format!("Observation/{obs}"), None)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        let ask = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "arrived unconscious"}]});
        let r = app
            .request_as(
                &doc,
                Method::POST,
                &format!("Patient/{patient}/$break-the-glass"),
                Some(&ask),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b}");
        assert_eq!(
            app.request_as(&doc, Method::GET, &format!("Observation/{obs}"), None)
                .await
                .status,
            StatusCode::OK
        );

        // The patient's report: the physician by name and role, the data kind, the emergency.
        let me = app.account_token(
            "okafor",
            "patient",
            &["--patient", &format!("Patient/{patient}")],
            "patient/*.rs",
            "15m",
        );
        let report = app.request_as(&me, Method::GET, "$access-report", None).await;
        assert_eq!(report.status, StatusCode::OK, "{b}");
        let report = report.json();
        let lines: Vec<&Value> = report["parameter"].as_array().unwrap().iter().collect();
        let part = |l: &Value, n: &str| l["part"].as_array().unwrap().iter().find(|p| p["name"] == n).cloned();
        let read = lines
            .iter()
            .find(|l| {
                part(l, "what").is_some_and(|w| w["valueCode"] == "Observation")
                    && part(l, "outcome").unwrap()["valueCode"] == "0"
            })
            .unwrap_or_else(|| panic!("{b}: no read of the observation in {report}"));
        assert_eq!(part(read, "who").unwrap()["valueString"], "Ada Yonath", "{b}");
        assert_eq!(part(read, "role").unwrap()["valueCode"], "physician", "{b}");
        assert_eq!(
            part(read, "emergency").unwrap()["valueBoolean"],
            true,
            "{b}: break-the-glass stands out"
        );
        // The patient's own reads are not listed; their report is theirs alone.
        let doc_report = app.request_as(&doc, Method::GET, "$access-report", None).await;
        assert_eq!(doc_report.status, StatusCode::FORBIDDEN, "{b}");

        // The privacy officer searches by patient, agent and interaction; others may not.
        let officer = app.account_token("officer", "auditor", &[], "user/*.rs", "15m");
        assert_eq!(
            app.request_as(&doc, Method::GET, "$audit", None).await.status,
            StatusCode::FORBIDDEN
        );
        let found = app
            .request_as(
                &officer,
                Method::GET,
                &format!("$audit?patient=Patient/{patient}&subtype=read&outcome=4"),
                None,
            )
            .await;
        assert_eq!(found.status, StatusCode::OK, "{b}");
        let entries = found.json()["entry"].as_array().unwrap().clone();
        assert!(!entries.is_empty(), "{b}: the refused read is on record");
        assert!(entries.iter().all(|e| e["resource"]["outcome"] == "4"));
        // A date that does not start with two ASCII letters is refused, never a panic.
        let odd = app.request_as(&officer, Method::GET, "$audit?date=x%C3%A9", None).await;
        assert_eq!(odd.status, StatusCode::BAD_REQUEST, "{b}");
        // Dates with FHIR's precision ranges: a day is the whole day.
        let day = |offset: i64| {
            let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(offset);
            format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        };
        let count = |q: String| {
            let (app, officer) = (&app, &officer);
            async move {
                let r = app
                    .request_as(officer, Method::GET, &format!("$audit?{q}&_count=1000"), None)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{q}");
                r.json()["entry"].as_array().unwrap().len()
            }
        };
        let today = count(format!("date={}", day(0))).await;
        assert!(today > 0, "{b}");
        assert!(
            count(format!("date=le{}", day(0))).await >= today,
            "{b}: le takes the whole day"
        );
        assert!(
            count(format!("date=ge{}&date=lt{}", day(0), day(1))).await >= today,
            "{b}"
        );
        for q in [
            format!("date=gt{}", day(0)),
            format!("date=sa{}", day(0)),
            format!("date=lt{}", day(-1)),
            format!("date={}", day(1)),
            format!("date=ge{}&date=lt{}", day(0), day(0)),
        ] {
            assert_eq!(count(q.clone()).await, 0, "{b}: {q}");
        }
        for q in [format!("date=ne{}", day(0)), "date=2026-13-01".to_owned()] {
            let r = app
                .request_as(&officer, Method::GET, &format!("$audit?{q}"), None)
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {q}");
        }
        let typed = app
            .request_as(&officer, Method::GET, "$audit?type=rest&_count=3", None)
            .await
            .json();
        assert_eq!(typed["entry"].as_array().unwrap().len(), 3, "{b}");
        let other = app
            .request_as(&officer, Method::GET, "$audit?type=login", None)
            .await
            .json();
        assert!(other["entry"].as_array().unwrap().is_empty(), "{b}");
        let ndjson = app
            .request_as(&officer, Method::GET, "$audit?_format=ndjson&_count=5", None)
            .await;
        assert_eq!(
            ndjson.header("content-type").as_deref(),
            Some("application/fhir+ndjson")
        );
        assert_eq!(String::from_utf8_lossy(&ndjson.body).lines().count(), 5, "{b}");

        // A head on demand, and proofs that check against it.
        let head = app.request_as(&officer, Method::POST, "$audit-head", None).await;
        assert_eq!(head.status, StatusCode::OK, "{b}");
        let head = head.json();
        // Its entry committed with the head, naming the officer.
        let made = app
            .request_as(&officer, Method::GET, "$audit?subtype=operation:audit-head", None)
            .await
            .json();
        let made: Vec<&Value> = made["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        assert_eq!(made.len(), 1, "{b}");
        assert_eq!(
            (
                made[0]["agent"][0]["role"][0]["text"].as_str(),
                made[0]["outcome"].as_str()
            ),
            (Some("auditor"), Some("0")),
            "{b}"
        );
        let size: u64 = param(&head, "size")["valueInteger64"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let root = unhex(param(&head, "root")["valueString"].as_str().unwrap());
        let p = app
            .request_as(
                &officer,
                Method::GET,
                &format!("$audit-proof?index=3&size={size}"),
                None,
            )
            .await
            .json();
        let leaf = unhex(param(&p, "leaf")["valueString"].as_str().unwrap());
        let nodes: Vec<[u8; 32]> = p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["name"] == "node")
            .map(|x| unhex(x["valueString"].as_str().unwrap()))
            .collect();
        assert!(
            carevault_crypto::merkle::verify_inclusion(3, size, &leaf, &nodes, &root),
            "{b}"
        );
        let c = app
            .request_as(
                &officer,
                Method::GET,
                &format!("$audit-consistency?first=2&second={size}"),
                None,
            )
            .await
            .json();
        let cnodes: Vec<[u8; 32]> = c["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["name"] == "node")
            .map(|x| unhex(x["valueString"].as_str().unwrap()))
            .collect();
        assert!(!cnodes.is_empty());
        let witness = std::fs::read_to_string(app.data.path().join("audit-witness.jsonl")).unwrap();
        assert!(
            witness.contains(&format!("\"size\":{size}")),
            "{b}: the head is witnessed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_tokens_operations_and_operator_commands_are_recorded_too() {
    for backend in backends("sign_ins_tokens_operations_and_operator_commands_are_recorded_too").await {
        let app = start(init(&backend), &[]);
        let b = backend.name();
        let db = Db::open(&app).await;
        let last = || async { serde_json::from_slice::<Value>(&db.rows().await.last().unwrap().1).unwrap() };
        let expect = |e: &Value, subtype: &str, action: &str, outcome: &str| {
            assert_eq!(
                (
                    e["subtype"][0]["code"].as_str(),
                    e["action"].as_str(),
                    e["outcome"].as_str()
                ),
                (Some(subtype), Some(action), Some(outcome)),
                "{b}: {e}"
            );
        };
        let p = app.create(&json!({"resourceType": "Patient"})).await;
        // Operator commands (the CLI), as the operator.
        let dr = app.create(&json!({"resourceType": "Practitioner"})).await;
        let t = app.account_token(
            "house",
            "physician",
            &["--practitioner", &format!("Practitioner/{dr}")],
            "user/*.rs",
            "5m",
        );
        let e = last().await;
        expect(&e, "cli:token", "E", "0");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "operator");
        let rows = db.rows().await;
        let count = |rows: &[Row], subtype: &str, outcome: &str| {
            rows.iter().filter(|r| r.6 == subtype && r.7 == outcome).count()
        };
        assert_eq!(
            count(&rows, "cli:user-add", "0"),
            1,
            "{b}: the account's creation is on record once"
        );
        // Account changes commit with their entry (one each); a refused one is recorded as a
        // failure and changes nothing.
        let pw = app.data.path().join("house.pw");
        let add = |name: &str| {
            app.cli(&[
                "user",
                "add",
                "--username",
                name,
                "--role",
                "nurse",
                "--practitioner",
                &format!("Practitioner/{dr}"),
                "--password-file",
                pw.to_str().unwrap(),
            ])
        };
        add("wilson").unwrap();
        assert!(add("wilson").is_err(), "{b}: the username is taken");
        app.cli(&["user", "disable", "--username", "wilson"]).unwrap();
        app.cli(&["user", "enable", "--username", "wilson"]).unwrap();
        assert!(app.cli(&["user", "disable", "--username", "nobody-here"]).is_err());
        let rows = db.rows().await;
        assert_eq!(
            (
                count(&rows, "cli:user-add", "0"),
                count(&rows, "cli:user-add", "4"),
                count(&rows, "cli:user-disable", "0"),
                count(&rows, "cli:user-enable", "0"),
                count(&rows, "cli:user-disable", "4"),
            ),
            (2, 1, 1, 1, 1),
            "{b}"
        );
        // A token request refused, a sign-in page refused.
        let r = app
            .client
            .post(format!("{}/oauth/token", app.base.strip_suffix("/fhir").unwrap()))
            .form(&[("grant_type", "client_credentials"), ("client_id", "nobody")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        expect(&last().await, "token", "E", "4");
        // A transaction, a patch, break-the-glass, an export kick-off, a consent.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Basic", "code": {"text": "x"}}, "request": {"method": "POST", "url": "Basic"}}]});
        assert_eq!(app.post("", &tx).await.status, StatusCode::OK);
        expect(&last().await, "transaction", "E", "0");
        let r = app
            .client
            .patch(app.url(&format!("Patient/{p}")))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op": "add", "path": "/active", "value": true}]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let e = last().await;
        expect(&e, "patch", "U", "0");
        assert_eq!(e["entity"][1]["what"]["reference"], format!("Patient/{p}"));
        let ask = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "collapsed at the desk"}]});
        let r = app
            .request_as(&t, Method::POST, &format!("Patient/{p}/$break-the-glass"), Some(&ask))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let e = last().await;
        expect(&e, "operation:break-the-glass", "E", "0");
        assert_eq!(e["agent"][0]["role"][0]["text"], "physician");
        let r = app
            .request(
                Method::GET,
                "$export?_type=Patient",
                None,
                &[("prefer", "respond-async")],
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        expect(&last().await, "operation:export", "E", "0");
        let consent = json!({"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"text": "privacy"}], "patient": {"reference": format!("Patient/{p}")}});
        let created = app.post("Consent", &consent).await;
        assert_eq!(created.status, StatusCode::CREATED);
        let e = last().await;
        expect(&e, "create", "C", "0");
        // Committed with the write itself: it names the resource the write created.
        assert_eq!(
            e["entity"][0]["what"]["reference"],
            format!("Consent/{}", created.json()["id"].as_str().unwrap()),
            "{b}"
        );
        assert_eq!(
            e["entity"][1]["what"]["reference"],
            format!("Patient/{p}"),
            "{b}: the consent's patient"
        );
        // There is no way to delete the log; the attempt is itself on record.
        let r = app.delete("$audit").await;
        assert!(r.status.is_client_error(), "{b}");
        expect(&last().await, "operation:audit", "E", "4");
        // The other operator commands that change state commit with their entry too, one
        // each; a refused one is recorded as a failure.
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
        app.cli(&["user", "unlock", "--username", "wilson"]).unwrap();
        let uri = app.data.path().join("wilson.totp");
        app.cli(&[
            "user",
            "totp",
            "--username",
            "wilson",
            "--uri-file",
            uri.to_str().unwrap(),
        ])
        .unwrap();
        app.cli(&[
            "client",
            "add",
            "--name",
            "Board",
            "--redirect-uri",
            "https://board.example/cb",
            "--scopes",
            "user/*.rs",
        ])
        .unwrap();
        let list = app.cli(&["emergency", "list", "--unreviewed"]).unwrap();
        let grant = list.lines().nth(1).unwrap().split('\t').next().unwrap().to_owned();
        let review = || {
            app.cli(&[
                "emergency",
                "review",
                "--id",
                &grant,
                "--verdict",
                "appropriate",
                "--reviewer",
                "privacy",
            ])
        };
        review().unwrap();
        assert!(review().is_err(), "{b}: a grant is reviewed once");
        app.cli(&["audit", "head"]).unwrap();
        app.cli(&["integration-token", "rotate"]).unwrap();
        let rows = db.rows().await;
        assert_eq!(
            (
                count(&rows, "cli:user-unlock", "0"),
                count(&rows, "cli:user-totp", "0"),
                count(&rows, "cli:client-add", "0"),
                count(&rows, "cli:emergency-review", "0"),
                count(&rows, "cli:emergency-review", "4"),
                count(&rows, "cli:integration-token-rotate", "0"),
                count(&rows, "cli:audit-head", "0"),
            ),
            (1, 1, 1, 1, 1, 1, 1),
            "{b}"
        );
        let (ok, _, text) = verify(&app);
        assert!(ok, "{b}: {text}");
    }
}

/// A server whose journal is copied into the log at once after a quiet spell, then not for
/// an hour, after `n` reads of one patient: the later reads' entries are durable only in the
/// journal. The server, its database, and what counts those reads' entries among rows.
async fn reads_left_in_the_journal(backend: &Backend, n: usize) -> (TestApp, Db, impl Fn(&[Row]) -> usize) {
    let app = start_with_env(init(backend), &[], &[("CAREVAULT_AUDIT_COPY_MILLIS", "3600000")]);
    let db = Db::open(&app).await;
    let p = app.create(&json!({"resourceType": "Patient", "active": true})).await;
    let entity = format!("Patient/{p}");
    for _ in 0..n {
        assert_eq!(app.get(&entity).await.status, StatusCode::OK);
    }
    let reads = move |rows: &[Row]| {
        rows.iter()
            .filter(|r| r.6 == "read" && r.8.as_deref() == Some(entity.as_str()))
            .count()
    };
    (app, db, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answered_before_a_kill_9_are_in_the_log_after_restart() {
    for backend in backends("reads_answered_before_a_kill_9_are_in_the_log_after_restart").await {
        let b = backend.name();
        let (mut app, db, reads) = reads_left_in_the_journal(&backend, 20).await;
        let logged = reads(&db.read_rows().await);
        match backend {
            // (on PostgreSQL every read's entry is in the log before its response)
            Backend::Postgres { .. } => assert_eq!(logged, 20, "{b}"),
            Backend::Sqlite => assert!(logged < 20, "{b}: {logged} of 20 reads copied already"),
        }
        app.kill_9();
        // The offline verifier checks the log as it stands and says what still waits.
        let (ok, _, text) = verify(&app);
        assert!(ok, "{b}: {text}");
        if let Backend::Sqlite = backend {
            let waiting = format!("{} entries in the audit journal", 20 - logged);
            assert!(text.contains(&waiting), "{b}: {text}");
        }
        let mut app = app.restart();
        // Copied before the server answers anything, each once.
        assert_eq!(reads(&db.read_rows().await), 20, "{b}");
        app.terminate();
        let (ok, _, text) = verify(&app);
        assert!(ok, "{b}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_journal_fails_verification_and_the_log_records_the_damage() {
    // The journal is SQLite's: on PostgreSQL every entry goes straight into the log.
    let (mut app, db, reads) = reads_left_in_the_journal(&Backend::Sqlite, 10).await;
    let logged = reads(&db.read_rows().await);
    app.kill_9();

    // Edit the third record past the journal's mark (a byte inside its entry).
    let journal = app.data.path().join("audit-journal");
    let c = rusqlite::Connection::open(app.data.path().join("carevault.db")).unwrap();
    let mark: i64 = c
        .query_row("SELECT byte_offset FROM audit_journal_mark", [], |r| r.get(0))
        .unwrap();
    let mut bytes = std::fs::read(&journal).unwrap();
    let mut at = mark as usize;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 16 + len + 32;
    }
    bytes[at + 16 + 200] ^= 0x20;
    std::fs::write(&journal, &bytes).unwrap();
    let (ok, _, text) = verify(&app);
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("record at byte {at} was edited")), "{text}");

    // The next start copies the records before the edited one and records the damage.
    let mut app = app.restart();
    let rows = db.read_rows().await;
    assert_eq!(reads(&rows), logged + 2);
    let damaged: Vec<_> = rows.iter().filter(|r| r.6 == "audit-journal-damaged").collect();
    assert_eq!(damaged.len(), 1);
    assert!(String::from_utf8_lossy(&damaged[0].1).contains("edited"));
    app.terminate();
    let (ok, _, text) = verify(&app);
    assert!(ok, "{text}");
}
