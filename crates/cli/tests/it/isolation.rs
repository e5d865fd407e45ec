//! The isolation matrix: every resource type and interaction the CapabilityStatement
//! declares × every role, for 20 patients, with and without care relationships, a consent
//! that shuts a clinician out, and break-the-glass. The expected decision is computed here
//! from two independent sources: the role table published in docs/ACCESS.md (what each role
//! may do with each type) and the patients each caller reaches, known by construction (who
//! was given which encounter, care team, order or emergency grant). Every answer is checked:
//! nothing returned, read or written that the decision forbids.

use crate::helpers::*;
use bounded_join::bounded;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

mod bounded_join {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A future of a batch and, once done, its output.
    type Slot<F> = (Pin<Box<F>>, Option<<F as Future>::Output>);

    /// Polls every future of a batch until all are done (they interleave on their awaits).
    struct JoinAll<F: Future> {
        slots: Vec<Slot<F>>,
    }

    impl<F: Future> Future for JoinAll<F>
    where
        F::Output: Unpin,
    {
        type Output = Vec<F::Output>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut pending = false;
            for (f, done) in self.slots.iter_mut() {
                if done.is_none() {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => *done = Some(v),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(self.slots.iter_mut().filter_map(|(_, d)| d.take()).collect())
            }
        }
    }

    /// Runs `jobs` at most `n` at a time (concurrently within a batch), results in order.
    pub async fn bounded<T: Unpin, F: Future<Output = T>>(jobs: Vec<F>, n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(jobs.len());
        let mut it = jobs.into_iter();
        loop {
            let batch: Vec<F> = it.by_ref().take(n).collect();
            if batch.is_empty() {
                return out;
            }
            let join = JoinAll {
                slots: batch.into_iter().map(|f| (Box::pin(f), None)).collect(),
            };
            out.extend(join.await);
        }
    }
}

const PATIENTS: usize = 20;

/// The role table of docs/ACCESS.md: type → (kind, role → permission letters).
fn published_table() -> HashMap<String, (String, HashMap<String, String>)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ACCESS.md")).unwrap();
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("| type | kind |"));
    let header: Vec<String> = lines.next().unwrap().split('|').map(|c| c.trim().to_owned()).collect();
    let mut out = HashMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let mut roles = HashMap::new();
        for (i, h) in header.iter().enumerate().skip(3) {
            if !h.is_empty() {
                roles.insert(h.clone(), cells[i].replace('·', ""));
            }
        }
        out.insert(cells[1].to_owned(), (cells[2].to_owned(), roles));
    }
    assert!(out.len() > 140, "the role table was not found in docs/ACCESS.md");
    out
}

/// A body placing a resource of `rtype` in `patient`'s compartment through its first
/// compartment parameter's first path (nested elements as single objects).
fn body_for(rtype: &str, patient: Option<&str>) -> Value {
    let mut body = json!({"resourceType": rtype});
    let Some(p) = patient else { return body };
    let t: carevault_domain::ResourceType = rtype.parse().unwrap();
    let Some(param) = carevault_domain::compartment::params(t).first() else {
        return body;
    };
    let path = param.paths[0];
    let mut node = &mut body;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            node[*part] = json!({"reference": format!("Patient/{p}")});
        } else {
            if node.get(*part).is_none() {
                node[*part] = json!({});
            }
            node = node.get_mut(*part).unwrap();
        }
    }
    body
}

/// Who a caller is and whom it reaches (`None`: every patient).
struct Caller {
    label: String,
    role: String,
    token: String,
    reach: Option<BTreeSet<String>>,
}

/// A resource created for the matrix: its type, id and the patient whose compartment it is in.
#[derive(Clone)]
struct Made {
    rtype: String,
    id: String,
    patient: Option<String>,
}

struct Matrix {
    table: HashMap<String, (String, HashMap<String, String>)>,
    owner: HashMap<(String, String), Option<String>>,
}

