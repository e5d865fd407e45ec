//! Conditional creates' claims on their conditions (`Claim`) on PostgreSQL. A claim is taken
//! first in the change set's transaction: of two concurrent claims of one tag, the second's
//! insert waits for the first transaction and then finds its row, whose resource stands.

use crate::{ChangeSet, StoreError};
use deadpool_postgres::Transaction;

/// Takes the set's claims, or fails with `Claimed` when one names a condition whose earlier
/// claim's resource still stands as that create made it (a stale claim is taken over).
pub(crate) async fn take(tx: &Transaction<'_>, changes: &ChangeSet) -> Result<(), StoreError> {
    // In tag order, so that two sets claiming the same tags cannot wait on each other.
    let mut claims: Vec<_> = changes.claims.iter().collect();
    claims.sort_by(|a, b| a.tag.cmp(&b.tag));
    for claim in claims {
        let v = changes
            .versions
            .get(claim.version)
            .ok_or(StoreError::Corrupt("a claim names no version of its change set"))?;
        let version = v.version as i64;
        let inserted = tx
            .execute(
                "INSERT INTO condition_claims (tag, tenant, rtype, id, version, created)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tag) DO NOTHING",
                &[
                    &claim.tag,
                    &v.key.tenant,
                    &v.key.rtype,
                    &v.key.id,
                    &version,
                    &v.last_updated,
                ],
            )
            .await?;
        if inserted == 1 {
            continue;
        }
        let stands = tx
            .query_opt(
                "SELECT 1 FROM condition_claims c JOIN resources r
                   ON r.tenant = c.tenant AND r.rtype = c.rtype AND r.id = c.id AND r.version = c.version
                 WHERE c.tag = $1 AND NOT r.deleted FOR UPDATE OF c",
                &[&claim.tag],
            )
            .await?;
        if stands.is_some() {
            return Err(StoreError::Claimed);
        }
        tx.execute(
            "UPDATE condition_claims SET tenant = $2, rtype = $3, id = $4, version = $5, created = $6 WHERE tag = $1",
            &[
                &claim.tag,
                &v.key.tenant,
                &v.key.rtype,
                &v.key.id,
                &version,
                &v.last_updated,
            ],
        )
        .await?;
    }
    Ok(())
}
