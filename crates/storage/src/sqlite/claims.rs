//! Conditional creates' claims on their conditions (`Claim`) on SQLite. The writer is the
//! only one, so checking a claim and then writing it in the same transaction is atomic.

use crate::{ChangeSet, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

/// Fails with `Claimed` when a claim of the set names a condition whose earlier claim's
/// resource still stands as that create made it. Runs before the set writes anything.
pub(crate) fn check(conn: &Connection, changes: &ChangeSet) -> Result<(), StoreError> {
    for claim in &changes.claims {
        let held: Option<(String, String, String, i64)> = conn
            .prepare_cached("SELECT tenant, rtype, id, version FROM condition_claims WHERE tag = ?1")?
            .query_row([&claim.tag], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let Some((tenant, rtype, id, version)) = held else {
            continue;
        };
        let stands: Option<i64> = conn
            .prepare_cached(
                "SELECT 1 FROM resources WHERE tenant = ?1 AND rtype = ?2 AND id = ?3 AND version = ?4 AND NOT deleted",
            )?
            .query_row(params![tenant, rtype, id, version], |r| r.get(0))
            .optional()?;
        if stands.is_some() {
            return Err(StoreError::Claimed);
        }
    }
    Ok(())
}

/// Records the set's claims (taking over stale ones), after its versions are written.
pub(crate) fn record(conn: &Connection, changes: &ChangeSet) -> Result<(), StoreError> {
    for claim in &changes.claims {
        let v = changes
            .versions
            .get(claim.version)
            .ok_or(StoreError::Corrupt("a claim names no version of its change set"))?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO condition_claims (tag, tenant, rtype, id, version, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            claim.tag,
            v.key.tenant,
            v.key.rtype,
            v.key.id,
            v.version as i64,
            v.last_updated
        ])?;
    }
    Ok(())
}

/// Deletes the claims made before `before`.
pub(crate) fn purge(conn: &Connection, before: i64) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM condition_claims WHERE created < ?1")?
        .execute([before])? as u64)
}