impl Matrix {
    /// May `c` see this resource at all?
    fn may_see(&self, c: &Caller, rtype: &str, id: &str) -> Result<(), String> {
        let (kind, roles) = self
            .table
            .get(rtype)
            .ok_or_else(|| format!("{rtype} not in the table"))?;
        let perms = roles.get(&c.role).cloned().unwrap_or_default();
        if !perms.contains('r') && !perms.contains('s') {
            return Err(format!("{}: {rtype} is not readable by {}", c.label, c.role));
        }
        let owner = self.owner.get(&(rtype.to_owned(), id.to_owned()));
        match (kind.as_str(), owner, &c.reach) {
            (_, _, None) => Ok(()),
            ("directory", _, _) => Ok(()),
            ("unscoped", _, Some(_)) => Err(format!("{}: unscoped {rtype}/{id} needs the whole tenant", c.label)),
            (_, Some(Some(p)), Some(reach)) if reach.contains(p) => Ok(()),
            (_, Some(Some(p)), Some(_)) => Err(format!("{}: {rtype}/{id} of patient {p} is out of reach", c.label)),
            (_, Some(None), Some(_)) | (_, None, Some(_)) => {
                Err(format!("{}: {rtype}/{id} in no known compartment", c.label))
            }
        }
    }

    fn perms(&self, c: &Caller, rtype: &str) -> String {
        self.table[rtype].1.get(&c.role).cloned().unwrap_or_default()
    }
}

/// Every resource in a searchset or history bundle, as (type, id).
fn bundle_resources(v: &Value) -> Vec<(String, String)> {
    v["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| {
                    let r = &e["resource"];
                    Some((r["resourceType"].as_str()?.to_owned(), r["id"].as_str()?.to_owned()))
                })
                .filter(|(t, _)| t != "OperationOutcome")
                .collect()
        })
        .unwrap_or_default()
}

