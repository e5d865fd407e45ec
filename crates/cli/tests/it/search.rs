//! Search against an independent oracle: Synthea patients are loaded, and for several hundred
//! generated queries the expected result set is computed straight from the raw JSON by the
//! plain evaluator below (written for this test, sharing no code with the server), then
//! compared as sets with what the server returns, every page visited.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The loaded data as the server holds it: type, server id, resource with references rewritten.
struct Loaded {
    resources: Vec<(String, String, Value)>,
}

impl Loaded {
    fn of(&self, t: &str) -> impl Iterator<Item = (&String, &Value)> {
        self.resources
            .iter()
            .filter(move |(rt, _, _)| rt == t)
            .map(|(_, id, v)| (id, v))
    }

    fn ids(&self, t: &str, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
        self.of(t).filter(|(_, v)| pred(v)).map(|(id, _)| id.clone()).collect()
    }
}

async fn load(app: &TestApp, files: &[std::path::PathBuf]) -> Loaded {
    let mut resources = Vec::new();
    for f in files {
        let bundle: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let out = app.post("", &bundle).await.json();
        let entries = bundle["entry"].as_array().unwrap();
        let mut map = HashMap::new();
        for (e, r) in entries.iter().zip(out["entry"].as_array().unwrap()) {
            let typed = r["response"]["location"]
                .as_str()
                .unwrap()
                .split("/_history")
                .next()
                .unwrap()
                .to_owned();
            map.insert(e["fullUrl"].as_str().unwrap().to_owned(), typed);
        }
        for e in entries {
            let mut r = e["resource"].clone();
            rewrite(&mut r, &map);
            let typed = &map[e["fullUrl"].as_str().unwrap()];
            let (t, id) = typed.split_once('/').unwrap();
            r["id"] = Value::String(id.to_owned());
            resources.push((t.to_owned(), id.to_owned(), r));
        }
    }
    Loaded { resources }
}

/// Every page of a search, following `next`; checks no id comes twice.
async fn all_pages(app: &TestApp, first: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut url = app.url(first);
    let mut ids = BTreeSet::new();
    let mut order = Vec::new();
    for _ in 0..1000 {
        let r = app.client.get(&url).bearer_auth(&app.data.token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{first}");
        let b: Value = r.json().await.unwrap();
        for e in b["entry"].as_array().into_iter().flatten() {
            if e["search"]["mode"] == "match" {
                let id = e["resource"]["id"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "{first}: {id} twice");
                order.push(id);
            }
        }
        match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(n) => url = n["url"].as_str().unwrap().to_owned(),
            None => return (ids, order),
        }
    }
    panic!("{first}: too many pages")
}

// --- the oracle: small, literal evaluators of the FHIR rules -----------------------------

fn strs<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

fn codings(cc: &Value) -> Vec<(&str, &str)> {
    cc.get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| (c["system"].as_str().unwrap_or(""), c["code"].as_str().unwrap_or("")))
        .collect()
}

fn instant_ms(s: &str) -> i64 {
    (OffsetDateTime::parse(s, &Rfc3339).unwrap().unix_timestamp_nanos() / 1_000_000) as i64
}

fn day_start_ms(day: &str) -> i64 {
    instant_ms(&format!("{day}T00:00:00Z"))
}

fn name_parts(p: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for n in p["name"].as_array().into_iter().flatten() {
        for k in ["family", "given", "prefix", "suffix", "text"] {
            out.extend(strs(n, k).into_iter().map(str::to_lowercase));
        }
    }
    out
}

