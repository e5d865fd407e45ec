//! Proofs served from the in-memory subtree cache and a few blocks of leaves equal the proofs
//! computed from every leaf, on a log of several blocks. Runs on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{AuditAgent, AuditDraft, Outcome, mac_key, maker};
use carevault_crypto::merkle::{self, Hash};
use carevault_domain::{FixedClock, Timestamp};
use carevault_storage::AuditStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_over_several_blocks_equal_proofs_from_every_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::new(Timestamp::parse("2026-01-01T00:00:00Z").unwrap());
    let v = crate::test_vault::sqlite_vault(&dir.path().join("t.db"), clock).await;
    let key = mac_key(v.keys());
    let makers = (0..2_600)
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
        .collect();
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
