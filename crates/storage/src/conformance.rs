//! One storage conformance suite, run unchanged against every backend. PostgreSQL runs when
//! `CAREVAULT_TEST_POSTGRES_URL` is set (`.ci/run` sets it); otherwise the test says loudly
//! that it did not run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;

fn key(id: &str) -> ResourceKey {
    ResourceKey {
        tenant: "default".into(),
        rtype: "Observation".into(),
        id: id.into(),
    }
}

fn version(id: &str, v: u64, expect: Expect, op: Op, tags: &[&[u8]]) -> NewVersion {
    NewVersion {
        key: key(id),
        version: v,
        expect,
        last_updated: 1000 * v as i64,
        op,
        key_id: 1,
        patient: "p".into(),
        body: if op == Op::Delete {
            vec![]
        } else {
            format!("sealed-{id}-{v}").into_bytes()
        },
        identifier_tags: tags.iter().map(|t| t.to_vec()).collect(),
        search_rows: Vec::new(),
    }
}

fn one(v: NewVersion) -> ChangeSet {
    ChangeSet {
        versions: vec![v],
        ..ChangeSet::default()
    }
}

/// A create that claims `tag` (a conditional create's claim on its condition).
fn claiming(v: NewVersion, tag: &[u8]) -> ChangeSet {
    ChangeSet {
        versions: vec![v],
        claims: vec![Claim {
            tag: tag.to_vec(),
            version: 0,
        }],
        ..ChangeSet::default()
    }
}

/// Conditional creates' claims: a claim whose resource stands fails a second one (and the
/// whole set, nothing written); a changed or deleted resource's claim is taken over; old
/// claims are purged.
async fn claims_suite<S: Store>(s: S) {
    let create = |id: &str| version(id, 1, Expect::Absent, Op::Create, &[]);
    s.apply(claiming(create("claim-1"), b"condition-a")).await.unwrap();
    assert!(matches!(
        s.apply(claiming(create("claim-2"), b"condition-a")).await,
        Err(StoreError::Claimed)
    ));
    assert!(s.current(&key("claim-2")).await.unwrap().is_none(), "nothing written");
    // Another condition is free.
    s.apply(claiming(create("claim-3"), b"condition-b")).await.unwrap();
    // The claimed resource changed: its claim no longer holds, the next create takes it over.
    s.apply(one(version("claim-1", 2, Expect::Version(1), Op::Update, &[])))
        .await
        .unwrap();
    s.apply(claiming(create("claim-4"), b"condition-a")).await.unwrap();
    assert!(matches!(
        s.apply(claiming(create("claim-5"), b"condition-a")).await,
        Err(StoreError::Claimed)
    ));
    // Deleted: taken over too.
    s.apply(one(version("claim-4", 2, Expect::Version(1), Op::Delete, &[])))
        .await
        .unwrap();
    s.apply(claiming(create("claim-5"), b"condition-a")).await.unwrap();
    // Purged claims (made at 1000 ms here) hold nothing any more.
    assert_eq!(s.purge_claims(500).await.unwrap(), 0);
    assert_eq!(s.purge_claims(1001).await.unwrap(), 2);
    s.apply(claiming(create("claim-6"), b"condition-a")).await.unwrap();
}