fn reference_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(|r| r["reference"].as_str()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_match_an_independent_oracle() {
    let Some(data) = testdata("searches_match_an_independent_oracle") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(data.join("synthea"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.truncate(6);
    for backend in backends("searches_match_an_independent_oracle").await {
        let app = spawn_app(&backend).await;
        let d = load(&app, &files).await;
        let mut checked = 0;
        let check = |query: String, expect: BTreeSet<String>| (query, expect);
        let mut cases: Vec<(String, BTreeSet<String>)> = Vec::new();

        // Patients: identifying parameters through blind tags.
        for (pid, p) in d.of("Patient") {
            let family = p["name"][0]["family"].as_str().unwrap().to_owned();
            let given = p["name"][0]["given"][0].as_str().unwrap().to_owned();
            let birth = p["birthDate"].as_str().unwrap().to_owned();
            for q in [
                &family[..2.min(family.len())],
                &family[..],
                &given[..3.min(given.len())],
            ] {
                let ql = q.to_lowercase();
                cases.push(check(
                    format!("Patient?name={q}"),
                    d.ids("Patient", |v| name_parts(v).iter().any(|n| n.starts_with(&ql))),
                ));
            }
            cases.push(check(
                format!("Patient?family:exact={family}"),
                d.ids("Patient", |v| {
                    v["name"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|n| n["family"] == family.as_str())
                }),
            ));
            cases.push(check(
                format!("Patient?birthdate={}", &birth[..4]),
                d.ids("Patient", |v| v["birthDate"].as_str().unwrap().starts_with(&birth[..4])),
            ));
            cases.push(check(
                format!("Patient?birthdate={birth}"),
                d.ids("Patient", |v| v["birthDate"] == birth.as_str()),
            ));
            for i in p["identifier"].as_array().unwrap() {
                let (s, val) = (i["system"].as_str().unwrap_or(""), i["value"].as_str().unwrap());
                cases.push(check(
                    format!("Patient?identifier={}|{}", s, val.replace(',', "\\,")),
                    d.ids("Patient", |v| {
                        v["identifier"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|j| j["system"] == s && j["value"] == val)
                    }),
                ));
            }
            let gender = p["gender"].as_str().unwrap().to_owned();
            cases.push(check(
                format!("Patient?gender={gender}"),
                d.ids("Patient", |v| v["gender"] == gender.as_str()),
            ));
            cases.push(check(
                format!("Patient?gender:not={gender}"),
                d.ids("Patient", |v| v["gender"] != gender.as_str()),
            ));
            let pref = format!("Patient/{pid}");
            cases.push(check(
                format!("Observation?patient={pref}"),
                d.ids("Observation", |v| {
                    reference_of(v, "subject").as_deref() == Some(pref.as_str())
                }),
            ));
            cases.push(check(
                format!("Encounter?subject={pid}"),
                d.ids("Encounter", |v| {
                    reference_of(v, "subject").as_deref() == Some(pref.as_str())
                }),
            ));
            // Chains (through an identifying parameter of the target) and _has.
            cases.push(check(
                format!("Observation?subject:Patient.family={family}"),
                d.ids("Observation", |v| {
                    reference_of(v, "subject").is_some_and(|r| {
                        d.resources.iter().any(|(t, i, p)| {
                            t == "Patient"
                                && format!("Patient/{i}") == r
                                && name_parts(p).iter().any(|n| n.starts_with(&family.to_lowercase()))
                        })
                    })
                }),
            ));
            let ssn = p["identifier"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["system"] == "http://hl7.org/fhir/sid/us-ssn");
            if let Some(ssn) = ssn {
                let val = ssn["value"].as_str().unwrap();
                cases.push(check(
                    format!("Encounter?patient.identifier=http://hl7.org/fhir/sid/us-ssn|{val}"),
                    d.ids("Encounter", |v| {
                        reference_of(v, "subject").as_deref() == Some(pref.as_str())
                    }),
                ));
            }
            cases.push(check(
                format!("Condition?patient={pref}&clinical-status=active"),
                d.ids("Condition", |v| {
                    reference_of(v, "subject").as_deref() == Some(pref.as_str())
                        && codings(&v["clinicalStatus"]).iter().any(|(_, c)| *c == "active")
                }),
            ));
        }
        // Observations: tokens, dates with prefixes, quantities, OR and AND, :missing, :text.
        let mut codes: Vec<(String, String)> = d
            .of("Observation")
            .flat_map(|(_, v)| {
                codings(&v["code"])
                    .into_iter()
                    .map(|(s, c)| (s.to_owned(), c.to_owned()))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        codes.truncate(40);
        let has_code = |v: &Value, code: &str| codings(&v["code"]).iter().any(|(_, c)| *c == code);
        for (sys, code) in &codes {
            cases.push(check(
                format!("Observation?code={sys}|{code}"),
                d.ids("Observation", |v| has_code(v, code)),
            ));
            let dates: Vec<i64> = d
                .of("Observation")
                .filter(|(_, v)| has_code(v, code))
                .filter_map(|(_, v)| v["effectiveDateTime"].as_str().map(instant_ms))
                .collect();
            if let Some(mid) = dates.get(dates.len() / 2) {
                let day = OffsetDateTime::from_unix_timestamp(mid / 1000)
                    .unwrap()
                    .date()
                    .to_string();
                let (lo, hi) = (day_start_ms(&day), day_start_ms(&day) + 86_400_000);
                let eff = |v: &Value| v["effectiveDateTime"].as_str().map(instant_ms);
                for (prefix, pred) in [
                    ("ge", Box::new(move |t: i64| t >= lo) as Box<dyn Fn(i64) -> bool>),
                    ("lt", Box::new(move |t: i64| t < lo)),
                    ("gt", Box::new(move |t: i64| t >= hi)),
                    ("le", Box::new(move |t: i64| t < hi)),
                    ("eq", Box::new(move |t: i64| t >= lo && t < hi)),
                ] {
                    cases.push(check(
                        format!("Observation?code={code}&date={prefix}{day}"),
                        d.ids("Observation", |v| has_code(v, code) && eff(v).is_some_and(&pred)),
                    ));
                }
            }
            let values: Vec<f64> = d
                .of("Observation")
                .filter(|(_, v)| has_code(v, code))
                .filter_map(|(_, v)| v["valueQuantity"]["value"].as_f64())
                .collect();
            if let Some(mid) = values.get(values.len() / 2) {
                let n = mid.floor();
                cases.push(check(
                    format!("Observation?code={code}&value-quantity=gt{n}"),
                    d.ids("Observation", |v| {
                        has_code(v, code) && v["valueQuantity"]["value"].as_f64().is_some_and(|x| x > n)
                    }),
                ));
                cases.push(check(
                    format!("Observation?code={code}&value-quantity=le{n}"),
                    d.ids("Observation", |v| {
                        has_code(v, code) && v["valueQuantity"]["value"].as_f64().is_some_and(|x| x <= n)
                    }),
                ));
            }
        }
        for pair in codes.chunks(2) {
            let (a, b) = (&pair[0].1, &pair[pair.len() - 1].1);
            cases.push(check(
                format!("Observation?code={a},{b}"),
                d.ids("Observation", |v| has_code(v, a) || has_code(v, b)),
            ));
        }
        // Composites: a code with its value, on the observation and on its components.
        for (code, n) in [("8480-6", 120.0), ("8462-4", 80.0)] {
            cases.push(check(
                format!("Observation?component-code-value-quantity=http://loinc.org|{code}$gt{n}"),
                d.ids("Observation", |v| {
                    v["component"].as_array().into_iter().flatten().any(|c| {
                        codings(&c["code"])
                            .iter()
                            .any(|(s, k)| *s == "http://loinc.org" && *k == code)
                            && c["valueQuantity"]["value"].as_f64().is_some_and(|x| x > n)
                    })
                }),
            ));
        }
        // `combo-*`: the observation's own code or value, or a component's.
        let own_and_components = |v: &Value| -> Vec<Value> {
            let mut all = vec![v.clone()];
            all.extend(v["component"].as_array().into_iter().flatten().cloned());
            all
        };
        let has_code_in = |part: &Value, code: &str| codings(&part["code"]).iter().any(|(_, c)| *c == code);
        for code in ["8480-6", "8302-2", "72166-2"] {
            cases.push(check(
                format!("Observation?combo-code={code}"),
                d.ids("Observation", |v| {
                    own_and_components(v).iter().any(|c| has_code_in(c, code))
                }),
            ));
            cases.push(check(
                format!("Observation?category=vital-signs&combo-code:not={code}"),
                d.ids("Observation", |v| {
                    codings(&v["category"][0]).iter().any(|(_, c)| *c == "vital-signs")
                        && !own_and_components(v).iter().any(|c| has_code_in(c, code))
                }),
            ));
        }
        for (code, n) in [("8480-6", 120.0), ("8302-2", 170.0)] {
            cases.push(check(
                format!("Observation?combo-code-value-quantity=http://loinc.org|{code}$ge{n}"),
                d.ids("Observation", |v| {
                    own_and_components(v)
                        .iter()
                        .any(|c| has_code_in(c, code) && c["valueQuantity"]["value"].as_f64().is_some_and(|x| x >= n))
                }),
            ));
            cases.push(check(
                format!("Observation?code={code},8462-4&combo-value-quantity=lt{n}"),
                d.ids("Observation", |v| {
                    (has_code(v, code) || has_code(v, "8462-4"))
                        && own_and_components(v)
                            .iter()
                            .any(|c| c["valueQuantity"]["value"].as_f64().is_some_and(|x| x < n))
                }),
            ));
        }
        cases.push(check(
            "Observation?combo-value-quantity:missing=true".into(),
            d.ids("Observation", |v| {
                !own_and_components(v).iter().any(|c| c.get("valueQuantity").is_some())
            }),
        ));
        cases.push(check(
            "Observation?code-value-quantity=8302-2$ge170".into(),
            d.ids("Observation", |v| {
                has_code(v, "8302-2") && v["valueQuantity"]["value"].as_f64().is_some_and(|x| x >= 170.0)
            }),
        ));
        for (_, code) in codes.iter().take(10) {
            let with_code: BTreeSet<String> = d
                .of("Observation")
                .filter(|(_, v)| has_code(v, code))
                .filter_map(|(_, v)| reference_of(v, "subject"))
                .collect();
            cases.push(check(
                format!("Patient?_has:Observation:patient:code={code}"),
                d.ids("Patient", |v| {
                    with_code.contains(&format!("Patient/{}", v["id"].as_str().unwrap()))
                }),
            ));
        }
        cases.push(check(
            "Observation?value-quantity:missing=true".into(),
            d.ids("Observation", |v| v.get("valueQuantity").is_none()),
        ));
        cases.push(check(
            "Observation?component-code:missing=false".into(),
            d.ids("Observation", |v| {
                v["component"].as_array().is_some_and(|c| !c.is_empty())
            }),
        ));
        cases.push(check(
            "Observation?code:text=body".into(),
            d.ids("Observation", |v| {
                let texts: Vec<String> = v["code"]["coding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|c| c["display"].as_str())
                    .chain(v["code"]["text"].as_str())
                    .map(str::to_lowercase)
                    .collect();
                texts.iter().any(|t| t.starts_with("body"))
            }),
        ));
        // Everything here was written today: `_lastUpdated` reads the current version's time.
        cases.push(check(
            "Observation?code=8302-2&_lastUpdated=ge2020-01-01".into(),
            d.ids("Observation", |v| has_code(v, "8302-2")),
        ));
        cases.push(check(
            "Observation?code=8302-2&_lastUpdated=lt2020-01-01".into(),
            BTreeSet::new(),
        ));
        cases.push(check(
            "Encounter?class=AMB".into(),
            d.ids("Encounter", |v| v["class"]["code"] == "AMB"),
        ));
        cases.push(check(
            "Organization?name=hospital".into(),
            d.ids("Organization", |v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.to_lowercase().starts_with("hospital"))
            }),
        ));
        cases.push(check(
            "Organization?name:contains=hospital".into(),
            d.ids("Organization", |v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.to_lowercase().contains("hospital"))
            }),
        ));
        assert!(cases.len() >= 200, "{} generated queries", cases.len());
        for (i, (query, expect)) in cases.iter().enumerate() {
            // Vary the page size so paging is exercised everywhere.
            let count = [3, 7, 50][i % 3];
            let (got, _) = all_pages(&app, &format!("{query}&_count={count}")).await;
            assert_eq!(&got, expect, "{}: {query}", backend.name());
            // The count answers the same set's size (it runs its own SQL).
            let total = app.get(&format!("{query}&_summary=count")).await.json()["total"].clone();
            assert_eq!(total, expect.len(), "{}: {query}&_summary=count", backend.name());
            checked += 1;
        }
        // Sorting: every page in order.
        let (_, order) = all_pages(&app, "Observation?code=8302-2&_sort=-date&_count=5").await;
        let dates: Vec<i64> = order
            .iter()
            .map(|id| {
                d.resources.iter().find(|(_, i, _)| i == id).unwrap().2["effectiveDateTime"]
                    .as_str()
                    .map(instant_ms)
                    .unwrap()
            })
            .collect();
        assert!(dates.windows(2).all(|w| w[0] >= w[1]), "sorted descending");
        // _include and _revinclude add the referenced and referencing resources.
        let (pid, _) = d.of("Patient").next().unwrap();
        let b = app
            .get(&format!(
                "Encounter?patient={pid}&_revinclude=Observation:encounter&_include=Encounter:subject&_count=1000"
            ))
            .await
            .json();
        let encounters: BTreeSet<String> = d.ids("Encounter", |v| {
            reference_of(v, "subject").as_deref() == Some(format!("Patient/{pid}").as_str())
        });
        let observations: BTreeSet<String> = d.ids("Observation", |v| {
            reference_of(v, "encounter").is_some_and(|r| encounters.iter().any(|e| r == format!("Encounter/{e}")))
        });
        let mode = |m: &str| -> BTreeSet<String> {
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["search"]["mode"] == m)
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        };
        assert_eq!(
            mode("match"),
            encounters.iter().map(|e| format!("Encounter/{e}")).collect()
        );
        let mut want: BTreeSet<String> = observations.iter().map(|o| format!("Observation/{o}")).collect();
        want.insert(format!("Patient/{pid}"));
        assert_eq!(mode("include"), want);
        // _include:iterate follows from what the first round added; `*` follows every reference.
        let obs: Vec<&Value> = d
            .of("Observation")
            .filter(|(_, v)| {
                has_code(v, "8302-2")
                    && reference_of(v, "subject").as_deref() == Some(format!("Patient/{pid}").as_str())
            })
            .map(|(_, v)| v)
            .collect();
        let encs: BTreeSet<String> = obs.iter().filter_map(|v| reference_of(v, "encounter")).collect();
        let orgs: BTreeSet<String> = d
            .resources
            .iter()
            .filter(|(t, i, _)| t == "Encounter" && encs.contains(&format!("Encounter/{i}")))
            .filter_map(|(_, _, v)| reference_of(v, "serviceProvider"))
            .collect();
        let b = app
            .get(&format!(
                "Observation?patient={pid}&code=8302-2&_include=Observation:encounter&_include:iterate=Encounter:service-provider&_count=1000"
            ))
            .await
            .json();
        let included: BTreeSet<String> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            included,
            encs.union(&orgs).cloned().collect::<BTreeSet<_>>(),
            "_include:iterate"
        );
        let b = app
            .get(&format!("Encounter?patient={pid}&_include=Encounter:*&_count=1"))
            .await
            .json();
        let kinds: BTreeSet<&str> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains("Patient") && kinds.contains("Organization"),
            "_include=Encounter:* gave {kinds:?}"
        );
        // $everything and compartment search: every resource of the patient, nothing of others,
        // and every resource outside the patient compartment's types (practitioners,
        // organizations…) that one of them refers to.
        let pref = format!("Patient/{pid}");
        let compartment_def: Value = serde_json::from_slice(
            &std::fs::read(data.join("fhir-definitions/CompartmentDefinition-patient.json")).unwrap(),
        )
        .unwrap();
        let compartment_types: BTreeSet<&str> = compartment_def["resource"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["param"].as_array().is_some_and(|p| !p.is_empty()))
            .map(|r| r["code"].as_str().unwrap())
            .chain(["Patient"])
            .collect();
        let own: Vec<&(String, String, Value)> = d
            .resources
            .iter()
            .filter(|(t, i, v)| {
                (t == "Patient" && i == pid) || (t != "Patient" && v.to_string().contains(&format!("\"{pref}\"")))
            })
            .collect();
        let mut mine: BTreeSet<String> = own.iter().map(|(t, i, _)| format!("{t}/{i}")).collect();
        fn references(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("reference").and_then(Value::as_str) {
                        out.insert(r.to_owned());
                    }
                    m.values().for_each(|x| references(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| references(x, out)),
                _ => {}
            }
        }
        let mut referred = BTreeSet::new();
        own.iter().for_each(|(_, _, v)| references(v, &mut referred));
        let supporting: BTreeSet<String> = referred
            .into_iter()
            .filter(|r| {
                r.split_once('/')
                    .is_some_and(|(t, i)| !compartment_types.contains(t) && !i.contains('/') && !t.contains(':'))
            })
            .collect();
        assert!(
            !supporting.is_empty(),
            "the oracle's patient refers to practitioners or organizations"
        );
        mine.extend(supporting);
        let mut got = BTreeSet::new();
        let mut url = app.url(&format!("Patient/{pid}/$everything?_count=50"));
        loop {
            let b: Value = app
                .client
                .get(&url)
                .bearer_auth(&app.data.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for e in b["entry"].as_array().unwrap() {
                let key = format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                );
                assert!(got.insert(key), "$everything repeated a resource");
            }
            match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
                Some(n) => url = n["url"].as_str().unwrap().to_owned(),
                None => break,
            }
        }
        assert_eq!(got, mine, "{}: $everything", backend.name());
        let (in_compartment, _) = all_pages(&app, &format!("Patient/{pid}/Observation?code=8302-2&_count=4")).await;
        assert_eq!(
            in_compartment,
            d.ids("Observation", |v| has_code(v, "8302-2")
                && reference_of(v, "subject").as_deref() == Some(pref.as_str()))
        );
        eprintln!("{}: {checked} queries matched the oracle", backend.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_links_walk_both_ways_and_stay_opaque() {
    let app = spawn_app(&Backend::Sqlite).await;
    for n in 0..23 {
        app.create(&serde_json::json!({"resourceType": "Patient", "name": [{"family": format!("Pagewalker{n:02}")}]}))
            .await;
    }
    let first = app.get("Patient?name=pagewalk&_count=5").await.json();
    let link = |b: &Value, rel: &str| {
        b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == rel)
            .map(|l| l["url"].as_str().unwrap().to_owned())
    };
    for l in first["link"].as_array().unwrap() {
        let url = l["url"].as_str().unwrap();
        assert!(
            !url.to_lowercase().contains("pagewalk") && !url.contains("name"),
            "{url}"
        );
    }
    // forward through every page, then back again
    let mut pages = vec![first.clone()];
    while let Some(next) = link(pages.last().unwrap(), "next") {
        let b: Value = app
            .client
            .get(next)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages.push(b);
    }
    assert_eq!(pages.len(), 5);
    let ids = |b: &Value| {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut back = pages.last().unwrap().clone();
    for expected in pages.iter().rev().skip(1) {
        let prev = link(&back, "previous").expect("a previous link");
        back = app
            .client
            .get(prev)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ids(&back), ids(expected));
    }
    assert!(link(&back, "previous").is_none());
    // a tampered cursor is refused
    let next = link(&first, "next").unwrap();
    let tampered = format!("{}A", next);
    let r = app
        .client
        .get(tampered)
        .bearer_auth(&app.data.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // writes between pages neither duplicate nor lose what matched
    let mut seen = BTreeSet::new();
    let mut url = Some(app.url("Patient?name=pagewalk&_count=4"));
    let mut n = 0;
    while let Some(u) = url {
        let b: Value = app
            .client
            .get(u)
            .bearer_auth(&app.data.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for id in ids(&b) {
            assert!(seen.insert(id));
        }
        app.create(
            &serde_json::json!({"resourceType": "Patient", "name": [{"family": format!("Pagewalker-late{n}")}]}),
        )
        .await;
        n += 1;
        url = link(&b, "next");
    }
    assert!(seen.len() >= 23, "every patient that matched at the start was seen");
    // unknown parameters: ignored and reported, or refused with handling=strict
    let r = app.get("Patient?name=pagewalk&nonsense=1").await.json();
    let outcome = r["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert!(
        outcome["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("nonsense")
    );
    let r = app
        .request(
            reqwest::Method::GET,
            "Patient?nonsense=1",
            None,
            &[("prefer", "handling=strict")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // search by POST keeps terms out of the URL
    let r = app
        .client
        .post(app.url("Patient/_search"))
        .bearer_auth(&app.data.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=pagewalker0&_count=100")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["total"], 10);
    // identifying parameters refuse what the blind index cannot answer, and say why
    for q in [
        "Patient?name:contains=walk",
        "Patient?birthdate=gt2000",
        "Patient?name=p",
        "Patient?_sort=name",
    ] {
        let r = app.get(q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(!r.outcome().is_empty());
    }
    assert_eq!(app.get("Patient?_count=0").await.json()["total"], 23 + n);
}

/// A walk through many matches while another client keeps creating and updating matching
/// resources: every resource that matched before the walk began is returned exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_stable_under_concurrent_writes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    for backend in backends("paging_is_stable_under_concurrent_writes").await {
        let app = Arc::new(spawn_app(&backend).await);
        let obs = |value: u64| {
            serde_json::json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "urn:test", "code": "stable-walk"}]},
                "valueQuantity": {"value": value, "unit": "1"}})
        };
        let mut before = Vec::new();
        for i in 0..150 {
            before.push(app.create(&obs(i)).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (app, stop, writes, before) =
                (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&writes), before.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A new match, then a new version of an old one.
                    app.create(&obs(1000 + i)).await;
                    let id = &before[(i as usize * 7) % before.len()];
                    let mut changed = obs(2000 + i);
                    changed["id"] = Value::from(id.as_str());
                    let r = app.put(&format!("Observation/{id}"), &changed).await;
                    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
                    writes.fetch_add(2, Ordering::Relaxed);
                    i += 1;
                }
            })
        };
        let mut url = app.url("Observation?code=urn:test|stable-walk&_count=7");
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let b = app.client.get(&url).bearer_auth(&app.data.token).send().await.unwrap();
            assert_eq!(b.status(), StatusCode::OK);
            let b: Value = b.json().await.unwrap();
            for e in b["entry"].as_array().into_iter().flatten() {
                seen.push(e["resource"]["id"].as_str().unwrap().to_owned());
            }
            // Let the writer get ahead between pages.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
                Some(n) => url = n["url"].as_str().unwrap().to_owned(),
                None => break,
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();
        assert!(writes.load(Ordering::Relaxed) > 10, "the writer hardly ran");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{}: a resource came twice", backend.name());
        for id in &before {
            assert!(unique.contains(id), "{}: {id} went missing", backend.name());
        }
    }
}

