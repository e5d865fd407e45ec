//! The journal across a crash: entries made durable in it but not yet copied into the log
//! are copied when the next server opens it, each once; an edited record stops the copy
//! there; the file wraps, with and without a backlog. Runs on a real SQLite file; a vault
//! dropped without copying what it holds, and a second one opening the same files, stand
//! for a crash and a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{AuditAgent, AuditDraft, Outcome, verify_log};
use crate::Vault;
use carevault_crypto::{KeyFile, SystemRandomSource};
use carevault_domain::{FixedClock, TenantId, Timestamp};
use carevault_storage::sqlite::SqliteStore;
use carevault_storage::{AnyStore, AuditStore};
use std::sync::Arc;
use std::time::Duration;

/// The copier never runs on its own in these tests but for the first entry after a quiet
/// spell.
const HOUR: Duration = Duration::from_secs(3600);

/// A directory for the database and the journal, and a key file.
fn setup() -> (tempfile::TempDir, Arc<KeyFile>) {
    let keys = KeyFile::parse(&KeyFile::generate(&SystemRandomSource::new()).unwrap()).unwrap();
    (tempfile::tempdir().unwrap(), Arc::new(keys))
}

fn vault(db: &std::path::Path, keys: &Arc<KeyFile>) -> Vault<AnyStore> {
    Vault::new(
        AnyStore::Sqlite(SqliteStore::open(db).unwrap()),
        Arc::clone(keys),
        Arc::new(SystemRandomSource::new()),
        Arc::new(FixedClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap())),
        TenantId::default_tenant(),
    )
    .unwrap()
}