async fn suite<S: Store>(s: S) {
    // create, read, conflict on a second create
    s.apply(one(version("a", 1, Expect::Absent, Op::Create, &[b"tag1"])))
        .await
        .unwrap();
    let cur = s.current(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        (cur.version, cur.op, cur.body.as_slice()),
        (1, Op::Create, b"sealed-a-1".as_slice())
    );
    assert!(matches!(
        s.apply(one(version("a", 1, Expect::Absent, Op::Create, &[]))).await,
        Err(StoreError::Conflict)
    ));
    assert!(s.current(&key("missing")).await.unwrap().is_none());

    // update with the right and a stale expectation
    s.apply(one(version("a", 2, Expect::Version(1), Op::Update, &[b"tag2"])))
        .await
        .unwrap();
    assert!(matches!(
        s.apply(one(version("a", 3, Expect::Version(1), Op::Update, &[]))).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.version(&key("a"), 1).await.unwrap().unwrap().body, b"sealed-a-1");
    assert!(s.version(&key("a"), 9).await.unwrap().is_none());

    // many at once: the current versions of those that exist, each once
    let many: Vec<String> = ["missing", "a", "a"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..300).map(|i| format!("n{i}")))
        .collect();
    let found = s.current_many("default", "Observation", &many).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].key.id.as_str(), found[0].version), ("a", 2));
    assert!(s.current_many("default", "Patient", &many).await.unwrap().is_empty());

    // identifier index follows the current version only
    assert!(
        s.find_by_identifier("default", "Observation", b"tag1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.find_by_identifier("default", "Observation", b"tag2").await.unwrap(),
        vec!["a".to_string()]
    );
    assert!(
        s.find_by_identifier("default", "Patient", b"tag2")
            .await
            .unwrap()
            .is_empty()
    );

    // a change set is atomic: the bad second entry undoes the good first one
    let bad = ChangeSet {
        claims: Vec::new(),
        reindex: Vec::new(),
        audit: None,
        versions: vec![
            version("b", 1, Expect::Absent, Op::Create, &[]),
            version("a", 9, Expect::Version(7), Op::Update, &[]),
        ],
    };
    assert!(matches!(s.apply(bad).await, Err(StoreError::Conflict)));
    assert!(s.current(&key("b")).await.unwrap().is_none());

    // deletion is a version; it leaves the index
    s.apply(one(version("a", 3, Expect::Version(2), Op::Delete, &[])))
        .await
        .unwrap();
    assert!(s.current(&key("a")).await.unwrap().unwrap().is_deleted());
    assert!(
        s.find_by_identifier("default", "Observation", b"tag2")
            .await
            .unwrap()
            .is_empty()
    );

    // history: newest first, paged by cursor, bounded by since
    s.apply(one(version("c", 1, Expect::Absent, Op::Create, &[])))
        .await
        .unwrap();
    let q = HistoryQuery {
        tenant: "default".into(),
        rtype: Some("Observation".into()),
        id: None,
        since: None,
        before_seq: None,
        limit: 2,
        patients: None,
    };
    let page1 = s.history(&q).await.unwrap();
    assert_eq!(
        page1.iter().map(|v| (v.key.id.as_str(), v.version)).collect::<Vec<_>>(),
        vec![("c", 1), ("a", 3)]
    );
    let page2 = s
        .history(&HistoryQuery {
            before_seq: Some(page1[1].seq),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|v| (v.key.id.as_str(), v.version)).collect::<Vec<_>>(),
        vec![("a", 2), ("a", 1)]
    );
    assert_eq!(s.history_count(&q).await.unwrap(), 4);
    let inst = HistoryQuery {
        id: Some("a".into()),
        since: Some(2000),
        limit: 10,
        patients: None,
        ..q.clone()
    };
    assert_eq!(s.history(&inst).await.unwrap().len(), 2);
    assert_eq!(s.history_count(&inst).await.unwrap(), 2);

    // data keys: the first insert wins, later ones get the same key back
    let nk = |w: &[u8]| NewKey {
        tenant: "default".into(),
        scope: "p1".into(),
        kek_version: 1,
        wrapped: w.to_vec(),
        created: 0,
    };
    let k1 = s.insert_data_key(nk(b"first")).await.unwrap();
    let k2 = s.insert_data_key(nk(b"second")).await.unwrap();
    assert_eq!(k1, k2);
    assert_eq!(k1.wrapped, b"first");
    assert_eq!(s.data_key_by_id(k1.key_id).await.unwrap(), Some(k1.clone()));
    assert_eq!(s.data_key("default", "p1").await.unwrap(), Some(k1));
    assert!(s.data_key("default", "p2").await.unwrap().is_none());

    // tokens
    s.insert_token(b"hash", "bootstrap", 0).await.unwrap();
    assert_eq!(s.active_tokens().await.unwrap(), vec![b"hash".to_vec()]);
    assert_eq!(s.replace_tokens(b"hash2", "rotated", 1, None).await.unwrap(), 1);
    assert_eq!(s.active_tokens().await.unwrap(), vec![b"hash2".to_vec()]);
    assert!(
        s.replace_tokens(b"hash2", "again", 2, None).await.is_err(),
        "a token is stored once"
    );
    assert_eq!(
        s.active_tokens().await.unwrap(),
        vec![b"hash2".to_vec()],
        "a failed replacement revokes nothing"
    );

    // A set of creates (written together on PostgreSQL): all or nothing, in the set's order;
    // one id that exists, or one id twice, fails the whole set.
    let creates = |ids: &[&str]| ChangeSet {
        versions: ids
            .iter()
            .map(|id| version(id, 1, Expect::Absent, Op::Create, &[b"set-tag"]))
            .collect(),
        ..ChangeSet::default()
    };
    assert!(matches!(
        s.apply(creates(&["set-1", "a", "set-2"])).await,
        Err(StoreError::Conflict)
    ));
    assert!(s.apply(creates(&["set-1", "set-1"])).await.is_err());
    assert!(s.current(&key("set-1")).await.unwrap().is_none(), "nothing written");
    s.apply(creates(&["set-1", "set-2", "set-3"])).await.unwrap();
    for id in ["set-1", "set-2", "set-3"] {
        let v = s.current(&key(id)).await.unwrap().unwrap();
        assert_eq!((v.version, v.body), (1, format!("sealed-{id}-1").into_bytes()));
    }
    let mut tagged = s
        .find_by_identifier("default", "Observation", b"set-tag")
        .await
        .unwrap();
    tagged.sort();
    assert_eq!(tagged, vec!["set-1", "set-2", "set-3"], "each create's identifier tag");
    s.apply(one(version("set-2", 2, Expect::Version(1), Op::Update, &[])))
        .await
        .unwrap();
    assert_eq!(s.current(&key("set-2")).await.unwrap().unwrap().version, 2);

    // concurrent updates with the same expectation: exactly one wins
    s.apply(one(version("race", 1, Expect::Absent, Op::Create, &[])))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.apply(one(version("race", 2, Expect::Version(1), Op::Update, &[])))
                .await
        }));
    }
    let mut wins = 0;
    for h in handles {
        if h.await.unwrap().is_ok() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

fn indexed(id: &str, rows: Vec<SearchRow>) -> ChangeSet {
    let mut v = version(id, 1, Expect::Absent, Op::Create, &[]);
    v.key.rtype = "Patient".into();
    v.search_rows = rows;
    one(v)
}

fn tok(param: &str, system: &str, code: &str) -> SearchRow {
    SearchRow::Token {
        param: param.into(),
        system: system.into(),
        code: code.into(),
    }
}

fn user(id: &str, tag: &[u8]) -> StoredUser {
    StoredUser {
        id: id.into(),
        tenant: "default".into(),
        username_tag: tag.to_vec(),
        username_sealed: b"sealed".to_vec(),
        username_key_id: 1,
        role: "physician".into(),
        patient: None,
        practitioner: Some("dr1".into()),
        password_hash: "$argon2id$…".into(),
        disabled: false,
        created: 5,
    }
}

/// Accounts, and histories limited to some patients' compartments.
async fn accounts_suite<S: Store>(s: S) {
    let e0 = s.access_epoch("default").await.unwrap();
    s.insert_user(user("u1", b"tag-a"), None).await.unwrap();
    let e1 = s.access_epoch("default").await.unwrap();
    assert!(e1.accounts > e0.accounts, "a new account changes the epoch");
    assert!(
        matches!(
            s.insert_user(user("u2", b"tag-a"), None).await,
            Err(StoreError::Conflict)
        ),
        "a username is taken once per tenant"
    );
    let mut other_tenant = user("u3", b"tag-a");
    other_tenant.tenant = "other".into();
    s.insert_user(other_tenant, None).await.unwrap();
    let got = s.user_by_tag("default", b"tag-a").await.unwrap().unwrap();
    assert_eq!(got, user("u1", b"tag-a"));
    assert_eq!(s.user_by_id("default", "u1").await.unwrap(), Some(got));
    assert_eq!(s.user_by_id("other", "u1").await.unwrap(), None);
    assert!(s.set_user_disabled("default", "u1", true, None).await.unwrap());
    let e2 = s.access_epoch("default").await.unwrap();
    assert!(e2.accounts > e1.accounts, "disabling changes the epoch");
    s.insert_emergency(
        StoredEmergency {
            id: "g1".into(),
            tenant: "default".into(),
            user_id: "u1".into(),
            patient: "pa".into(),
            started: 100,
            expires: 200,
            reason_sealed: b"sealed".to_vec(),
            reason_key_id: 1,
            reviewed_at: None,
            reviewer: None,
            verdict: None,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.access_epoch("default").await.unwrap().emergencies, e2.emergencies + 1);
    assert_eq!(
        s.active_emergencies("default", "u1", 150).await.unwrap(),
        vec![("pa".to_owned(), 200)]
    );
    assert!(
        s.active_emergencies("default", "u1", 200).await.unwrap().is_empty(),
        "expired"
    );
    assert_eq!(s.emergencies("default", Some("pa"), true).await.unwrap().len(), 1);
    assert!(
        s.review_emergency("default", "g1", "u9", "appropriate", 300, None)
            .await
            .unwrap()
    );
    assert!(
        !s.review_emergency("default", "g1", "u9", "appropriate", 301, None)
            .await
            .unwrap(),
        "once"
    );
    assert!(s.emergencies("default", Some("pa"), true).await.unwrap().is_empty());
    assert!(!s.set_user_disabled("default", "nobody", true, None).await.unwrap());
    let all = s.users("default").await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].disabled);

    // Two observations in two patients' compartments; a history limited to one sees one.
    for (id, patient) in [("h1", "pa"), ("h2", "pb")] {
        let mut v = version(id, 1, Expect::Absent, Op::Create, &[]);
        v.search_rows = vec![
            SearchRow::Reference {
                param: COMPARTMENT_PARAM.into(),
                target_type: "Patient".into(),
                target_id: patient.into(),
            },
            tok(
                SECURITY_PARAM,
                "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "PSY",
            ),
            tok(SECURITY_PARAM, "urn:other", "X"),
        ];
        s.apply(one(v)).await.unwrap();
    }
    // What a read by id decides on, with and without the version.
    let (v, facts) = s.current_with_facts(&key("h1")).await.unwrap().unwrap();
    assert_eq!(v.key.id, "h1");
    let want = ResourceFacts {
        patients: vec!["pa".into()],
        labels: vec![
            ("http://terminology.hl7.org/CodeSystem/v3-ActCode".into(), "PSY".into()),
            ("urn:other".into(), "X".into()),
        ],
    };
    let mut sorted = facts.clone();
    sorted.labels.sort();
    assert_eq!(sorted, want);
    let mut plain = s.facts(&key("h1")).await.unwrap().unwrap();
    plain.labels.sort();
    assert_eq!(plain, want);
    assert_eq!(s.current_with_facts(&key("nope")).await.unwrap(), None);
    assert_eq!(s.facts(&key("nope")).await.unwrap(), None);
    let q = HistoryQuery {
        tenant: "default".into(),
        rtype: Some("Observation".into()),
        id: None,
        since: None,
        before_seq: None,
        limit: 100,
        patients: Some(vec!["pa".into()]),
    };
    let ids: Vec<String> = s.history(&q).await.unwrap().into_iter().map(|v| v.key.id).collect();
    assert!(
        ids.contains(&"h1".to_owned()) && !ids.contains(&"h2".to_owned()),
        "{ids:?}"
    );
    assert_eq!(s.history_count(&q).await.unwrap(), ids.len() as u64);
    let nobody = HistoryQuery {
        patients: Some(Vec::new()),
        ..q.clone()
    };
    assert_eq!(s.history(&nobody).await.unwrap(), Vec::new());
    let untyped = HistoryQuery { rtype: None, ..q };
    assert_eq!(
        s.history(&untyped).await.unwrap(),
        Vec::new(),
        "no type, no compartment: nothing"
    );
}