/// A count takes each matching resource once, though a resource may match a condition
/// through several of its index rows (one code under two systems, a name and an alias with
/// one prefix, both codes of an OR), and never a deleted one: `_summary=count` and
/// `_total=accurate` agree with the resources the search returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_take_each_match_once() {
    use serde_json::json;
    for backend in backends("counts_take_each_match_once").await {
        let app = spawn_app(&backend).await;
        let obs = |codes: &[(&str, &str)], when: &str| {
            let coding: Vec<Value> = codes.iter().map(|(s, c)| json!({"system": s, "code": c})).collect();
            json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": coding}, "effectiveDateTime": when})
        };
        let both = app
            .create(&obs(
                &[("urn:a", "dup-x"), ("urn:b", "dup-x"), ("urn:a", "dup-y")],
                "2020-05-01",
            ))
            .await;
        let y = app.create(&obs(&[("urn:a", "dup-y")], "2020-05-01")).await;
        let old_x = app.create(&obs(&[("urn:a", "dup-x")], "2000-05-01")).await;
        let gone = app
            .create(&obs(&[("urn:a", "dup-x"), ("urn:b", "dup-x")], "2020-05-01"))
            .await;
        assert_eq!(
            app.delete(&format!("Observation/{gone}")).await.status,
            StatusCode::NO_CONTENT
        );
        let org = app
            .create(&json!({"resourceType": "Organization", "name": "Dupcount Clinic", "alias": ["Dupcount Care"]}))
            .await;
        let ids = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        for (query, expected) in [
            ("Observation?code=dup-x", ids(&[&both, &old_x])),
            ("Observation?code=dup-x,dup-y", ids(&[&both, &y, &old_x])),
            ("Observation?code=urn:a|dup-x,urn:b|dup-x", ids(&[&both, &old_x])),
            ("Observation?code=dup-x&date=ge2010", ids(&[&both])),
            ("Observation?code=dup-x,dup-y&date=lt2010", ids(&[&old_x])),
            ("Observation?code=dup-x&status:not=final", ids(&[])),
            ("Organization?name=dupcount", ids(&[&org])),
            // A chain that matches nothing leaves an empty list of references to count by.
            ("Observation?subject:Patient.gender=nothing-matches", ids(&[])),
            (
                "Observation?code=dup-x&subject:Patient.gender=nothing-matches",
                ids(&[]),
            ),
        ] {
            let (found, _) = all_pages(&app, query).await;
            assert_eq!(found, expected, "{}: {query}", backend.name());
            let count = app.get(&format!("{query}&_summary=count")).await.json();
            assert_eq!(
                count["total"],
                expected.len(),
                "{}: {query} _summary=count",
                backend.name()
            );
            let total = app.get(&format!("{query}&_total=accurate")).await.json();
            assert_eq!(total["total"], expected.len(), "{}: {query} _total", backend.name());
        }
    }
}