async fn transaction(app: &TestApp, resources: Vec<Value>) -> Vec<(String, String)> {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| json!({"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}))
        .collect();
    let r = app
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    r.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let loc = e["response"]["location"].as_str().unwrap();
            let mut parts = loc.split('/').rev().skip(2);
            let id = parts.next().unwrap().to_owned();
            let t = parts.next().unwrap().to_owned();
            (t, id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_sees_or_changes_what_its_decision_forbids() {
    for backend in backends("no_role_sees_or_changes_what_its_decision_forbids").await {
        let app = start(init(&backend), &[]);
        let b = backend.name();
        let table = published_table();
        let cap = app.get("metadata").await.json();
        let declared: Vec<(String, Vec<String>)> = cap["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let ints = r["interaction"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["code"].as_str().unwrap().to_owned())
                    .collect();
                (r["type"].as_str().unwrap().to_owned(), ints)
            })
            .collect();
        assert!(declared.len() > 140, "{b}");

        // Twenty patients, then one resource of every compartment type for each of them, and
        // one of every other type.
        let patients: Vec<String> = transaction(
            &app,
            (0..PATIENTS).map(|_| json!({"resourceType": "Patient"})).collect(),
        )
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
        let mut made: Vec<Made> = patients
            .iter()
            .map(|p| Made {
                rtype: "Patient".into(),
                id: p.clone(),
                patient: Some(p.clone()),
            })
            .collect();
        let compartment_types: Vec<&String> = declared
            .iter()
            .map(|(t, _)| t)
            .filter(|t| table[*t].0 == "compartment" && *t != "Patient")
            .collect();
        for p in &patients {
            let bodies = compartment_types.iter().map(|t| body_for(t, Some(p))).collect();
            for (t, id) in transaction(&app, bodies).await {
                made.push(Made {
                    rtype: t,
                    id,
                    patient: Some(p.clone()),
                });
            }
        }
        let shared: Vec<Value> = declared
            .iter()
            .filter(|(t, _)| table[t].0 != "compartment")
            .map(|(t, _)| body_for(t, None))
            .collect();
        for (t, id) in transaction(&app, shared).await {
            made.push(Made {
                rtype: t,
                id,
                patient: None,
            });
        }

        // Staff and their relationships.
        let mut practitioners = Vec::new();
        for _ in 0..4 {
            practitioners.push(app.create(&json!({"resourceType": "Practitioner"})).await);
        }
        let now = time::OffsetDateTime::now_utc();
        let start_at = (now - time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let relationship = |body: Value, patient: &str| (body, patient.to_owned());
        let mut links = Vec::new();
        // The physician treats P0–P4 (open encounters); P1 has refused them by consent.
        for p in &patients[0..5] {
            links.push(relationship(
                json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
                       "subject": {"reference": format!("Patient/{p}")},
                       "participant": [{"individual": {"reference": format!("Practitioner/{}", practitioners[0])}}],
                       "period": {"start": start_at}}),
                p,
            ));
        }
        links.push(relationship(
            json!({"resourceType": "Consent", "status": "active",
                   "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                   "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                   "patient": {"reference": format!("Patient/{}", patients[1])},
                   "provision": {"type": "deny", "actor": [{"role": {"text": "any"},
                       "reference": {"reference": format!("Practitioner/{}", practitioners[0])}}]}}),
            &patients[1],
        ));
        // The lab technician has an active order for P5; the pharmacist is on P6's care team.
        links.push(relationship(
            json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                   "subject": {"reference": format!("Patient/{}", patients[5])},
                   "performer": [{"reference": format!("Practitioner/{}", practitioners[2])}]}),
            &patients[5],
        ));
        links.push(relationship(
            json!({"resourceType": "CareTeam", "status": "active",
                   "subject": {"reference": format!("Patient/{}", patients[6])},
                   "participant": [{"member": {"reference": format!("Practitioner/{}", practitioners[3])}}]}),
            &patients[6],
        ));
        for (body, p) in links {
            let t = body["resourceType"].as_str().unwrap().to_owned();
            let id = app.create(&body).await;
            made.push(Made {
                rtype: t,
                id,
                patient: Some(p),
            });
        }
        let owner: HashMap<(String, String), Option<String>> = made
            .iter()
            .map(|m| ((m.rtype.clone(), m.id.clone()), m.patient.clone()))
            .collect();
        let m = Matrix { table, owner };

        let reach = |ps: &[&String]| Some(ps.iter().map(|p| (*p).clone()).collect::<BTreeSet<_>>());
        let pr = |i: usize| format!("Practitioner/{}", practitioners[i]);
        let mut callers = vec![
            Caller {
                label: "patient P0".into(),
                role: "patient".into(),
                token: app.account_token(
                    "matrix.patient",
                    "patient",
                    &["--patient", &format!("Patient/{}", patients[0])],
                    "user/*.cruds",
                    "30m",
                ),
                reach: reach(&[&patients[0]]),
            },
            Caller {
                label: "physician (P0–P4, P1 refused)".into(),
                role: "physician".into(),
                token: app.account_token(
                    "matrix.physician",
                    "physician",
                    &["--practitioner", &pr(0)],
                    "user/*.cruds",
                    "30m",
                ),
                reach: reach(&[&patients[0], &patients[2], &patients[3], &patients[4]]),
            },
            Caller {
                label: "nurse without relationships".into(),
                role: "nurse".into(),
                token: app.account_token(
                    "matrix.nurse",
                    "nurse",
                    &["--practitioner", &pr(1)],
                    "user/*.cruds",
                    "30m",
                ),
                reach: reach(&[]),
            },
            Caller {
                label: "lab technician (P5)".into(),
                role: "lab-technician".into(),
                token: app.account_token(
                    "matrix.lab",
                    "lab-technician",
                    &["--practitioner", &pr(2)],
                    "user/*.cruds",
                    "30m",
                ),
                reach: reach(&[&patients[5]]),
            },
            Caller {
                label: "pharmacist (P6)".into(),
                role: "pharmacist".into(),
                token: app.account_token(
                    "matrix.pharmacist",
                    "pharmacist",
                    &["--practitioner", &pr(3)],
                    "user/*.cruds",
                    "30m",
                ),
                reach: reach(&[&patients[6]]),
            },
        ];
        for role in ["receptionist", "analyst", "auditor", "admin"] {
            callers.push(Caller {
                label: role.into(),
                role: role.into(),
                token: app.account_token(&format!("matrix.{role}"), role, &[], "user/*.cruds", "30m"),
                reach: None,
            });
        }
        let outsider = patients[PATIENTS - 1].clone();
        let mut total = Tally::default();
        // The nurse first without any relationship, then after breaking the glass for P10.
        let nurse = callers.remove(2);
        check_caller(&app, &m, &declared, &made, &nurse, &outsider, &mut total).await;
        let ask = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "unconscious on arrival, no history"}]});
        let r = app
            .request_as(
                &nurse.token,
                Method::POST,
                &format!("Patient/{}/$break-the-glass", patients[10]),
                Some(&ask),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{b}: {}", String::from_utf8_lossy(&r.body));
        callers.push(Caller {
            label: "nurse after break-the-glass (P10)".into(),
            role: "nurse".into(),
            token: nurse.token.clone(),
            reach: reach(&[&patients[10]]),
        });
        for c in &callers {
            check_caller(&app, &m, &declared, &made, c, &outsider, &mut total).await;
        }
        let Tally {
            combos,
            probes,
            seen,
            violations,
            missing,
        } = total;
        assert!(
            violations.is_empty(),
            "{b}: {} violations, e.g.\n{}",
            violations.len(),
            violations[..violations.len().min(20)].join("\n")
        );
        assert!(
            missing.is_empty(),
            "{b}: {} reachable reads refused, e.g.\n{}",
            missing.len(),
            missing[..missing.len().min(20)].join("\n")
        );
        let per_caller: usize = declared.iter().map(|(_, i)| i.len()).sum();
        assert_eq!(
            combos,
            (callers.len() + 1) * per_caller,
            "{b}: every caller × type × interaction"
        );
        assert!(
            seen > 1_000,
            "{b}: only {seen} resources came back: the matrix tested little"
        );
        eprintln!(
            "{b}: isolation matrix: {} callers × {} types × their interactions = {combos}; {probes} answers, \
             {seen} returned resources checked, {} resources stored",
            callers.len() + 1,
            declared.len(),
            made.len()
        );
    }
}