async fn search_suite<S: Store>(s: S) {
    let date = |lo, hi| SearchRow::Date {
        param: "birthdate".into(),
        lo,
        hi,
    };
    let name = |n: &str| SearchRow::String {
        param: "name".into(),
        norm: n.to_lowercase(),
        exact: n.into(),
    };
    s.apply(indexed(
        "p1",
        vec![
            tok("gender", "", "female"),
            date(100, 200),
            name("Ada"),
            SearchRow::Number {
                param: "n".into(),
                value: 1.5,
                system: String::new(),
                code: String::new(),
            },
        ],
    ))
    .await
    .unwrap();
    s.apply(indexed(
        "p2",
        vec![
            tok("gender", "", "male"),
            date(300, 400),
            name("Bob"),
            SearchRow::Blind {
                param: "identifier".into(),
                tag: vec![1, 2, 3],
            },
        ],
    ))
    .await
    .unwrap();
    s.apply(indexed(
        "p3",
        vec![
            tok("gender", "", "female"),
            name("adalbert"),
            SearchRow::Reference {
                param: "organization".into(),
                target_type: "Organization".into(),
                target_id: "o1".into(),
            },
            SearchRow::Uri {
                param: "u".into(),
                uri: "http://a/b/c".into(),
            },
        ],
    ))
    .await
    .unwrap();
    let q = |conds: Vec<Cond>| SearchQuery {
        tenant: "default".into(),
        rtype: "Patient".into(),
        conds,
        sort: vec![],
        after: None,
        backwards: false,
        limit: 10,
    };
    let ids = |hits: Vec<SearchHit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let female = Cond::Token {
        param: "gender".into(),
        system: None,
        code: Some("female".into()),
    };
    assert_eq!(ids(s.search(&q(vec![female.clone()])).await.unwrap()), ["p1", "p3"]);
    assert_eq!(s.search_count(&q(vec![female.clone()])).await.unwrap(), 2);
    // Hits are read by row id: the same versions as by id, and only of the tenant and type.
    let rids: Vec<i64> = s
        .search(&q(vec![female.clone()]))
        .await
        .unwrap()
        .iter()
        .map(|h| h.rid)
        .collect();
    let mut by_rid = s.current_by_rid("default", "Patient", &rids).await.unwrap();
    let mut by_id = s
        .current_many("default", "Patient", &["p1".to_owned(), "p3".to_owned()])
        .await
        .unwrap();
    by_rid.sort_by(|a, b| a.key.id.cmp(&b.key.id));
    by_id.sort_by(|a, b| a.key.id.cmp(&b.key.id));
    assert_eq!(by_rid, by_id);
    assert_eq!(by_rid.len(), 2);
    assert!(
        s.current_by_rid("default", "Observation", &rids)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.current_by_rid("other", "Patient", &rids).await.unwrap().is_empty());
    assert_eq!(
        ids(s.search(&q(vec![Cond::Not(Box::new(female.clone()))])).await.unwrap()),
        ["p2"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::StringPrefix {
                param: "name".into(),
                prefix: "ada".into()
            }]))
            .await
            .unwrap()),
        ["p1", "p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::StringPrefix {
                param: "name".into(),
                prefix: "a%".into()
            }]))
            .await
            .unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::StringContains {
                param: "name".into(),
                needle: "lber".into()
            }]))
            .await
            .unwrap()),
        ["p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::StringExact {
                param: "name".into(),
                exact: "Ada".into()
            }]))
            .await
            .unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Blind {
                param: "identifier".into(),
                tag: vec![1, 2, 3]
            }]))
            .await
            .unwrap()),
        ["p2"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Reference {
                param: "organization".into(),
                target_type: Some("Organization".into()),
                target_id: "o1".into()
            }]))
            .await
            .unwrap()),
        ["p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Date {
                param: "birthdate".into(),
                prefix: Prefix::Gt,
                lo: 150,
                hi: 250
            }]))
            .await
            .unwrap()),
        ["p2"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Date {
                param: "birthdate".into(),
                prefix: Prefix::Eq,
                lo: 0,
                hi: 250
            }]))
            .await
            .unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Date {
                param: "birthdate".into(),
                prefix: Prefix::Ne,
                lo: 0,
                hi: 250
            }]))
            .await
            .unwrap()),
        ["p2", "p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Number {
                param: "n".into(),
                prefix: Prefix::Eq,
                value: 1.5,
                lo: 1.45,
                hi: 1.55,
                system: None,
                code: None
            }]))
            .await
            .unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Uri {
                param: "u".into(),
                uri: "http://a/".into(),
                how: UriMatch::Below
            }]))
            .await
            .unwrap()),
        ["p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Uri {
                param: "u".into(),
                uri: "http://a/b/c/d".into(),
                how: UriMatch::Above
            }]))
            .await
            .unwrap()),
        ["p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Not(Box::new(Cond::Present {
                table: Table::Date,
                param: "birthdate".into()
            }))]))
            .await
            .unwrap()),
        ["p3"]
    );
    assert_eq!(
        ids(s
            .search(&q(vec![Cond::Any(vec![Cond::Id(vec!["p2".into()]), female.clone()])]))
            .await
            .unwrap()),
        ["p1", "p2", "p3"]
    );
    let refs_in = |ids: &[&str]| Cond::ReferenceIn {
        param: "organization".into(),
        target_type: Some("Organization".into()),
        target_ids: ids.iter().map(|i| i.to_string()).collect(),
    };
    assert_eq!(ids(s.search(&q(vec![refs_in(&["o9", "o1"])])).await.unwrap()), ["p3"]);
    assert!(s.search(&q(vec![refs_in(&[])])).await.unwrap().is_empty());
    // Long lists are bound as one array value: 70,000 ids (past both databases' limits on
    // placeholders) in two conditions, with awkward characters among them, still match.
    let many = |keep: &str| -> Vec<String> {
        let mut v: Vec<String> = (0..35_000).map(|i| format!("x{i}\"q\\\u{1}")).collect();
        v.insert(17_000, keep.to_owned());
        v
    };
    let long = vec![
        Cond::Id(many("p3")),
        Cond::ReferenceIn {
            param: "organization".into(),
            target_type: Some("Organization".into()),
            target_ids: many("o1"),
        },
    ];
    assert_eq!(ids(s.search(&q(long.clone())).await.unwrap()), ["p3"]);
    assert_eq!(s.search_count(&q(long)).await.unwrap(), 1);
    // sorted by birthdate descending (absent last), paged one at a time forwards and back
    let mut sorted = q(vec![]);
    sorted.sort = vec![(
        SortKey::Param {
            table: Table::Date,
            param: "birthdate".into(),
        },
        true,
    )];
    sorted.limit = 1;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .search(&SearchQuery {
                after: after.clone(),
                ..sorted.clone()
            })
            .await
            .unwrap();
        let Some(hit) = page.into_iter().next() else { break };
        after = Some((hit.sort.clone(), hit.rid));
        seen.push(hit.id);
    }
    assert_eq!(seen, ["p2", "p1", "p3"]);
    let back = s
        .search(&SearchQuery {
            after,
            backwards: true,
            limit: 2,
            ..sorted.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(back), ["p2", "p1"]);
    // index rows follow the current version: an update replaces them, a delete removes them
    let mut upd = version("p1", 2, Expect::Version(1), Op::Update, &[]);
    upd.key.rtype = "Patient".into();
    upd.search_rows = vec![tok("gender", "", "other")];
    s.apply(one(upd)).await.unwrap();
    assert_eq!(ids(s.search(&q(vec![female.clone()])).await.unwrap()), ["p3"]);
    let mut del = version("p3", 2, Expect::Version(1), Op::Delete, &[]);
    del.key.rtype = "Patient".into();
    s.apply(one(del)).await.unwrap();
    assert_eq!(s.search_count(&q(vec![female.clone()])).await.unwrap(), 0);

    // Reindexing replaces the rows of a live current version, and leaves alone a resource
    // written (p2 at version 2) or deleted (p3) since the version it was computed for.
    let mut p2 = version("p2", 2, Expect::Version(1), Op::Update, &[]);
    p2.key.rtype = "Patient".into();
    p2.search_rows = vec![tok("gender", "", "male")];
    s.apply(one(p2)).await.unwrap();
    let patient = |id: &str| ResourceKey {
        rtype: "Patient".into(),
        ..key(id)
    };
    let again = |id: &str, version: u64, rows: Vec<SearchRow>| Reindex {
        key: patient(id),
        version,
        identifier_tags: vec![b"tag".to_vec()],
        search_rows: rows,
    };
    let unknown = Cond::Token {
        param: "gender".into(),
        system: None,
        code: Some("unknown".into()),
    };
    s.apply(ChangeSet {
        reindex: vec![
            again("p1", 2, vec![tok("gender", "", "unknown")]),
            again("p2", 1, vec![tok("gender", "", "unknown")]),
            again("p3", 1, vec![tok("gender", "", "unknown")]),
            again("nobody", 1, vec![tok("gender", "", "unknown")]),
        ],
        ..ChangeSet::default()
    })
    .await
    .unwrap();
    assert_eq!(ids(s.search(&q(vec![unknown])).await.unwrap()), ["p1"]);
    let other = Cond::Token {
        param: "gender".into(),
        system: None,
        code: Some("other".into()),
    };
    assert!(
        s.search(&q(vec![other])).await.unwrap().is_empty(),
        "p1's old rows are gone"
    );
    let male = Cond::Token {
        param: "gender".into(),
        system: None,
        code: Some("male".into()),
    };
    assert_eq!(
        ids(s.search(&q(vec![male])).await.unwrap()),
        ["p2"],
        "p2 keeps its own rows"
    );
    assert_eq!(
        s.find_by_identifier("default", "Patient", b"tag").await.unwrap(),
        ["p1"],
        "identifier tags replaced too"
    );
    let current = s.current(&patient("p1")).await.unwrap().unwrap();
    assert_eq!((current.version, current.last_updated), (2, 2000), "no new version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_search() {
    let dir = tempfile::tempdir().unwrap();
    search_suite(sqlite::SqliteStore::open(&dir.path().join("t.db")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_search() {
    let Ok(base) = std::env::var("CAREVAULT_TEST_POSTGRES_URL") else {
        eprintln!("NOT RUN: postgres_search needs CAREVAULT_TEST_POSTGRES_URL (.ci/run sets it)");
        return;
    };
    let url = fresh_pg_schema(&base).await;
    search_suite(postgres::PgStore::connect(&url, 8).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite::SqliteStore::open(&dir.path().join("t.db")).unwrap();
    suite(store.clone()).await;
    claims_suite(store.clone()).await;
    oauth_suite(store.clone()).await;
    audit_suite(store.clone()).await;
    accounts_suite(store).await;
}

/// A fresh schema on the test server, and a URL whose connections use it.
pub(crate) async fn fresh_pg_schema(base: &str) -> String {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("cv_store_{nanos}");
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    let Ok(base) = std::env::var("CAREVAULT_TEST_POSTGRES_URL") else {
        eprintln!("NOT RUN: postgres_conformance needs CAREVAULT_TEST_POSTGRES_URL (.ci/run sets it)");
        return;
    };
    let url = fresh_pg_schema(&base).await;
    let store = postgres::PgStore::connect(&url, 8).await.unwrap();
    suite(store.clone()).await;
    claims_suite(store.clone()).await;
    oauth_suite(store.clone()).await;
    audit_suite(store.clone()).await;
    accounts_suite(store).await;
}

async fn export_suite<S: Store>(s: S) {
    let job = |id: &str, expires: i64| ExportJob {
        tenant: "default".into(),
        id: id.into(),
        state: ExportState::Running,
        created: 10,
        updated: 10,
        expires,
        transaction_time: 10,
        request: "$export?_type=Patient".into(),
        error: None,
        written: 0,
        owner: "user:u1".into(),
        filters: (id == "j1").then(|| SealedText {
            key_id: 7,
            body: vec![1, 2, 3],
        }),
    };
    let file = |n: i64, count: i64| ExportFile {
        n,
        rtype: "Patient".into(),
        count,
        key_id: 1,
        body: vec![n as u8; 8],
    };
    s.insert_export(job("j1", 1_000), None).await.unwrap();
    s.insert_export(job("j2", 5), None).await.unwrap();
    assert!(s.insert_export(job("j1", 1_000), None).await.is_err(), "ids are unique");
    assert!(s.add_export_file("default", "j1", file(0, 3), 20).await.unwrap());
    assert!(s.add_export_file("default", "j1", file(1, 2), 30).await.unwrap());
    let j = s.export("default", "j1").await.unwrap().unwrap();
    assert_eq!((j.state, j.updated, j.written), (ExportState::Running, 30, 5));
    assert_eq!(j.filters, job("j1", 0).filters, "sealed filters come back as stored");
    assert_eq!(s.export("default", "j2").await.unwrap().unwrap().filters, None);
    assert_eq!(s.export("other", "j1").await.unwrap(), None, "tenants are apart");
    let files = s.export_files("default", "j1").await.unwrap();
    assert_eq!(
        files.iter().map(|f| (f.n, f.count)).collect::<Vec<_>>(),
        [(0, 3), (1, 2)]
    );
    assert_eq!(s.export_file("default", "j1", 1).await.unwrap(), Some(file(1, 2)));
    assert_eq!(s.export_file("default", "j1", 7).await.unwrap(), None);
    assert!(
        s.finish_export("default", "j1", ExportState::Done, None, 40)
            .await
            .unwrap()
    );
    assert!(
        !s.finish_export("default", "j1", ExportState::Failed, None, 50)
            .await
            .unwrap(),
        "a finished job stays finished"
    );
    assert!(
        !s.add_export_file("default", "j1", file(2, 1), 60).await.unwrap(),
        "no files after the end"
    );
    // Expiry removes the expired job and its files only.
    assert!(s.add_export_file("default", "j2", file(0, 1), 20).await.unwrap());
    assert_eq!(
        s.expired_exports(100).await.unwrap(),
        vec![("default".to_owned(), "j2".to_owned())]
    );
    assert!(s.delete_export("default", "j2", None).await.unwrap());
    assert_eq!(s.export("default", "j2").await.unwrap(), None);
    assert_eq!(s.export_file("default", "j2", 0).await.unwrap(), None);
    assert!(s.export("default", "j1").await.unwrap().is_some());
    // Cancelling deletes; the worker's next file is refused.
    assert!(s.delete_export("default", "j1", None).await.unwrap());
    assert!(!s.delete_export("default", "j1", None).await.unwrap());
    assert!(s.export_files("default", "j1").await.unwrap().is_empty());
    assert!(!s.add_export_file("default", "j1", file(3, 1), 70).await.unwrap());
    // A kick-off and a cancellation commit with their entries: one each, none for a job
    // refused or already gone.
    let maker = AuditMaker(std::sync::Arc::new(|i: i64| AuditRecord {
        index: i,
        recorded: 1,
        body: b"{}".to_vec(),
        leaf: vec![0; 32],
        mac: vec![0; 32],
        agent: "user:u1".into(),
        patient: None,
        subtype: "operation:export".into(),
        outcome: "0".into(),
        entity: None,
    }));
    let before = s.audit_size().await.unwrap();
    s.insert_export(job("ja", 1_000), Some(maker.clone())).await.unwrap();
    assert!(s.insert_export(job("ja", 1_000), Some(maker.clone())).await.is_err());
    assert!(s.delete_export("default", "ja", Some(maker.clone())).await.unwrap());
    assert!(!s.delete_export("default", "ja", Some(maker)).await.unwrap());
    assert_eq!(s.audit_size().await.unwrap(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_exports() {
    let dir = tempfile::tempdir().unwrap();
    export_suite(sqlite::SqliteStore::open(&dir.path().join("t.db")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exports() {
    let Ok(base) = std::env::var("CAREVAULT_TEST_POSTGRES_URL") else {
        eprintln!("NOT RUN: postgres_exports needs CAREVAULT_TEST_POSTGRES_URL (.ci/run sets it)");
        return;
    };
    let url = fresh_pg_schema(&base).await;
    export_suite(postgres::PgStore::connect(&url, 8).await.unwrap()).await;
}

/// One Observation in patient `pa`'s compartment with a PSY label, written through `s`.
async fn labelled<S: Store>(s: &S) {
    let mut v = version("f1", 1, Expect::Absent, Op::Create, &[]);
    v.search_rows = vec![
        SearchRow::Reference {
            param: COMPARTMENT_PARAM.into(),
            target_type: "Patient".into(),
            target_id: "pa".into(),
        },
        tok(SECURITY_PARAM, "urn:labels", "PSY"),
    ];
    s.apply(one(v)).await.unwrap();
}

fn labelled_facts() -> ResourceFacts {
    ResourceFacts {
        patients: vec!["pa".into()],
        labels: vec![("urn:labels".into(), "PSY".into())],
    }
}

/// Rows written before migration v6 have no `facts` column value: reads take them from the
/// index rows instead, with the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_without_facts_read_them_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = sqlite::SqliteStore::open(&path).unwrap();
    labelled(&store).await;
    assert_eq!(
        store.current_with_facts(&key("f1")).await.unwrap().unwrap().1,
        labelled_facts()
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE resources SET facts = NULL", []).unwrap();
    assert_eq!(
        store.current_with_facts(&key("f1")).await.unwrap().unwrap().1,
        labelled_facts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_without_facts_read_them_from_the_index() {
    let Ok(base) = std::env::var("CAREVAULT_TEST_POSTGRES_URL") else {
        eprintln!("NOT RUN: postgres_rows_without_facts_read_them_from_the_index needs CAREVAULT_TEST_POSTGRES_URL");
        return;
    };
    let url = fresh_pg_schema(&base).await;
    let store = postgres::PgStore::connect(&url, 4).await.unwrap();
    labelled(&store).await;
    assert_eq!(
        store.current_with_facts(&key("f1")).await.unwrap().unwrap().1,
        labelled_facts()
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute("UPDATE resources SET facts = NULL", &[]).await.unwrap();
    assert_eq!(
        store.current_with_facts(&key("f1")).await.unwrap().unwrap().1,
        labelled_facts()
    );
}

/// Clients, sign-in sessions (code, refresh rotation, compare-and-swap, revocation and the
/// epoch) and account security rows.
async fn oauth_suite<S: Store>(s: S) {
    let client = StoredClient {
        id: "c1".into(),
        tenant: "default".into(),
        doc: r#"{"name":"app"}"#.into(),
        created: 1,
        disabled: false,
    };
    s.insert_client(client.clone(), None).await.unwrap();
    assert!(matches!(
        s.insert_client(client.clone(), None).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.client_by_id("default", "c1").await.unwrap(), Some(client.clone()));
    assert_eq!(s.client_by_id("other", "c1").await.unwrap(), None);
    assert_eq!(s.clients("default").await.unwrap(), vec![client]);

    let session = StoredSession {
        id: "s1".into(),
        tenant: "default".into(),
        user_id: Some("u7".into()),
        client_id: "c1".into(),
        code_hash: Some(b"code".to_vec()),
        refresh_hash: None,
        prev_refresh_hash: None,
        doc: "{}".into(),
        created: 10,
        last_active: 10,
        expires: 1000,
        generation: 0,
        revoked: false,
    };
    s.insert_session(session.clone(), None).await.unwrap();
    assert!(
        matches!(s.insert_session(session.clone(), None).await, Err(StoreError::Conflict)),
        "an id is used once"
    );
    let (got, m) = s.session_by_hash("default", b"code").await.unwrap().unwrap();
    assert_eq!((got, m), (session.clone(), SessionMatch::Code));
    assert!(s.session_by_hash("other", b"code").await.unwrap().is_none());

    // The code exchanged for a refresh token, then the refresh token rotated.
    let mut next = session.clone();
    next.code_hash = None;
    next.refresh_hash = Some(b"r1".to_vec());
    next.generation = 1;
    assert!(s.update_session(next.clone(), None).await.unwrap());
    assert!(
        !s.update_session(next.clone(), None).await.unwrap(),
        "a stale generation loses"
    );
    next.prev_refresh_hash = next.refresh_hash.take();
    next.refresh_hash = Some(b"r2".to_vec());
    next.generation = 2;
    next.last_active = 20;
    assert!(s.update_session(next.clone(), None).await.unwrap());
    assert!(s.session_by_hash("default", b"code").await.unwrap().is_none());
    assert_eq!(
        s.session_by_hash("default", b"r1").await.unwrap().unwrap().1,
        SessionMatch::PreviousRefresh
    );
    assert_eq!(
        s.session_by_hash("default", b"r2").await.unwrap().unwrap().1,
        SessionMatch::Refresh
    );
    assert_eq!(s.session_by_id("default", "s1").await.unwrap(), Some(next.clone()));

    let e0 = s.access_epoch("default").await.unwrap();
    assert_eq!(s.revoke_sessions("default", Revoke::User("u7"), None).await.unwrap(), 1);
    let e1 = s.access_epoch("default").await.unwrap();
    assert!(e1.sessions > e0.sessions, "a revocation changes the epoch");
    assert!(s.session_by_id("default", "s1").await.unwrap().unwrap().revoked);
    assert_eq!(
        s.revoke_sessions("default", Revoke::Session("s1"), None).await.unwrap(),
        0
    );
    next.generation = 3;
    assert!(
        !s.update_session(next, None).await.unwrap(),
        "a revoked session stays revoked"
    );

    // Ended sessions go, but the newest revocation stays so the epoch never steps back.
    let mut old = session.clone();
    old.id = "s2".into();
    old.code_hash = Some(b"code2".to_vec());
    old.expires = 50;
    s.insert_session(old, None).await.unwrap();
    assert_eq!(s.delete_ended_sessions("default", 2000, None).await.unwrap(), 1);
    assert!(s.session_by_id("default", "s1").await.unwrap().is_some());
    assert_eq!(s.access_epoch("default").await.unwrap().sessions, e1.sessions);

    assert_eq!(s.security("default", "u7").await.unwrap(), None);
    let mut sec = StoredSecurity {
        user_id: "u7".into(),
        tenant: "default".into(),
        totp_sealed: Some(b"sealed".to_vec()),
        totp_key_id: 1,
        totp_last_step: 0,
        failed: 0,
        locked_until: 0,
    };
    s.put_security(sec.clone(), None).await.unwrap();
    sec.failed = 3;
    sec.locked_until = 99;
    s.put_security(sec.clone(), None).await.unwrap();
    assert_eq!(s.security("default", "u7").await.unwrap(), Some(sec));
}

/// The audit log: appends continue the log exactly or fail whole; ranges, searches, heads.
async fn audit_suite<S: Store>(s: S) {
    let rec = |i: i64, patient: Option<&str>| AuditRecord {
        index: i,
        recorded: 100 + i,
        body: format!("{{\"index\":{i}}}").into_bytes(),
        leaf: vec![i as u8; 32],
        mac: vec![1; 32],
        agent: if i % 2 == 0 { "user:a".into() } else { "user:b".into() },
        patient: patient.map(str::to_owned),
        subtype: "read".into(),
        outcome: "0".into(),
        entity: Some(format!("Patient/p{i}")),
    };
    let maker = |patient: Option<&'static str>| AuditMaker(std::sync::Arc::new(move |i: i64| rec(i, patient)));
    assert_eq!(s.audit_size().await.unwrap(), 0);
    assert_eq!(s.append_audit(vec![maker(Some("p1")), maker(None)]).await.unwrap(), 0);
    // Numbered by the store, continuing the log; inside a write's change set too.
    assert_eq!(s.append_audit(vec![maker(Some("p1"))]).await.unwrap(), 2);
    let mut with_write = one(version("audited", 1, Expect::Absent, Op::Create, &[]));
    with_write.audit = Some(maker(Some("p2")));
    s.apply(with_write).await.unwrap();
    // A change set that fails writes neither its versions nor its entry.
    let mut failing = one(version("audited", 1, Expect::Absent, Op::Create, &[]));
    failing.audit = Some(maker(None));
    assert!(matches!(s.apply(failing).await, Err(StoreError::Conflict)));
    assert_eq!(s.audit_size().await.unwrap(), 4);
    let all = s.audit_range(0, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(all[2], rec(2, Some("p1")));
    assert_eq!(s.audit_range(3, 10).await.unwrap().len(), 1);
    // The leaves alone, for the tree.
    assert_eq!(
        s.audit_leaves(1, 2).await.unwrap(),
        vec![(1, all[1].leaf.clone()), (2, all[2].leaf.clone())]
    );
    let mine = s
        .audit_search(&AuditFilter {
            patient: Some("p1".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![2, 0],
        "newest first"
    );
    let b_since = s
        .audit_search(&AuditFilter {
            agent: Some("user:b".into()),
            since: Some(102),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(b_since.iter().map(|r| r.index).collect::<Vec<_>>(), vec![3]);
    let paged = s
        .audit_search(&AuditFilter {
            before: Some(2),
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(paged.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1]);
    let head = StoredHead {
        size: 4,
        root: vec![9; 32],
        at: 5,
        signature: vec![7; 64],
    };
    assert!(s.insert_head(head.clone(), None).await.unwrap());
    assert!(!s.insert_head(StoredHead { at: 6, ..head.clone() }, None).await.unwrap());
    assert!(
        s.insert_head(
            StoredHead {
                size: 2,
                ..head.clone()
            },
            None
        )
        .await
        .unwrap()
    );
    let heads = s.heads().await.unwrap();
    assert_eq!(heads.iter().map(|h| h.size).collect::<Vec<_>>(), vec![2, 4]);
    assert_eq!(heads[1], head, "a head for a size is written once");
    assert_eq!(s.latest_head().await.unwrap(), Some(head.clone()));
    // Block roots: kept in order, a block's root replaced by a later one.
    assert!(s.audit_blocks(0, 10).await.unwrap().is_empty());
    s.insert_audit_blocks(vec![(0, vec![1; 32]), (1, vec![2; 32])])
        .await
        .unwrap();
    s.insert_audit_blocks(vec![(1, vec![9; 32]), (2, vec![3; 32])])
        .await
        .unwrap();
    assert_eq!(
        s.audit_blocks(1, 10).await.unwrap(),
        vec![(1, vec![9; 32]), (2, vec![3; 32])]
    );
    assert_eq!(s.audit_blocks(0, 1).await.unwrap(), vec![(0, vec![1; 32])]);

    // Retention empties a range (index, time, leaf hash and MAC stay) and appends its own
    // entry in the same transaction; the emptied entries leave the auditor's searches.
    assert_eq!(s.prune_audit(0, 2, maker(None)).await.unwrap(), 4);
    let all = s.audit_range(0, 10).await.unwrap();
    assert_eq!(all.len(), 5);
    for r in &all[..2] {
        let kept = rec(r.index, None);
        assert!(r.body.is_empty() && r.agent.is_empty() && r.patient.is_none() && r.entity.is_none());
        assert_eq!((r.recorded, &r.leaf, &r.mac), (kept.recorded, &kept.leaf, &kept.mac));
    }
    assert_eq!(all[2], rec(2, Some("p1")), "entries past the range are untouched");
    let mine = s
        .audit_search(&AuditFilter {
            patient: Some("p1".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|r| r.index).collect::<Vec<_>>(), vec![2]);
    // A copy from a journal appends and moves the journal's mark in one transaction.
    assert_eq!(s.journal_mark().await.unwrap(), None);
    let mark = JournalMark {
        generation: 3,
        offset: 4096,
        next_seq: 17,
    };
    assert_eq!(
        s.ingest_audit(vec![maker(None), maker(Some("p3"))], mark)
            .await
            .unwrap(),
        5
    );
    assert_eq!(s.journal_mark().await.unwrap(), Some(mark));
    let moved = JournalMark {
        generation: 4,
        offset: 0,
        next_seq: 19,
    };
    assert_eq!(s.ingest_audit(vec![maker(None)], moved).await.unwrap(), 7);
    assert_eq!(s.journal_mark().await.unwrap(), Some(moved));
    assert_eq!(s.audit_range(6, 1).await.unwrap()[0], rec(6, Some("p3")));
    // Account changes with their entries: both or neither (a tenant of their own, so the
    // accounts suite on the same store starts empty).
    let before = s.audit_size().await.unwrap();
    let audited = |id: &str| StoredUser {
        tenant: "audited".into(),
        ..user(id, b"tag-audited")
    };
    s.insert_user(audited("ua"), Some(maker(None))).await.unwrap();
    assert!(matches!(
        s.insert_user(audited("ub"), Some(maker(None))).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        s.set_user_disabled("audited", "ua", true, Some(maker(None)))
            .await
            .unwrap()
    );
    assert!(
        !s.set_user_disabled("audited", "nobody", true, Some(maker(None)))
            .await
            .unwrap()
    );
    assert_eq!(
        s.audit_size().await.unwrap(),
        before + 2,
        "one entry per account change that happened"
    );
    assert!(s.user_by_id("audited", "ub").await.unwrap().is_none());

    // Sign-in state, clients, tokens and reviews with their entries: one entry per change
    // that happened, none for a change refused or that found nothing to change.
    let before = s.audit_size().await.unwrap();
    let client = StoredClient {
        id: "audited-client".into(),
        tenant: "audited".into(),
        doc: "{}".into(),
        created: 1,
        disabled: false,
    };
    s.insert_client(client.clone(), Some(maker(None))).await.unwrap();
    assert!(s.insert_client(client, Some(maker(None))).await.is_err());
    let session = StoredSession {
        id: "audited-session".into(),
        tenant: "audited".into(),
        user_id: Some("ua".into()),
        client_id: "audited-client".into(),
        code_hash: Some(b"audited-code".to_vec()),
        refresh_hash: None,
        prev_refresh_hash: None,
        doc: "{}".into(),
        created: 1,
        last_active: 1,
        expires: 1000,
        generation: 0,
        revoked: false,
    };
    s.insert_session(session.clone(), Some(maker(None))).await.unwrap();
    assert!(s.insert_session(session.clone(), Some(maker(None))).await.is_err());
    let next = StoredSession {
        generation: 1,
        code_hash: None,
        ..session.clone()
    };
    assert!(s.update_session(next.clone(), Some(maker(None))).await.unwrap());
    assert!(!s.update_session(next, Some(maker(None))).await.unwrap());
    let sec = StoredSecurity {
        user_id: "ua".into(),
        tenant: "audited".into(),
        failed: 1,
        ..StoredSecurity::default()
    };
    s.put_security(sec, Some(maker(None))).await.unwrap();
    assert_eq!(
        s.revoke_sessions("audited", Revoke::User("ua"), Some(maker(None)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.revoke_sessions("audited", Revoke::User("ua"), Some(maker(None)))
            .await
            .unwrap(),
        0
    );
    // A purge of ended sessions with its entry when it deletes some, and only then (the
    // revoked session above is the newest revocation, which stays).
    let ended = StoredSession {
        id: "audited-ended".into(),
        code_hash: Some(b"audited-ended-code".to_vec()),
        expires: 5,
        ..session.clone()
    };
    s.insert_session(ended, None).await.unwrap();
    assert_eq!(
        s.delete_ended_sessions("audited", 2000, Some(maker(None)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.delete_ended_sessions("audited", 2000, Some(maker(None)))
            .await
            .unwrap(),
        0
    );
    s.replace_tokens(b"audited-token", "rotated", 1, Some(maker(None)))
        .await
        .unwrap();
    assert!(
        s.replace_tokens(b"audited-token", "rotated", 2, Some(maker(None)))
            .await
            .is_err()
    );
    s.insert_emergency(
        StoredEmergency {
            id: "audited-grant".into(),
            tenant: "audited".into(),
            user_id: "ua".into(),
            patient: "pa".into(),
            started: 1,
            expires: 2,
            reason_sealed: b"sealed".to_vec(),
            reason_key_id: 1,
            reviewed_at: None,
            reviewer: None,
            verdict: None,
        },
        None,
    )
    .await
    .unwrap();
    for (id, reviewed) in [
        ("audited-grant", true),
        ("audited-grant", false),
        ("no-such-grant", false),
    ] {
        assert_eq!(
            s.review_emergency("audited", id, "u9", "appropriate", 3, Some(maker(None)))
                .await
                .unwrap(),
            reviewed
        );
    }
    assert_eq!(
        s.audit_size().await.unwrap(),
        before + 8,
        "client, session, session update, security row, revocation, purge, token, review: one entry each"
    );
    // A signed head with the entry recording it; none for a head already there.
    let before = s.audit_size().await.unwrap();
    let head = StoredHead {
        size: before,
        root: vec![3; 32],
        at: 9,
        signature: vec![4; 64],
    };
    assert!(s.insert_head(head.clone(), Some(maker(None))).await.unwrap());
    assert!(!s.insert_head(head, Some(maker(None))).await.unwrap());
    assert_eq!(s.audit_size().await.unwrap(), before + 1);
}