/// `_summary=true|data`, `:identifier` on references and `_revinclude:iterate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_reference_identifiers_and_iterated_revincludes() {
    use serde_json::json;
    for backend in backends("summaries_reference_identifiers_and_iterated_revincludes").await {
        let app = spawn_app(&backend).await;
        let p = app
            .create(&json!({"resourceType": "Patient", "gender": "female",
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">A patient</div>"},
                "name": [{"family": "Summarova"}], "photo": [{"contentType": "image/png", "data": "iVBORw0KGgo="}]}))
            .await;
        // _summary=true keeps the summary elements and drops the rest; data drops the text.
        let b = app.get(&format!("Patient?_id={p}&_summary=true")).await.json();
        let r = &b["entry"][0]["resource"];
        assert_eq!(r["name"][0]["family"], "Summarova");
        assert_eq!(r["gender"], "female");
        assert!(r.get("text").is_none() && r.get("photo").is_none(), "{r}");
        assert!(r["meta"]["tag"].to_string().contains("SUBSETTED"));
        let b = app.get(&format!("Patient?_id={p}&_summary=data")).await.json();
        let r = &b["entry"][0]["resource"];
        assert!(r.get("text").is_none() && r.get("photo").is_some(), "{r}");
        assert!(r["meta"]["tag"].to_string().contains("SUBSETTED"));
        let b = app.get(&format!("Patient?_id={p}&_summary=false")).await.json();
        assert!(b["entry"][0]["resource"].get("text").is_some());
        // _summary=text: the narrative, id, meta and the mandatory elements only.
        let b = app.get(&format!("Patient?_id={p}&_summary=text")).await.json();
        let r = &b["entry"][0]["resource"];
        assert!(
            r.get("text").is_some() && r.get("name").is_none() && r.get("gender").is_none(),
            "{r}"
        );
        assert_eq!(r["id"], p.as_str());
        assert!(r["meta"]["tag"].to_string().contains("SUBSETTED"));
        let o = app
            .create(
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                "subject": {"reference": format!("Patient/{p}")}, "valueQuantity": {"value": 70}}),
            )
            .await;
        let b = app.get(&format!("Observation?_id={o}&_summary=text")).await.json();
        let r = &b["entry"][0]["resource"];
        assert!(r.get("status").is_some() && r.get("code").is_some(), "{r}");
        assert!(r.get("subject").is_none() && r.get("valueQuantity").is_none(), "{r}");
        assert_eq!(app.get("Patient?_summary=words").await.status, StatusCode::BAD_REQUEST);

        // :identifier matches the reference's own identifier, not the resolved resource.
        let logical = app
            .create(
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"identifier": {"system": "urn:mrn", "value": "M-2"}}}),
            )
            .await;
        let both = app
            .create(
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": format!("Patient/{p}"), "identifier": {"system": "urn:mrn", "value": "M-1"}}}),
            )
            .await;
        let ids = |b: Value| -> BTreeSet<String> {
            b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        };
        for (q, want) in [
            ("Observation?subject:identifier=urn:mrn|M-2", vec![logical.clone()]),
            ("Observation?subject:identifier=M-1", vec![both.clone()]),
            ("Observation?subject:identifier=urn:other|M-1", vec![]),
            (
                "Observation?subject:identifier=urn:mrn|M-1,urn:mrn|M-2",
                vec![logical.clone(), both.clone()],
            ),
        ] {
            let r = app.get(q).await;
            assert_eq!(r.status, StatusCode::OK, "{q}");
            assert_eq!(ids(r.json()), want.into_iter().collect::<BTreeSet<_>>(), "{q}");
        }

        // _revinclude:iterate follows from what the first round added.
        let enc = app
            .create(&json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": format!("Patient/{p}")}}))
            .await;
        let obs = app
            .create(
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                "encounter": {"reference": format!("Encounter/{enc}")}}),
            )
            .await;
        let included = |b: &Value| -> BTreeSet<String> {
            b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == "include")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let once = app
            .get(&format!("Patient?_id={p}&_revinclude=Encounter:subject"))
            .await
            .json();
        assert_eq!(included(&once), [enc.clone()].into_iter().collect());
        let iterated = app
            .get(&format!(
                "Patient?_id={p}&_revinclude=Encounter:subject&_revinclude:iterate=Observation:encounter"
            ))
            .await
            .json();
        assert_eq!(included(&iterated), [enc.clone(), obs.clone()].into_iter().collect());
    }
}

/// Every `Type/id` of `Patient/{pid}/$everything?{query}`, two to a page, following `next`;
/// checks none comes twice.
async fn everything_keys(app: &TestApp, pid: &str, query: &str) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    let mut url = app.url(&format!("Patient/{pid}/$everything?_count=2&{query}"));
    loop {
        let r = app.client.get(&url).bearer_auth(&app.data.token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{query}");
        let page: Value = r.json().await.unwrap();
        for e in page["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            let key = format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap());
            assert!(got.insert(key.clone()), "{query}: {key} twice");
        }
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(n) => url = n["url"].as_str().unwrap().to_owned(),
            None => return got,
        }
    }
}

/// `Patient/$everything` with `start` and `end`: the types R4's `clinical-date` covers keep
/// what their care date overlaps, other types are not filtered; the practitioners the
/// records refer to come along (and `_type` selects among them), a stranger's do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_takes_care_dates_and_brings_what_the_records_refer_to() {
    for backend in backends("everything_takes_care_dates_and_brings_what_the_records_refer_to").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let dr = app
            .create(&serde_json::json!({"resourceType": "Practitioner", "active": true}))
            .await;
        let stranger = app
            .create(&serde_json::json!({"resourceType": "Practitioner", "active": false}))
            .await;
        let pid = app
            .create(&serde_json::json!({"resourceType": "Patient", "active": true}))
            .await;
        let other = app
            .create(&serde_json::json!({"resourceType": "Patient", "active": true}))
            .await;
        let mut made = HashMap::new();
        let mut make = |name: &str, v: Value| {
            made.insert(name.to_owned(), v);
        };
        let obs = |patient: &str, when: &str, performer: &str| {
            serde_json::json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "performer": [{"reference": format!("Practitioner/{performer}")}],
                "effectiveDateTime": when})
        };
        make("obs-2019", obs(&pid, "2019-06-01T10:00:00Z", &dr));
        make("obs-2020", obs(&pid, "2020-06-01T10:00:00Z", &dr));
        make("obs-2021", obs(&pid, "2021-06-01T10:00:00Z", &dr));
        make("other-2020", obs(&other, "2020-06-01T10:00:00Z", &stranger));
        make(
            "enc-across",
            serde_json::json!({"resourceType": "Encounter", "status": "finished",
                "class": {"code": "AMB"}, "subject": {"reference": format!("Patient/{pid}")},
                "period": {"start": "2019-12-30T08:00:00Z", "end": "2020-01-02T08:00:00Z"}}),
        );
        make(
            "impression-2018",
            serde_json::json!({"resourceType": "ClinicalImpression", "status": "completed",
                "subject": {"reference": format!("Patient/{pid}")}, "date": "2018-03-03"}),
        );
        make(
            "condition",
            serde_json::json!({"resourceType": "Condition",
                "subject": {"reference": format!("Patient/{pid}")}, "recordedDate": "2015-01-01"}),
        );
        let mut ids = HashMap::new();
        for (name, v) in &made {
            ids.insert(
                name.clone(),
                format!("{}/{}", v["resourceType"].as_str().unwrap(), app.create(v).await),
            );
        }
        let want = |names: &[&str], extra: &[String]| -> BTreeSet<String> {
            names
                .iter()
                .map(|n| ids[*n].clone())
                .chain(extra.iter().cloned())
                .collect()
        };
        let me = format!("Patient/{pid}");
        let doctor = format!("Practitioner/{dr}");
        let all = [
            "obs-2019",
            "obs-2020",
            "obs-2021",
            "enc-across",
            "impression-2018",
            "condition",
        ];
        assert_eq!(
            everything_keys(&app, &pid, "").await,
            want(&all, &[me.clone(), doctor.clone()]),
            "{b}: everything"
        );
        assert_eq!(
            everything_keys(&app, &pid, "start=2020-01-01&end=2020-12-31").await,
            want(&["obs-2020", "enc-across", "condition"], &[me.clone(), doctor.clone()]),
            "{b}: 2020 (the encounter overlaps it; a condition has no care date)"
        );
        assert_eq!(
            everything_keys(&app, &pid, "start=2021").await,
            want(&["obs-2021", "condition"], &[me.clone(), doctor.clone()]),
            "{b}: from 2021"
        );
        assert_eq!(
            everything_keys(&app, &pid, "end=2018-12").await,
            want(&["impression-2018", "condition"], &[me.clone(), doctor.clone()]),
            "{b}: up to the end of 2018"
        );
        assert_eq!(
            everything_keys(
                &app,
                &pid,
                "_type=Practitioner,Observation&start=2020-06-01&end=2020-06-01"
            )
            .await,
            want(&["obs-2020"], std::slice::from_ref(&doctor)),
            "{b}: _type"
        );
        assert!(
            !everything_keys(&app, &pid, "")
                .await
                .contains(&format!("Practitioner/{stranger}")),
            "{b}"
        );
        for bad in [
            "start=yesterday",
            "end=2020-02-30",
            "start=ge2020",
            "start=2020-01-01T00:00:00Z",
        ] {
            let r = app.get(&format!("Patient/{pid}/$everything?{bad}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {bad}");
            r.outcome();
        }
    }
}