fn draft(n: usize) -> AuditDraft {
    AuditDraft {
        recorded: 1_767_225_600_000,
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

/// Waits until the log holds `n` entries (the copier's first, prompt copy).
async fn log_reaches(v: &Vault<AnyStore>, n: i64) {
    for _ in 0..500 {
        if v.unchecked_store().audit_size().await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the log never reached {n} entries");
}

/// The patients of the log's entries, in log order.
async fn patients(v: &Vault<AnyStore>) -> Vec<String> {
    let rows = v.unchecked_store().audit_range(0, 1000).await.unwrap();
    rows.into_iter().map(|r| r.patient.unwrap_or_default()).collect()
}

/// Appends entries `from..to`: the first is copied at once, the rest wait in the journal.
async fn append(v: &Vault<AnyStore>, from: usize, to: usize, logged: i64) {
    v.audit(draft(from)).await.unwrap();
    log_reaches(v, logged + 1).await;
    for n in from + 1..to {
        v.audit(draft(n)).await.unwrap();
    }
    assert_eq!(v.unchecked_store().audit_size().await.unwrap(), logged + 1);
}

/// After a "crash" past a wrap: a new vault copies `replayed` entries from the journal, the
/// log then holds p0..p(n-1) in order, the mark is in the generation after `mark`'s, and the
/// log verifies.
async fn reopened_holds_every_entry(
    db: &std::path::Path,
    keys: &Arc<KeyFile>,
    journal: &std::path::Path,
    replayed: usize,
    n: usize,
    mark: carevault_storage::JournalMark,
) {
    let b = vault(db, keys);
    assert_eq!(b.open_audit_journal(journal, HOUR).await.unwrap(), replayed);
    let want: Vec<String> = (0..n).map(|k| format!("p{k}")).collect();
    assert_eq!(patients(&b).await, want);
    let moved = b.unchecked_store().journal_mark().await.unwrap().unwrap();
    assert_eq!(moved.generation, mark.generation + 1);
    let report = verify_log(b.unchecked_store(), keys, &[]).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_in_the_journal_are_copied_once_at_the_next_start_and_an_edit_stops_the_copy() {
    let (dir, keys) = setup();
    let (db, journal) = (dir.path().join("t.db"), dir.path().join("audit-journal"));

    let a = vault(&db, &keys);
    assert_eq!(a.open_audit_journal(&journal, HOUR).await.unwrap(), 0);
    append(&a, 0, 10, 0).await;

    // "After a crash": the nine entries still in the journal are copied, in order, once.
    drop(a);
    let b = vault(&db, &keys);
    assert_eq!(b.open_audit_journal(&journal, HOUR).await.unwrap(), 9);
    let want: Vec<String> = (0..10).map(|n| format!("p{n}")).collect();
    assert_eq!(patients(&b).await, want);

    // The next start finds nothing more to copy: the mark moved with the copy.
    append(&b, 10, 15, 10).await;
    drop(b);
    let c = vault(&db, &keys);
    assert_eq!(c.open_audit_journal(&journal, HOUR).await.unwrap(), 4);
    assert_eq!(patients(&c).await.len(), 15);

    // An edited record: the records before it are copied, it and those after are not.
    append(&c, 15, 20, 15).await;
    let mark = c.unchecked_store().journal_mark().await.unwrap().unwrap();
    let mut bytes = std::fs::read(&journal).unwrap();
    let mut at = mark.offset as usize;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 16 + len + 32;
    }
    bytes[at + 16 + 200] ^= 1; // inside the rendered entry: only the MAC can tell
    drop(c);
    std::fs::write(&journal, &bytes).unwrap();
    let offline = AnyStore::Sqlite(SqliteStore::open(&db).unwrap());
    let backlog = super::journal_backlog(&offline, &keys, &journal).await.unwrap();
    let damage = super::JournalDamage {
        offset: at as u64,
        kind: super::DamageKind::Edited,
    };
    assert_eq!((backlog.entries, backlog.damage), (2, Some(damage)));
    let d = vault(&db, &keys);
    assert_eq!(d.open_audit_journal(&journal, HOUR).await.unwrap(), 2);
    let got = patients(&d).await;
    assert_eq!(got.len(), 19);
    assert_eq!(got[16..18], ["p16", "p17"]);
    // …and the log says so itself, in an entry of its own.
    let last = d.unchecked_store().audit_range(18, 1).await.unwrap().remove(0);
    assert_eq!(last.subtype, "audit-journal-damaged");
    let body = String::from_utf8(last.body).unwrap();
    assert!(body.contains("edited"), "{body}");

    // The log as copied verifies, and a head can be signed over it.
    let report = verify_log(d.unchecked_store(), &keys, &[]).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 19);
    assert_eq!(d.sign_head().await.unwrap().size, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_starts_again_once_everything_is_copied_and_is_read_back_after_wrapping() {
    let (dir, keys) = setup();
    let (db, journal) = (dir.path().join("t.db"), dir.path().join("audit-journal"));
    let a = vault(&db, &keys);
    a.open_audit_journal(&journal, HOUR).await.unwrap();
    // Everything copied as it goes, until the file has passed the wrapping point (4 KiB in
    // the tests)…
    let mut n = 0;
    while std::fs::metadata(&journal).unwrap().len() < 4096 {
        a.audit(draft(n)).await.unwrap();
        a.flush_audit_journal().await.unwrap();
        n += 1;
    }
    let len = std::fs::metadata(&journal).unwrap().len();
    let mark = a.unchecked_store().journal_mark().await.unwrap().unwrap();
    // …so the next records go to the file's start under the next generation, and stay
    // there uncopied.
    for k in n..n + 3 {
        a.audit(draft(k)).await.unwrap();
    }
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), len, "the file did not grow");
    assert_eq!(a.unchecked_store().journal_mark().await.unwrap(), Some(mark));

    drop(a);
    reopened_holds_every_entry(&db, &keys, &journal, 3, n + 3, mark).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_wraps_without_waiting_for_the_copier_and_both_generations_are_read_back() {
    let (dir, keys) = setup();
    let (db, journal) = (dir.path().join("t.db"), dir.path().join("audit-journal"));
    let a = vault(&db, &keys);
    a.open_audit_journal(&journal, HOUR).await.unwrap();
    let len = || std::fs::metadata(&journal).unwrap().len();
    // Copied as they go to half the wrapping point, then left in the journal past it…
    let mut n = 0;
    while len() < 2048 {
        a.audit(draft(n)).await.unwrap();
        a.flush_audit_journal().await.unwrap();
        n += 1;
    }
    let copied = n;
    while len() < 4096 {
        a.audit(draft(n)).await.unwrap();
        n += 1;
    }
    let mark = a.unchecked_store().journal_mark().await.unwrap().unwrap();
    // …and the next entry starts the next generation at the file's start, over records
    // already copied, without waiting for the rest to be copied.
    let full = len();
    a.audit(draft(n)).await.unwrap();
    n += 1;
    assert_eq!(len(), full, "the file did not grow");
    assert_eq!(a.unchecked_store().journal_mark().await.unwrap(), Some(mark));
    // The new generation may not reach the records not yet copied: with the copier asleep,
    // an entry that would overwrite them fails instead (no entry, no response).
    let mut refused = false;
    for _ in 0..8 {
        if a.audit(draft(n)).await.is_err() {
            refused = true;
            break;
        }
        n += 1;
    }
    assert!(refused, "the writer went over records not yet copied");

    drop(a);
    reopened_holds_every_entry(&db, &keys, &journal, n - copied, n, mark).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_in_use_by_another_server_is_refused() {
    let (dir, keys) = setup();
    let (db, journal) = (dir.path().join("t.db"), dir.path().join("audit-journal"));
    let a = vault(&db, &keys);
    a.open_audit_journal(&journal, HOUR).await.unwrap();
    let b = vault(&db, &keys);
    let refused = b.open_audit_journal(&journal, HOUR).await.unwrap_err();
    assert!(refused.to_string().contains("storage"), "{refused}");
    a.audit(draft(0)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_in_the_journal_copies_nothing_and_a_cut_journal_is_recorded_once() {
    let (dir, keys) = setup();
    let (db, journal) = (dir.path().join("t.db"), dir.path().join("audit-journal"));
    // Noise where the journal should be: nothing in it is a record.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&journal, &noise).unwrap();
    let a = vault(&db, &keys);
    assert_eq!(a.open_audit_journal(&journal, HOUR).await.unwrap(), 0);
    append(&a, 0, 3, 0).await;
    drop(a);

    // Cut below what the log has copied from it: the two entries waiting are lost, and the
    // verifier and then the log say so.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(100)
        .unwrap();
    let offline = AnyStore::Sqlite(SqliteStore::open(&db).unwrap());
    let backlog = super::journal_backlog(&offline, &keys, &journal).await.unwrap();
    assert_eq!(backlog.damage.map(|d| d.kind), Some(super::DamageKind::Truncated));
    let b = vault(&db, &keys);
    assert_eq!(b.open_audit_journal(&journal, HOUR).await.unwrap(), 0);
    let rows = b.unchecked_store().audit_range(0, 10).await.unwrap();
    let subtypes: Vec<&str> = rows.iter().map(|r| r.subtype.as_str()).collect();
    assert_eq!(subtypes, ["read", "audit-journal-damaged"]);
    drop(b);
    // Once: the mark moved past it.
    assert_eq!(
        super::journal_backlog(&offline, &keys, &journal).await.unwrap().damage,
        None
    );
    let c = vault(&db, &keys);
    assert_eq!(c.open_audit_journal(&journal, HOUR).await.unwrap(), 0);
    assert_eq!(c.unchecked_store().audit_size().await.unwrap(), 2);
}