#[derive(Default)]
struct Tally {
    /// (caller, type, interaction) combinations run.
    combos: usize,
    /// Answers checked.
    probes: usize,
    /// Resources returned and checked against the decision.
    seen: usize,
    violations: Vec<String>,
    missing: Vec<String>,
}

/// Every declared interaction of every type for one caller.
async fn check_caller(
    app: &TestApp,
    m: &Matrix,
    declared: &[(String, Vec<String>)],
    made: &[Made],
    c: &Caller,
    outsider: &str,
    tally: &mut Tally,
) {
    let b = app.data.backend.name();
    let mut jobs = Vec::new();
    for (t, interactions) in declared {
        let samples: Vec<&Made> = made.iter().filter(|x| &x.rtype == t).collect();
        let inside = samples
            .iter()
            .find(|x| match (&c.reach, &x.patient) {
                (Some(r), Some(p)) => r.contains(p),
                _ => true,
            })
            .map(|x| (*x).clone());
        let outside = samples
            .iter()
            .find(|x| x.patient.as_deref() == Some(outsider))
            .map(|x| (*x).clone());
        for interaction in interactions {
            tally.combos += 1;
            let (token, t, interaction) = (c.token.clone(), t.clone(), interaction.clone());
            let (inside, outside) = (inside.clone(), outside.clone());
            jobs.push(async move { probe(app, &token, &t, &interaction, inside, outside, outsider).await });
        }
    }
    for results in bounded(jobs, 16).await {
        for p in results {
            tally.probes += 1;
            match p {
                Probe::Returned {
                    interaction,
                    rtype,
                    resources,
                } => {
                    for (rt, id) in resources {
                        tally.seen += 1;
                        if let Err(e) = m.may_see(c, &rt, &id) {
                            tally.violations.push(format!("{b}: {interaction} {rtype}: {e}"));
                        }
                    }
                }
                Probe::Wrote {
                    interaction,
                    rtype,
                    status,
                } => {
                    let letter = match interaction.as_str() {
                        "create" => 'c',
                        "delete" => 'd',
                        _ => 'u',
                    };
                    if c.reach.is_some() || !m.perms(c, &rtype).contains(letter) {
                        tally.violations.push(format!(
                            "{b}: {}: {interaction} on {rtype} of an unreached patient answered {status}",
                            c.label
                        ));
                    }
                }
                Probe::Refused {
                    interaction,
                    rtype,
                    status,
                    inside: true,
                } => {
                    // A resource the caller reaches, of a type the table lets it read: refusing
                    // it would be a fault of completeness rather than isolation, but a fault.
                    if interaction == "read" && m.perms(c, &rtype).contains('r') {
                        tally
                            .missing
                            .push(format!("{b}: {}: read {rtype} answered {status}", c.label));
                    }
                }
                Probe::Refused { .. } => {}
            }
        }
    }
}

enum Probe {
    /// Resources a read or search returned.
    Returned {
        interaction: String,
        rtype: String,
        resources: Vec<(String, String)>,
    },
    /// A write to a resource (or for a patient) out of reach succeeded.
    Wrote {
        interaction: String,
        rtype: String,
        status: u16,
    },
    /// Refused (any non-2xx).
    Refused {
        interaction: String,
        rtype: String,
        status: u16,
        inside: bool,
    },
}