/// Searches too large to be real ones (thousands of ANDed or ORed values) are a 400 that
/// says what the limit is, not a database error; the largest allowed ones are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_searches_are_refused_and_the_largest_allowed_answered() {
    for backend in backends("oversized_searches_are_refused_and_the_largest_allowed_answered").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let ands = |n: usize| (0..n).map(|i| format!("code=c{i}")).collect::<Vec<_>>().join("&");
        let ors = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
        let ids = |n: usize| (0..n).map(|i| format!("id{i}")).collect::<Vec<_>>().join(",");
        for (path, limit) in [
            (format!("Observation?{}", ands(2000)), "32 parameters"),
            (format!("Observation?{}", ands(33)), "32 parameters"),
            (
                "Observation?_sort=date,-code,status,date,-code,status,date,-code,status".to_owned(),
                "8 keys",
            ),
            (format!("Observation?code={}", ors(2000)), "200 values"),
            (format!("Observation?_id={}", ids(1001)), "1000 values"),
            (
                format!(
                    "Patient?{}",
                    (0..101).map(|i| format!("name=ab{i}")).collect::<Vec<_>>().join("&")
                ),
                "32 parameters",
            ),
        ] {
            let r = app.get(&path).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {}", &path[..40]);
            assert!(r.outcome().contains(limit), "{b}: {}", &path[..40]);
        }
        for path in [
            format!("Observation?{}", ands(32)),
            "Observation?_sort=date,-code,status,date,-code,status,date,-code".to_owned(),
            format!("Observation?code={}", ors(200)),
            format!("Observation?code={}&_summary=count", ors(200)),
            format!("Observation?_id={}", ids(1000)),
            format!("Observation?{}&code={}", ands(31), ors(200)),
        ] {
            let r = app.get(&path).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{b}: {}: {}",
                &path[..40],
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

/// Names match however their accents are written: precomposed or decomposed (a letter and
/// combining marks), in the record or in the search, and beyond Latin-1 (`ễ`, `İ`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_search_folds_decomposed_accents_too() {
    for backend in backends("name_search_folds_decomposed_accents_too").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        for family in ["Bjo\u{308}rkqvist", "\u{130}nan\u{e7}", "Nguy\u{1ec5}n"] {
            app.create(&serde_json::json!({"resourceType": "Patient", "name": [{"family": family}]}))
                .await;
        }
        for (query, want) in [
            ("bjork", "Bjo\u{308}rkqvist"),
            ("Bj%C3%B6rk", "Bjo\u{308}rkqvist"),
            ("inanc", "\u{130}nan\u{e7}"),
            ("I%CC%87nan", "\u{130}nan\u{e7}"),
            ("nguyen", "Nguy\u{1ec5}n"),
            ("Nguye%CC%82%CC%83n", "Nguy\u{1ec5}n"),
        ] {
            let r = app.get(&format!("Patient?family={query}")).await.json();
            let got: Vec<&str> = r["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["name"][0]["family"].as_str().unwrap())
                .collect();
            assert_eq!(got, [want], "{b}: family={query}");
        }
    }
}

/// The ids of a search's matches, in order.
fn match_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_searches_take_the_entries_the_caller_may_see() {
    for backend in backends("list_searches_take_the_entries_the_caller_may_see").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let mut patients = Vec::new();
        for family in ["Ames", "Boyd", "Cole", "Dunn"] {
            patients.push(
                app.create(&serde_json::json!({"resourceType": "Patient", "name": [{"family": family}]}))
                    .await,
            );
        }
        let obs = app
            .create(&serde_json::json!({"resourceType": "Observation", "status": "final",
                "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{}", patients[0])}}))
            .await;
        let entry = |r: String| serde_json::json!({"item": {"reference": r}});
        // A worklist of patients 0 and 1 (1 struck off), an observation, and patient 2 by
        // absolute URL; patient 3 is on no list.
        let mut struck = entry(format!("Patient/{}", patients[1]));
        struck["deleted"] = Value::Bool(true);
        let worklist = app
            .create(
                &serde_json::json!({"resourceType": "List", "status": "current", "mode": "working",
                "entry": [entry(format!("Patient/{}", patients[0])), struck,
                          entry(format!("Observation/{obs}")),
                          entry(format!("https://elsewhere.example/fhir/Patient/{}", patients[3])),
                          entry(format!("Patient/{}/_history/1", patients[2]))]}),
            )
            .await;
        let other = app
            .create(
                &serde_json::json!({"resourceType": "List", "status": "current", "mode": "snapshot",
                "entry": [entry(format!("Patient/{}", patients[1]))]}),
            )
            .await;
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let want = sorted(vec![patients[0].clone(), patients[2].clone()]);
        let got = app.get(&format!("Patient?_list={worklist}")).await.json();
        assert_eq!(sorted(match_ids(&got)), want, "{b}: Patient?_list");
        assert_eq!(got["total"], 2, "{b}");
        let got = app.get(&format!("Observation?_list={worklist}")).await.json();
        assert_eq!(match_ids(&got), std::slice::from_ref(&obs), "{b}: Observation?_list");
        let got = app
            .get(&format!("Patient?_list={worklist},{other}&family=bo"))
            .await
            .json();
        assert_eq!(match_ids(&got), [patients[1].clone()], "{b}: two lists and a name");
        let got = app
            .get("Patient?_list=0f0e0d0c-0b0a-4909-8807-060504030201")
            .await
            .json();
        assert_eq!(got["total"], 0, "{b}: no such list");
        let r = app.get("Patient?_list=$current-problems").await;
        assert_eq!(r.status, 400, "{b}: functional lists");
        assert!(r.outcome().contains("functional list"), "{b}: {}", r.outcome());

        // A patient sees the list of their own compartment and, through it, only what they may.
        let own = app
            .create(
                &serde_json::json!({"resourceType": "List", "status": "current", "mode": "working",
                "subject": {"reference": format!("Patient/{}", patients[0])},
                "entry": [entry(format!("Patient/{}", patients[0])), entry(format!("Patient/{}", patients[1]))]}),
            )
            .await;
        let link = format!("Patient/{}", patients[0]);
        let t = app.account_token("ames", "patient", &["--patient", &link], "patient/*.rs", "15m");
        let got = app
            .request_as(&t, Method::GET, &format!("Patient?_list={own}"), None)
            .await
            .json();
        assert_eq!(match_ids(&got), [patients[0].clone()], "{b}: the patient's own list");
        let got = app
            .request_as(&t, Method::GET, &format!("Patient?_list={worklist}"), None)
            .await
            .json();
        assert_eq!(got["total"], 0, "{b}: a list outside the patient's compartment");
    }
}

