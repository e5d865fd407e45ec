//! Retention with an injected clock: entries past the period are emptied, their leaf hashes
//! kept, the emptying recorded; the log and its earlier signed heads still verify, and an
//! entry emptied any other way is caught. Runs on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{AuditAgent, AuditDraft, Outcome, WitnessHead, verify_log};
use crate::Vault;
use carevault_domain::{FixedClock, Timestamp};
use carevault_storage::{AnyStore, AuditStore};

const DAY: i64 = 86_400_000;

async fn vault(path: &std::path::Path, clock: FixedClock) -> Vault<AnyStore> {
    crate::test_vault::sqlite_vault(path, clock).await
}

fn draft(v: &Vault<AnyStore>, n: usize) -> AuditDraft {
    AuditDraft {
        recorded: v.clock().now().millis(),
        subtype: "read".into(),
        action: 'R',
        outcome: Outcome::Success,
        agent: AuditAgent {
            who: "user:u1".into(),
            ..AuditAgent::default()
        },
        entity: Some(format!("Patient/p{n}")),
        patient: Some(format!("p{n}")),
        query_tag: None,
        purpose: Some("TREAT".into()),
        detail: Vec::new(),
    }
}

fn exec(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_past_retention_are_emptied_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let clock = FixedClock::new(Timestamp::parse("2020-01-01T00:00:00Z").unwrap());
    let v = vault(&db, clock.clone()).await;
    for n in 0..30 {
        v.audit(draft(&v, n)).await.unwrap();
    }
    clock.advance_millis(100 * DAY);
    for n in 30..40 {
        v.audit(draft(&v, n)).await.unwrap();
    }
    let head = v.sign_head().await.unwrap();
    assert_eq!(head.size, 40);
    let witness = [WitnessHead {
        size: head.size,
        root: head.root,
        at: head.at,
        signature: head.signature.clone(),
    }];

    // Kept for 50 days: the first 30 entries are past it, the last 10 are not.
    clock.advance_millis(DAY);
    assert_eq!(v.prune_audit(50 * DAY).await.unwrap(), 30);
    assert_eq!(v.audit_pruned().await.unwrap(), 30);
    let store = v.unchecked_store();
    let all = store.audit_range(0, 100).await.unwrap();
    assert_eq!(all.len(), 41, "one entry records the emptying");
    assert!(
        all[..30]
            .iter()
            .all(|r| r.body.is_empty() && r.patient.is_none() && r.agent.is_empty())
    );
    assert!(all[30..].iter().all(|r| !r.body.is_empty()));
    let note: serde_json::Value = serde_json::from_slice(&all[40].body).unwrap();
    assert_eq!(note["subtype"][0]["code"], "audit-retention");
    assert_eq!(note["action"], "D");
    let text = note.to_string();
    assert!(
        text.contains("pruned-from") && text.contains("\"0\"") && text.contains("\"30\""),
        "{text}"
    );

    // The signed head of 40 entries still matches the tree: leaf hashes were kept.
    let report = verify_log(store, v.keys(), &witness).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.entries, report.pruned, report.witness_checked), (41, 30, 1));

    // Nothing more is due: no second entry.
    assert_eq!(v.prune_audit(50 * DAY).await.unwrap(), 0);
    assert_eq!(store.audit_size().await.unwrap(), 41);
    // The auditor's and the patient's readers skip emptied entries.
    let shown = store
        .audit_search(&carevault_storage::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(shown.iter().filter(|r| !r.body.is_empty()).count(), 11);

    // Emptying an entry beside the pruned prefix, leaf hash kept, is caught: no retention
    // entry covers it.
    exec(&db, "UPDATE audit_log SET body = x'' WHERE idx = 30");
    let report = verify_log(store, v.keys(), &witness).await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.first_bad, Some(30), "{:?}", report.problems);
    // …and so is emptying one after kept entries.
    exec(&db, "UPDATE audit_log SET body = x'' WHERE idx = 35");
    let report = verify_log(store, v.keys(), &witness).await.unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("entry 35 was emptied after")),
        "{:?}",
        report.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_entry_cannot_be_forged_to_cover_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let clock = FixedClock::new(Timestamp::parse("2020-01-01T00:00:00Z").unwrap());
    let v = vault(&db, clock.clone()).await;
    for n in 0..5 {
        v.audit(draft(&v, n)).await.unwrap();
    }
    // Someone empties the first two entries and plants a retention-shaped entry without the
    // key: its MAC fails and covers nothing.
    exec(&db, "UPDATE audit_log SET body = x'' WHERE idx < 2");
    let fake = br#"{"id":"5","subtype":[{"code":"audit-retention"}],"entity":[{"detail":[{"type":"pruned-from","valueString":"0"},{"type":"pruned-until","valueString":"2"}]}]}"#;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO audit_log (idx, recorded, body, leaf, mac, agent, subtype, outcome) VALUES (5, 0, ?1, ?2, x'00', 'system', 'audit-retention', '0')",
        rusqlite::params![fake.to_vec(), carevault_crypto::merkle::leaf_hash(fake).to_vec()],
    )
    .unwrap();
    let report = verify_log(v.unchecked_store(), v.keys(), &[]).await.unwrap();
    assert_eq!(report.first_bad, Some(0), "{:?}", report.problems);
    assert!(
        report.problems.iter().any(|p| p.contains("without a retention entry")),
        "{:?}",
        report.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_again_over_its_own_earlier_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let clock = FixedClock::new(Timestamp::parse("2020-01-01T00:00:00Z").unwrap());
    let v = vault(&db, clock.clone()).await;
    for n in 0..10 {
        v.audit(draft(&v, n)).await.unwrap();
    }
    clock.advance_millis(100 * DAY);
    assert_eq!(v.prune_audit(50 * DAY).await.unwrap(), 10);
    // The first retention entry (index 10) and five more entries age past the period too.
    for n in 11..16 {
        v.audit(draft(&v, n)).await.unwrap();
    }
    clock.advance_millis(100 * DAY);
    v.audit(draft(&v, 16)).await.unwrap();
    assert_eq!(v.prune_audit(50 * DAY).await.unwrap(), 6);
    let store = v.unchecked_store();
    assert_eq!(v.audit_pruned().await.unwrap(), 16);
    let report = verify_log(store, v.keys(), &[]).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.entries, report.pruned), (18, 16));
}
