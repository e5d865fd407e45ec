//! Proofs served from the in-memory subtree cache and a few blocks of leaves equal the proofs
//! computed from every leaf, on a log of several blocks. Runs on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{AuditAgent, AuditDraft, Outcome, mac_key, maker};
use carevault_crypto::merkle::{self, Hash};
use carevault_domain::{FixedClock, Timestamp};
use carevault_storage::AuditStore;

/// The makers of `n` read entries, one agent each.
fn reads(key: &carevault_crypto::IndexKey, n: i64) -> Vec<carevault_storage::AuditMaker> {
    (0..n)
        .map(|n| {
            maker(
                key.clone(),
                AuditDraft {
                    recorded: n,
                    subtype: "read".into(),
                    action: 'R',
                    outcome: Outcome::Success,
                    agent: AuditAgent {
                        who: format!("user:u{n}"),
                        ..AuditAgent::default()
                    },
                    entity: None,
                    patient: None,
                    query_tag: None,
                    purpose: None,
                    detail: Vec::new(),
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_over_several_blocks_equal_proofs_from_every_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let v = crate::test_vault::sqlite_vault(&dir.path().join("t.db"), clock).await;
    let key = mac_key(v.keys());
    let makers = reads(&key, 2_600);
    let store = v.unchecked_store();
    assert_eq!(store.append_audit(makers).await.unwrap(), 0);
    let leaves: Vec<Hash> = store
        .audit_range(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.leaf.as_slice().try_into().unwrap())
        .collect();
    assert_eq!(leaves.len(), 2_600);
    for size in [1u64, 1_023, 1_024, 1_025, 2_048, 2_049, 2_600] {
        for index in [0, size / 2, size - 1] {
            let (leaf, proof) = v.inclusion_proof(index, size).await.unwrap();
            assert_eq!(leaf, leaves[index as usize]);
            assert_eq!(
                Some(proof),
                merkle::inclusion_proof(index as usize, &leaves[..size as usize]),
                "{index} of {size}"
            );
            let first = index + 1;
            assert_eq!(
                Some(v.consistency_proof(first, size).await.unwrap()),
                merkle::consistency_proof(first as usize, &leaves[..size as usize]),
                "{first} to {size}"
            );
        }
    }
    assert!(v.inclusion_proof(0, 2_601).await.is_err(), "beyond the log");
}

/// A vault over `db` with `keys` (several vaults over one file stand for restarts).
fn vault_with(
    db: &std::path::Path,
    keys: &std::sync::Arc<carevault_crypto::KeyFile>,
) -> crate::Vault<carevault_storage::AnyStore> {
    crate::Vault::new(
        carevault_storage::AnyStore::Sqlite(carevault_storage::sqlite::SqliteStore::open(db).unwrap()),
        std::sync::Arc::clone(keys),
        std::sync::Arc::new(carevault_crypto::SystemRandomSource::new()),
        std::sync::Arc::new(FixedClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap())),
        carevault_domain::TenantId::default_tenant(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_the_tree_from_stored_block_roots_only_when_they_give_the_newest_head() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let rng = carevault_crypto::SystemRandomSource::new();
    let keys = std::sync::Arc::new(
        carevault_crypto::KeyFile::parse(&carevault_crypto::KeyFile::generate(&rng).unwrap()).unwrap(),
    );
    let first = vault_with(&db, &keys);
    let key = mac_key(first.keys());
    let makers = reads(&key, 2_600);
    first.unchecked_store().append_audit(makers).await.unwrap();
    let head = first.sign_head().await.unwrap();
    assert_eq!(head.size, 2_600);
    let blocks = first.unchecked_store().audit_blocks(0, 10).await.unwrap();
    assert_eq!(
        blocks.iter().map(|b| b.0).collect::<Vec<_>>(),
        [0, 1],
        "the two full blocks are kept"
    );
    let exec = |sql: &str| rusqlite::Connection::open(&db).unwrap().execute_batch(sql).unwrap();

    // A leaf inside the first block changed behind the server's back: a restarted server
    // that takes its tree from the block roots never reads it (the offline verifier does).
    exec("UPDATE audit_log SET leaf = zeroblob(32) WHERE idx = 5");
    let second = vault_with(&db, &keys);
    assert_eq!(
        second.sign_head().await.unwrap().root,
        head.root,
        "the tree came from the blocks"
    );
    let (leaf, proof) = second.inclusion_proof(2_000, 2_600).await.unwrap();
    assert!(merkle::verify_inclusion(2_000, 2_600, &leaf, &proof, &head.root));

    // The leaf put back and a block root changed: the blocks no longer give the newest
    // head's root, so the next start reads every leaf, and stores the right roots again.
    let good = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT leaf FROM audit_log WHERE idx = 6", [], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .unwrap();
    assert_eq!(good.len(), 32);
    let leaves = first.unchecked_store().audit_leaves(5, 1).await.unwrap();
    assert_eq!(leaves[0].1, vec![0; 32]);
    let original = merkle::leaf_hash(&first.unchecked_store().audit_range(5, 1).await.unwrap()[0].body);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE audit_log SET leaf = ?1 WHERE idx = 5", [original.to_vec()])
        .unwrap();
    exec("UPDATE audit_blocks SET root = zeroblob(32) WHERE block = 1");
    let third = vault_with(&db, &keys);
    assert_eq!(
        third.sign_head().await.unwrap().root,
        head.root,
        "rebuilt from every leaf"
    );
    assert_eq!(
        third.unchecked_store().audit_blocks(0, 10).await.unwrap(),
        blocks,
        "repaired"
    );
}