/// Every page of a search across types (`Type/id` in page order), following `next`, and the
/// pages again walking back from the last with `previous`.
async fn walk_system(app: &TestApp, token: &str, first: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let keys = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect()
    };
    let get = |url: String| async move {
        let r = app.client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        r.json::<Value>().await.unwrap()
    };
    let link = |b: &Value, rel: &str| {
        b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == rel)
            .map(|l| l["url"].as_str().unwrap().to_owned())
    };
    let mut pages = Vec::new();
    let mut b = get(app.url(first)).await;
    loop {
        for l in b["link"].as_array().unwrap() {
            let url = l["url"].as_str().unwrap();
            let base = app.url("");
            assert!(
                url.starts_with(&format!("{}?_cursor=", base.trim_end_matches('/'))),
                "{first}: link {url}"
            );
        }
        pages.push(keys(&b));
        match link(&b, "next") {
            Some(next) => b = get(next).await,
            None => break,
        }
        assert!(pages.len() < 200, "{first}: too many pages");
    }
    let mut back = vec![keys(&b)];
    while let Some(previous) = link(&b, "previous") {
        b = get(previous).await;
        back.push(keys(&b));
        assert!(back.len() <= pages.len(), "{first}: more pages backwards than forwards");
    }
    back.reverse();
    assert_eq!(back, pages, "{first}: walking back gives the same pages");
    (pages.concat(), pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_across_types_merge_page_and_guard() {
    for backend in backends("searches_across_types_merge_page_and_guard").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let tag = serde_json::json!({"tag": [{"system": "urn:ward", "code": "w7"}]});
        let mut want: BTreeSet<String> = BTreeSet::new();
        let mut patients = Vec::new();
        for i in 0..4 {
            let p = app
                .create(&serde_json::json!({"resourceType": "Patient", "meta": tag, "name": [{"family": format!("Sys{i}")}]}))
                .await;
            want.insert(format!("Patient/{p}"));
            for kind in ["Observation", "Condition"] {
                let code = serde_json::json!({"coding": [{"system": "urn:c", "code": "c1"}]});
                let mut r = serde_json::json!({"resourceType": kind, "meta": tag, "code": code,
                    "subject": {"reference": format!("Patient/{p}")}});
                if kind == "Observation" {
                    r["status"] = "final".into();
                }
                want.insert(format!("{kind}/{}", app.create(&r).await));
            }
            patients.push(p);
        }
        // Untagged resources of the same types, and a tagged one of another type.
        app.create(&serde_json::json!({"resourceType": "Patient", "name": [{"family": "Other"}]}))
            .await;
        let basic = app
            .create(&serde_json::json!({"resourceType": "Basic", "meta": tag, "code": {"text": "x"}}))
            .await;

        let q = "?_type=Patient,Observation,Condition&_tag=urn:ward|w7&_count=5";
        let (all, pages) = walk_system(&app, &app.data.token, q).await;
        assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), want, "{b}: {q}");
        assert_eq!(all.len(), want.len(), "{b}: nothing twice");
        assert_eq!(pages.len(), 3, "{b}: 12 matches in pages of 5");
        let counted = app.get(&format!("{q}&_summary=count")).await.json();
        assert_eq!(counted["total"], 12, "{b}: _summary=count");

        // Without _type: every type, the Basic included.
        let (all, _) = walk_system(&app, &app.data.token, "?_tag=urn:ward|w7&_count=7").await;
        assert_eq!(all.len(), 13, "{b}: every type");
        assert!(all.contains(&format!("Basic/{basic}")), "{b}");

        // Newest first, across types.
        let (all, _) = walk_system(&app, &app.data.token, &format!("{q}&_sort=-_lastUpdated")).await;
        let mut stamps = Vec::new();
        for key in &all {
            stamps.push(
                app.get(key).await.json()["meta"]["lastUpdated"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mut sorted = stamps.clone();
        sorted.sort_by_key(|s| std::cmp::Reverse(instant_ms(s)));
        assert_eq!(stamps, sorted, "{b}: -_lastUpdated");

        // A parameter common to the types named filters each of them.
        let q = format!("?_type=Observation,Condition&patient={}&_total=accurate", patients[1]);
        let got = app.get(&q).await.json();
        assert_eq!(got["total"], 2, "{b}: {q}");

        // Refusals: a parameter some types lack, includes, other sorts, unknown types, and a
        // cursor of a type search.
        for (q, says) in [
            ("?_type=Patient,Observation&code=c1", "not of Patient"),
            ("?code=c1", "`code` is a search parameter"),
            ("?_type=Patient&_include=Patient:organization", "across types"),
            ("?_type=Patient,Observation&_sort=_id", "_lastUpdated only"),
            ("?_type=Patient,Nonsense", "unknown resource type"),
            ("?_has:Observation:patient:code=c1", "at most 8 types"),
        ] {
            let r = app.get(q).await;
            assert_eq!(r.status, 400, "{b}: {q}");
            assert!(r.outcome().contains(says), "{b}: {q}: {}", r.outcome());
        }
        let typed = app.get("Patient?_count=1").await.json();
        let next = typed["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .unwrap();
        let cursor = next["url"]
            .as_str()
            .unwrap()
            .split("_cursor=")
            .nth(1)
            .unwrap()
            .to_owned();
        assert_eq!(
            app.get(&format!("?_cursor={cursor}")).await.status,
            400,
            "{b}: a type search's cursor"
        );
        // Unknown parameters are reported, or refused under handling=strict.
        let r = app.get("?_type=Basic&colour=blue").await.json();
        assert_eq!(
            r["entry"].as_array().unwrap().last().unwrap()["search"]["mode"],
            "outcome",
            "{b}"
        );
        let strict = app
            .request(
                Method::GET,
                "?_type=Basic&colour=blue",
                None,
                &[("prefer", "handling=strict")],
            )
            .await;
        assert_eq!(strict.status, 400, "{b}: strict");

        // The form-body search.
        let r = app
            .client
            .post(app.url("_search"))
            .bearer_auth(&app.data.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("_type=Condition&_tag=urn:ward%7Cw7&_total=accurate")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{b}: POST _search");
        assert_eq!(r.json::<Value>().await.unwrap()["total"], 4, "{b}: POST _search");

        // A patient sees their own records across types, and nothing of anyone else's.
        let link = format!("Patient/{}", patients[2]);
        let t = app.account_token("sys2", "patient", &["--patient", &link], "patient/*.rs", "15m");
        let (all, _) = walk_system(&app, &t, "?_type=Patient,Observation,Condition&_count=2").await;
        assert_eq!(all.len(), 3, "{b}: the patient's own three");
        for key in &all {
            let r = app.get(key).await.json();
            assert!(
                r["id"] == patients[2].as_str() || r["subject"]["reference"] == link.as_str(),
                "{b}: {key}"
            );
        }
        let (all, _) = walk_system(&app, &t, "?_tag=urn:ward|w7").await;
        assert_eq!(all.len(), 3, "{b}: every type, the patient's compartment only");
    }
}

/// Great-circle distance in km (haversine), the oracle for `near`.
fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_finds_locations_within_the_distance() {
    for backend in backends("near_finds_locations_within_the_distance").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        // Named places, spots either side of the antimeridian and around the north pole, and
        // a scatter of pseudo-random points around Boston.
        let mut points: Vec<(f64, f64)> = vec![
            (42.3626, -71.0695),
            (42.3736, -71.1097),
            (42.2626, -71.8023),
            (40.7128, -74.0060),
            (-17.7134, 178.065),
            (-17.6, -179.9),
            (89.9, 0.0),
            (89.9, 180.0),
            (-90.0, 0.0),
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..60 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let dlat = (seed % 20_000) as f64 / 10_000.0 - 1.0;
            let dlon = ((seed >> 20) % 20_000) as f64 / 10_000.0 - 1.0;
            points.push((42.36 + dlat, -71.06 + dlon));
        }
        let mut ids = HashMap::new();
        for (lat, lon) in &points {
            let id = app
                .create(&serde_json::json!({"resourceType": "Location", "status": "active",
                    "position": {"latitude": lat, "longitude": lon}}))
                .await;
            ids.insert(id, (*lat, *lon));
        }
        let unplaced = app
            .create(&serde_json::json!({"resourceType": "Location", "name": "nowhere"}))
            .await;
        let km_per = |unit: &str| match unit {
            "m" => 0.001,
            "[mi_i]" => 1.609_344,
            _ => 1.0,
        };
        let mut checked = 0;
        for (centre, distance, unit) in [
            ((42.3601, -71.0589), 5.0, "km"),
            ((42.3601, -71.0589), 25.0, "km"),
            ((42.3601, -71.0589), 60.0, "[mi_i]"),
            ((42.3601, -71.0589), 400.0, "km"),
            ((42.3626, -71.0695), 900.0, "m"),
            ((42.0, -71.5), 40.0, "km"),
            ((-17.65, 179.9), 60.0, "km"),
            ((-17.65, -179.99), 30.0, "km"),
            ((90.0, 0.0), 20.0, "km"),
            ((89.95, 90.0), 15.0, "km"),
            ((0.0, 0.0), 20_100.0, "km"),
        ] {
            let km = distance * km_per(unit);
            // Points within a metre of the circle are left out of the comparison: they are
            // rounding's to decide.
            if ids.values().any(|p| (haversine_km(centre, *p) - km).abs() < 0.001) {
                continue;
            }
            let want: BTreeSet<String> = ids
                .iter()
                .filter(|(_, p)| haversine_km(centre, **p) <= km)
                .map(|(id, _)| id.clone())
                .collect();
            let q = format!(
                "Location?near={}|{}|{distance}|{}&_count=1000",
                centre.0,
                centre.1,
                unit.replace('[', "%5B").replace(']', "%5D")
            );
            let got: BTreeSet<String> = match_ids(&app.get(&q).await.json()).into_iter().collect();
            assert_eq!(got, want, "{b}: {q}");
            checked += 1;
        }
        assert!(checked >= 10, "{b}: only {checked} searches were decidable");
        // A distance of 0 finds the Location at the point itself, for every point.
        for (at, p) in &ids {
            let got = match_ids(&app.get(&format!("Location?near={}|{}|0|km", p.0, p.1)).await.json());
            assert_eq!(got, std::slice::from_ref(at), "{b}: distance 0 at {p:?}");
        }
        // A whole-globe distance finds every placed Location and not the unplaced one.
        let all = match_ids(&app.get("Location?near=0|0|20100|km&_count=1000").await.json());
        assert_eq!(all.len(), points.len(), "{b}");
        let missing = match_ids(&app.get("Location?near:missing=true").await.json());
        assert_eq!(missing, std::slice::from_ref(&unplaced), "{b}: near:missing");
        // The default distance (5 km) around MGH: MGH and Cambridge among them.
        let near_mgh: BTreeSet<String> = match_ids(&app.get("Location?near=42.3626|-71.0695&_count=1000").await.json())
            .into_iter()
            .collect();
        let want: BTreeSet<String> = ids
            .iter()
            .filter(|(_, p)| haversine_km((42.3626, -71.0695), **p) <= 5.0)
            .map(|(i, _)| i.clone())
            .collect();
        assert_eq!(near_mgh, want, "{b}: default distance");
        // Moving a Location moves it in the index.
        let (moved, _) = ids.iter().find(|(_, p)| p.0 == 40.7128).unwrap();
        let r = app
            .put(
                &format!("Location/{moved}"),
                &serde_json::json!({"resourceType": "Location", "id": moved, "status": "active",
                    "position": {"latitude": 51.5072, "longitude": -0.1276}}),
            )
            .await;
        assert_eq!(r.status, 200, "{b}");
        assert!(
            match_ids(&app.get("Location?near=40.7128|-74.006|10").await.json()).is_empty(),
            "{b}"
        );
        assert_eq!(
            match_ids(&app.get("Location?near=51.5|-0.12|10").await.json()),
            std::slice::from_ref(moved),
            "{b}"
        );
        for bad in [
            "near=91|0|1",
            "near=0|181",
            "near=abc|0",
            "near=0|0|-1",
            "near=0|0|1|furlong",
            "near=0",
            "near:exact=0|0",
            "_sort=near",
        ] {
            let r = app.get(&format!("Location?{bad}")).await;
            assert_eq!(r.status, 400, "{b}: {bad}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_are_found_by_their_type() {
    for backend in backends("identifiers_are_found_by_their_type").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
        let typed = |code: &str, system: &str, value: &str| serde_json::json!({"type": {"coding": [{"system": v2, "code": code}]}, "system": system, "value": value});
        // The same value as a medical record number of one patient and a driver's licence of
        // another; an untyped identifier with that value on a third.
        let mrn = app
            .create(&serde_json::json!({"resourceType": "Patient",
                "identifier": [typed("MR", "urn:mrn", "12345"), typed("SS", "urn:ssn", "999-00-1234")]}))
            .await;
        let licence = app
            .create(&serde_json::json!({"resourceType": "Patient", "identifier": [typed("DL", "urn:dl", "12345")]}))
            .await;
        app.create(
            &serde_json::json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "12345"}]}),
        )
        .await;
        let obs = app
            .create(
                &serde_json::json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "identifier": [typed("FILL", "urn:lab", "L-77")]}),
            )
            .await;
        let of_type = |t: &str, value: &str| format!("{v2}|{t}|{value}");
        for (query, want) in [
            (
                format!("Patient?identifier:of-type={}", of_type("MR", "12345")),
                vec![mrn.clone()],
            ),
            (
                format!("Patient?identifier:of-type={}", of_type("DL", "12345")),
                vec![licence.clone()],
            ),
            (format!("Patient?identifier:of-type={}", of_type("SS", "12345")), vec![]),
            (
                format!(
                    "Patient?identifier:of-type={},{}",
                    of_type("MR", "12345"),
                    of_type("DL", "12345")
                ),
                vec![mrn.clone(), licence.clone()],
            ),
            (
                format!("Patient?identifier:of-type={}", of_type("SS", "999-00-1234")),
                vec![mrn.clone()],
            ),
            (
                format!("Observation?identifier:of-type={}", of_type("FILL", "L-77")),
                vec![obs.clone()],
            ),
            (
                format!("Observation?identifier:of-type={}", of_type("PLAC", "L-77")),
                vec![],
            ),
        ] {
            let mut got = match_ids(&app.get(&query).await.json());
            got.sort();
            let mut want = want;
            want.sort();
            assert_eq!(got, want, "{b}: {query}");
        }
        for bad in [
            "Patient?identifier:of-type=MR|12345",
            "Observation?identifier:of-type=a||c",
        ] {
            let r = app.get(bad).await;
            assert_eq!(r.status, 400, "{b}: {bad}");
            assert!(r.outcome().contains("system|code|value"), "{b}: {}", r.outcome());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_restores_what_older_versions_did_not_index() {
    for backend in backends("reindex_restores_what_older_versions_did_not_index").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let location = app
            .create(&serde_json::json!({"resourceType": "Location", "status": "active",
                "position": {"latitude": 48.8566, "longitude": 2.3522}}))
            .await;
        let patient = app
            .create(
                &serde_json::json!({"resourceType": "Patient", "name": [{"family": "Reindexová"}],
                "identifier": [{"system": "urn:mrn", "value": "R-1",
                    "type": {"coding": [{"system": "urn:t", "code": "MR"}]}}]}),
            )
            .await;
        let gone = app
            .create(&serde_json::json!({"resourceType": "Patient", "name": [{"family": "Reindexgone"}]}))
            .await;
        assert_eq!(app.delete(&format!("Patient/{gone}")).await.status, 204);
        let searches = [
            ("Location?near=48.85|2.35|5".to_owned(), location.clone()),
            ("Patient?family=reindexo".to_owned(), patient.clone()),
            ("Patient?identifier=urn:mrn|R-1".to_owned(), patient.clone()),
            ("Patient?identifier:of-type=urn:t|MR|R-1".to_owned(), patient.clone()),
            (format!("Patient?_id={patient}&family=reindex"), patient.clone()),
        ];
        for (q, want) in &searches {
            assert_eq!(
                &match_ids(&app.get(q).await.json()),
                std::slice::from_ref(want),
                "{b}: {q} before"
            );
        }
        let before = app.get(&format!("Patient/{patient}")).await.json();
        // As if written by a version that indexed less: no positions, blind tags or
        // identifier tags.
        crate::tamper::exec(
            &app,
            "DELETE FROM search_geo; DELETE FROM search_blind; DELETE FROM identifier_index;",
        )
        .await;
        for (q, _) in &searches {
            assert!(
                match_ids(&app.get(q).await.json()).is_empty(),
                "{b}: {q} without its rows"
            );
        }
        let out = app.cli(&["reindex"]).expect("reindex runs");
        assert!(out.contains("Reindexed 2 resources"), "{b}: {out}");
        for (q, want) in &searches {
            assert_eq!(
                &match_ids(&app.get(q).await.json()),
                std::slice::from_ref(want),
                "{b}: {q} after"
            );
        }
        // The deleted patient stays out of searches; nothing made a version.
        assert!(
            match_ids(&app.get("Patient?family=reindexg").await.json()).is_empty(),
            "{b}"
        );
        assert_eq!(
            app.get(&format!("Patient/{patient}")).await.json(),
            before,
            "{b}: unchanged"
        );
        let history = app.get(&format!("Patient/{patient}/_history")).await.json();
        assert_eq!(history["total"], 1, "{b}: no new version");
        let audit = app.get("$audit?subtype=cli:reindex").await.json();
        assert_eq!(
            audit["entry"].as_array().map(Vec::len),
            Some(1),
            "{b}: the reindex is on record"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_updated_alone_finds_current_versions_only() {
    for backend in backends("last_updated_alone_finds_current_versions_only").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let create = |i: usize| {
            let app = &app;
            async move {
                app.create(&serde_json::json!({"resourceType": "Patient", "gender": "unknown", "name": [{"family": format!("Lu{i}")}]}))
                    .await
            }
        };
        let mut early = Vec::new();
        for i in 0..12 {
            early.push(create(i).await);
        }
        let cut = app.get(&format!("Patient/{}", early[11])).await.json()["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut late = Vec::new();
        for i in 12..20 {
            late.push(create(i).await);
        }
        // Four early ones updated (their current version is late, an old one early), one late
        // one deleted.
        for id in &early[..4] {
            let r = app
                .put(
                    &format!("Patient/{id}"),
                    &serde_json::json!({"resourceType": "Patient", "id": id, "gender": "other"}),
                )
                .await;
            assert_eq!(r.status, 200, "{b}");
        }
        assert_eq!(app.delete(&format!("Patient/{}", late[0])).await.status, 204);
        let set = |ids: &[String]| ids.iter().cloned().collect::<BTreeSet<String>>();
        let mut want_after = set(&late[1..]);
        want_after.extend(set(&early[..4]));
        let want_before = set(&early[4..]);
        let cut = cut.replace('+', "%2B");
        for (q, want) in [
            (format!("Patient?_lastUpdated=gt{cut}&_count=3"), &want_after),
            (format!("Patient?_lastUpdated=le{cut}&_count=3"), &want_before),
            (
                format!("Patient?_lastUpdated=gt{cut},lt2000-01-01&_count=5"),
                &want_after,
            ),
        ] {
            let (got, _) = all_pages(&app, &q).await;
            assert_eq!(&got, want, "{b}: {q}");
            let counted = app.get(&format!("{q}&_summary=count")).await.json();
            assert_eq!(counted["total"], want.len(), "{b}: {q} count");
        }
        let none = app.get("Patient?_lastUpdated=gt2999-01-01").await.json();
        assert_eq!(none["total"], 0, "{b}");
        // Every prefix at several precisions: driving by the update-time index (alone) and
        // probing each row (with `_id` driving) agree.
        let all_ids = early.iter().chain(&late).cloned().collect::<Vec<_>>().join(",");
        let second = cut.split('.').next().unwrap().to_owned();
        let day = cut[..10].to_owned();
        for value in [cut.clone(), second, day, cut[..4].to_owned()] {
            for prefix in ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
                let alone = format!("Patient?_lastUpdated={prefix}{value}&_count=100");
                let (driven, _) = all_pages(&app, &alone).await;
                let (probed, _) = all_pages(&app, &format!("{alone}&_id={all_ids}")).await;
                assert_eq!(driven, probed, "{b}: {alone}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_text_search_is_refused_saying_why() {
    for backend in backends("free_text_search_is_refused_saying_why").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        for q in [
            "Patient?_content=smith",
            "Observation?_text=smith",
            "?_type=Patient&_text=smith",
        ] {
            let r = app.get(q).await;
            assert_eq!(r.status, 400, "{b}: {q}");
            assert!(
                r.outcome().contains("free text") && !r.outcome().contains("smith"),
                "{b}: {}",
                r.outcome()
            );
        }
        // Contained resources are not indexed on their own: searching containers only (the
        // default) is served, the rest refused saying so; no named queries are defined.
        let p = app
            .create(&serde_json::json!({"resourceType": "Patient", "active": true}))
            .await;
        let r = app
            .get(&format!("Patient?_id={p}&_contained=false&_containedType=container"))
            .await;
        assert_eq!((r.status, r.json()["total"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
        for (q, why) in [
            ("Patient?_contained=true", "not indexed on their own"),
            ("Patient?_contained=both", "not indexed on their own"),
            ("Patient?_query=current-high-risk", "no named queries"),
        ] {
            let r = app.get(q).await;
            assert_eq!(r.status, 400, "{b}: {q}");
            assert!(r.outcome().contains(why), "{b}: {q}: {}", r.outcome());
        }
    }
}

/// `_filter` compared with a literal evaluation of each filter over the resources as
/// created: combinations with `and`, `or`, `not` and parentheses, every kind of comparison,
/// a chain under `or`, an identifying name ANDed at the top, paging, counts, and the
/// refusals. (Each evaluation is written in the shape of its filter, not simplified.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::nonminimal_bool, clippy::type_complexity)]
async fn filters_combine_comparisons_like_a_literal_evaluation() {
    for backend in backends("filters_combine_comparisons_like_a_literal_evaluation").await {
        let app = spawn_app(&backend).await;
        let b = backend.name();
        let families = ["Peterson", "Petrov", "Smith", "Smythe", "Ortega", "Quinn"];
        let genders = ["male", "female", "other"];
        // (id, gender, birth date, active, family)
        let mut patients: Vec<(String, &str, String, bool, &str)> = Vec::new();
        for i in 0..30usize {
            let (g, fam) = (genders[i % 3], families[i % 6]);
            let birth = format!("{}-{:02}-{:02}", 1950 + (i * 7) % 60, 1 + i % 12, 1 + i % 28);
            let active = i % 4 == 0;
            let id = app
                .create(
                    &serde_json::json!({"resourceType": "Patient", "gender": g, "birthDate": birth, "active": active,
                    "name": [{"family": fam}]}),
                )
                .await;
            patients.push((id, g, birth, active, fam));
        }
        let codes = ["8867-4", "9279-1", "8310-5"];
        // (id, code, status, value, day of January 2020, patient index)
        let mut observations: Vec<(String, &str, &str, i64, usize, usize)> = Vec::new();
        for i in 0..60usize {
            let (code, status, day, p) = (codes[i % 3], ["final", "preliminary"][i % 2], 1 + i % 28, (i * 11) % 30);
            let id = app
                .create(&serde_json::json!({"resourceType": "Observation", "status": status,
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": format!("Patient/{}", patients[p].0)},
                    "effectiveDateTime": format!("2020-01-{day:02}T10:00:00Z"),
                    "valueQuantity": {"value": i, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}))
                .await;
            observations.push((id, code, status, i as i64, day, p));
        }
        type P<'a> = &'a (String, &'a str, String, bool, &'a str);
        type O<'a> = &'a (String, &'a str, &'a str, i64, usize, usize);
        let patient_cases: Vec<(&str, Box<dyn Fn(P) -> bool>)> = vec![
            (
                "gender eq male or active eq true",
                Box::new(|p: P| p.1 == "male" || p.3),
            ),
            (
                "not (gender eq female) and active eq true",
                Box::new(|p: P| p.1 != "female" && p.3),
            ),
            (
                "family sw pet and (gender eq male or gender eq other)",
                Box::new(|p: P| p.4.to_lowercase().starts_with("pet") && p.1 != "female"),
            ),
            (
                "family eq Smith and active ne true",
                Box::new(|p: P| p.4 == "Smith" && !p.3),
            ),
            (
                "(gender eq other and active eq false) or not (gender eq male or active eq false)",
                Box::new(|p: P| (p.1 == "other" && !p.3) || !(p.1 == "male" || !p.3)),
            ),
            // A birth date is identifying: an equality at the top, re-checked.
            (
                "birthdate eq 1957 and gender ne other",
                Box::new(|p: P| p.2.starts_with("1957") && p.1 != "other"),
            ),
            ("gender ne other", Box::new(|p: P| p.1 != "other")),
        ];
        for (filter, want) in &patient_cases {
            let expected: BTreeSet<String> = patients.iter().filter(|p| want(p)).map(|p| p.0.clone()).collect();
            let q = format!("Patient?_filter={}&_count=7", urlencoding(filter));
            let (got, _) = all_pages(&app, &q).await;
            assert_eq!(got, expected, "{b}: {filter}");
            let count = app
                .get(&format!("Patient?_filter={}&_summary=count", urlencoding(filter)))
                .await
                .json();
            assert_eq!(count["total"], expected.len(), "{b}: {filter} counted");
        }
        let obs_cases: Vec<(&str, Box<dyn Fn(O) -> bool>)> = vec![
            (
                "(code eq 8867-4 and value-quantity gt 30) or (status eq preliminary and date lt 2020-01-10)",
                Box::new(|o: O| (o.1 == "8867-4" && o.3 > 30) || (o.2 == "preliminary" && o.4 < 10)),
            ),
            (
                "code ne 8867-4 and status eq final",
                Box::new(|o: O| o.1 != "8867-4" && o.2 == "final"),
            ),
            (
                "subject:Patient.gender eq male or code eq http://loinc.org|9279-1",
                Box::new(|o: O| patients[o.5].1 == "male" || o.1 == "9279-1"),
            ),
            (
                "not (subject:Patient.family sw smi) and value-quantity le 20",
                Box::new(|o: O| !patients[o.5].4.starts_with("Smi") && o.3 <= 20),
            ),
            ("date po 2020-01-05", Box::new(|o: O| o.4 == 5)),
            (
                "status eq final or _lastUpdated lt 2000-01-01",
                Box::new(|o: O| o.2 == "final"),
            ),
            (
                "value-quantity pr false or code eq 8310-5",
                Box::new(|o: O| o.1 == "8310-5"),
            ),
        ];
        for (filter, want) in &obs_cases {
            let expected: BTreeSet<String> = observations.iter().filter(|o| want(o)).map(|o| o.0.clone()).collect();
            let (got, _) = all_pages(&app, &format!("Observation?_filter={}&_count=9", urlencoding(filter))).await;
            assert_eq!(got, expected, "{b}: {filter}");
        }
        // Spaces written as `+` (as URLSearchParams and requests write them); a plus sign left
        // unescaped before a time zone offset is still a plus sign.
        let (got, _) = all_pages(&app, "Patient?_filter=gender+eq+male+or+active+eq+true").await;
        let expected: BTreeSet<String> = patients
            .iter()
            .filter(|p| p.1 == "male" || p.3)
            .map(|p| p.0.clone())
            .collect();
        assert_eq!(got, expected, "{b}: + as space");
        let (got, _) = all_pages(
            &app,
            "Observation?date=ge2020-01-20T11:00:00+01:00&_filter=status+eq+final",
        )
        .await;
        let expected: BTreeSet<String> = observations
            .iter()
            .filter(|o| o.4 >= 20 && o.2 == "final")
            .map(|o| o.0.clone())
            .collect();
        assert_eq!(got, expected, "{b}: an unescaped offset");

        // A filter ANDs with the search's other parameters, and two filters with each other.
        let (got, _) = all_pages(
            &app,
            &format!(
                "Observation?status=final&_filter={}&_filter={}",
                urlencoding("code eq 8867-4 or code eq 9279-1"),
                urlencoding("value-quantity lt 40")
            ),
        )
        .await;
        let expected: BTreeSet<String> = observations
            .iter()
            .filter(|o| o.2 == "final" && o.1 != "8310-5" && o.3 < 40)
            .map(|o| o.0.clone())
            .collect();
        assert_eq!(got, expected, "{b}");

        // A filter's comparisons count toward the 32 parameters of a search.
        let twenty = vec!["gender eq male"; 20].join(" or ");
        let q = format!(
            "Patient?_filter={}&_filter={}",
            urlencoding(&twenty),
            urlencoding(&twenty)
        );
        let r = app.get(&q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}");
        assert!(r.json().to_string().contains("at most 32 parameters"), "{b}");
        let q = format!("Patient?_filter={}&active=true", urlencoding(&twenty));
        assert_eq!(app.get(&q).await.status, StatusCode::OK, "{b}");

        // Refusals: each a 400 with a reason that never repeats a searched value.
        for (filter, why) in [
            ("family eq Quillfeather or gender eq male", "identifying"),
            ("not (family sw Quillfeather)", "identifying"),
            ("gender eq male and", "expected a comparison"),
            ("colour eq blue", "names no search parameter"),
            ("gender eq male or Quillfeather eq x", "comparison 2"),
            ("family ew Quillfeather", "not served"),
            ("name co Quillfeather", ":contains"),
            ("birthdate lt 1970 or gender eq male", "identifying"),
        ] {
            let r = app.get(&format!("Patient?_filter={}", urlencoding(filter))).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{b}: {filter}");
            let text = r.json().to_string();
            assert!(text.contains(why), "{b}: {filter}: {text}");
            assert!(
                !text.contains("Quillfeather"),
                "{b}: the refusal repeats the value: {text}"
            );
        }
    }
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect()
}