/// One declared interaction on one type: reads on a reached and an unreached resource,
/// searches and type history, and writes aimed at an unreached patient.
async fn probe(
    app: &TestApp,
    token: &str,
    t: &str,
    interaction: &str,
    inside: Option<Made>,
    outside: Option<Made>,
    outsider: &str,
) -> Vec<Probe> {
    let mut out = Vec::new();
    let returned = |r: &Resp, is_bundle: bool| {
        if !r.status.is_success() {
            return None;
        }
        let v = r.json();
        Some(if is_bundle {
            bundle_resources(&v)
        } else {
            vec![(
                v["resourceType"].as_str().unwrap_or_default().to_owned(),
                v["id"].as_str().unwrap_or_default().to_owned(),
            )]
        })
    };
    let mut record = |r: Resp, is_bundle: bool, inside: bool| match returned(&r, is_bundle) {
        Some(resources) => out.push(Probe::Returned {
            interaction: interaction.to_owned(),
            rtype: t.to_owned(),
            resources,
        }),
        None => out.push(Probe::Refused {
            interaction: interaction.to_owned(),
            rtype: t.to_owned(),
            status: r.status.as_u16(),
            inside,
        }),
    };
    let targets: Vec<(Made, bool)> = inside
        .into_iter()
        .map(|x| (x, true))
        .chain(outside.clone().map(|x| (x, false)))
        .collect();
    match interaction {
        "read" | "vread" | "history-instance" => {
            for (x, is_inside) in targets {
                let path = match interaction {
                    "read" => format!("{t}/{}", x.id),
                    "vread" => format!("{t}/{}/_history/1", x.id),
                    _ => format!("{t}/{}/_history", x.id),
                };
                let r = app.request_as(token, Method::GET, &path, None).await;
                record(r, interaction == "history-instance", is_inside);
            }
        }
        "search-type" => {
            let r = app
                .request_as(token, Method::GET, &format!("{t}?_count=1000"), None)
                .await;
            record(r, true, false);
        }
        "history-type" => {
            let r = app
                .request_as(token, Method::GET, &format!("{t}/_history?_count=1000"), None)
                .await;
            record(r, true, false);
        }
        "create" => {
            if let Some(o) = &outside {
                let body = body_for(t, o.patient.as_deref().or(Some(outsider)));
                let r = app.request_as(token, Method::POST, t, Some(&body)).await;
                if r.status.is_success() && body.as_object().is_some_and(|m| m.len() > 1) {
                    out.push(Probe::Wrote {
                        interaction: "create".into(),
                        rtype: t.into(),
                        status: r.status.as_u16(),
                    });
                }
            }
        }
        "update" => {
            if let Some(o) = &outside {
                let mut body = body_for(t, o.patient.as_deref());
                body["id"] = json!(o.id);
                let r = app
                    .request_as(token, Method::PUT, &format!("{t}/{}", o.id), Some(&body))
                    .await;
                if r.status.is_success() {
                    out.push(Probe::Wrote {
                        interaction: "update".into(),
                        rtype: t.into(),
                        status: r.status.as_u16(),
                    });
                }
            }
        }
        "patch" => {
            if let Some(o) = &outside {
                let r = app
                    .client
                    .patch(app.url(&format!("{t}/{}", o.id)))
                    .bearer_auth(token)
                    .header("content-type", "application/json-patch+json")
                    .body(r#"[{"op": "add", "path": "/language", "value": "en"}]"#)
                    .send()
                    .await
                    .unwrap();
                if r.status().is_success() {
                    out.push(Probe::Wrote {
                        interaction: "patch".into(),
                        rtype: t.into(),
                        status: r.status().as_u16(),
                    });
                }
            }
        }
        "delete" => {
            if let Some(o) = &outside {
                let path = format!("{t}/{}", o.id);
                let r = app.request_as(token, Method::DELETE, &path, None).await;
                // A delete of a resource the caller cannot see answers 204 like one of a
                // resource that does not exist; what counts is whether it is still there.
                if r.status.is_success() && app.get(&path).await.status != StatusCode::OK {
                    out.push(Probe::Wrote {
                        interaction: "delete".into(),
                        rtype: t.into(),
                        status: r.status.as_u16(),
                    });
                }
            }
        }
        other => panic!("the CapabilityStatement declares {other}, which the matrix does not probe"),
    }
    out
}
