//! Accounts on SQLite.

use super::SqliteStore;
use crate::accounts::{EMERGENCY_COLUMNS, USER_COLUMNS};
use crate::{AccessEpoch, AccountStore, StoreError, StoredEmergency, StoredUser};
use rusqlite::{OptionalExtension, Row, params};

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<StoredUser> {
    Ok(StoredUser {
        id: r.get(0)?,
        tenant: r.get(1)?,
        username_tag: r.get(2)?,
        username_sealed: r.get(3)?,
        username_key_id: r.get(4)?,
        role: r.get(5)?,
        patient: r.get(6)?,
        practitioner: r.get(7)?,
        password_hash: r.get(8)?,
        disabled: r.get(9)?,
        created: r.get(10)?,
    })
}

fn emergency_from_row(r: &Row<'_>) -> rusqlite::Result<StoredEmergency> {
    Ok(StoredEmergency {
        id: r.get(0)?,
        tenant: r.get(1)?,
        user_id: r.get(2)?,
        patient: r.get(3)?,
        started: r.get(4)?,
        expires: r.get(5)?,
        reason_sealed: r.get(6)?,
        reason_key_id: r.get(7)?,
        reviewed_at: r.get(8)?,
        reviewer: r.get(9)?,
        verdict: r.get(10)?,
    })
}

/// Gives an account the next change stamp of its tenant.
fn bump(conn: &rusqlite::Connection, tenant: &str, id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE users SET changed = (SELECT COALESCE(MAX(changed), 0) + 1 FROM users WHERE tenant = ?1)
         WHERE tenant = ?1 AND id = ?2",
    )?
    .execute(params![tenant, id])?;
    Ok(())
}

impl AccountStore for SqliteStore {
    async fn insert_user(&self, u: StoredUser, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                let taken: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM users WHERE tenant = ?1 AND username_tag = ?2")?
                    .query_row(params![u.tenant, u.username_tag], |r| r.get(0))
                    .optional()?;
                if taken.is_some() {
                    return Err(StoreError::Conflict);
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ))?
                .execute(params![
                    u.id,
                    u.tenant,
                    u.username_tag,
                    u.username_sealed,
                    u.username_key_id,
                    u.role,
                    u.patient,
                    u.practitioner,
                    u.password_hash,
                    u.disabled,
                    u.created
                ])?;
                bump(conn, &u.tenant, &u.id)?;
                if let Some(maker) = &audit {
                    super::audit::insert_made(conn, std::slice::from_ref(maker))?;
                }
                Ok(())
            })
            .await
    }

    async fn user_by_tag(&self, tenant: &str, tag: &[u8]) -> Result<Option<StoredUser>, StoreError> {
        let (tenant, tag) = (tenant.to_owned(), tag.to_vec());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 AND username_tag = ?2"
                    ))?
                    .query_row(params![tenant, tag], user_from_row)
                    .optional()?)
            })
            .await
    }

    async fn user_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredUser>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 AND id = ?2"
                    ))?
                    .query_row(params![tenant, id], user_from_row)
                    .optional()?)
            })
            .await
    }

    async fn users(&self, tenant: &str) -> Result<Vec<StoredUser>, StoreError> {
        let tenant = tenant.to_owned();
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 ORDER BY created, id"
                ))?;
                let rows = stmt.query_map(params![tenant], user_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn set_user_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
        audit: Option<crate::AuditMaker>,
    ) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached("UPDATE users SET disabled = ?3 WHERE tenant = ?1 AND id = ?2")?
                    .execute(params![tenant, id, disabled])?;
                bump(conn, &tenant, &id)?;
                if let (1, Some(maker)) = (n, &audit) {
                    super::audit::insert_made(conn, std::slice::from_ref(maker))?;
                }
                Ok(n == 1)
            })
            .await
    }

    async fn insert_emergency(&self, e: StoredEmergency, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO emergency_access ({EMERGENCY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ))?
                .execute(params![
                    e.id,
                    e.tenant,
                    e.user_id,
                    e.patient,
                    e.started,
                    e.expires,
                    e.reason_sealed,
                    e.reason_key_id,
                    e.reviewed_at,
                    e.reviewer,
                    e.verdict
                ])?;
                if let Some(maker) = &audit {
                    super::audit::insert_made(conn, std::slice::from_ref(maker))?;
                }
                Ok(())
            })
            .await
    }

    async fn active_emergencies(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let (tenant, user_id) = (tenant.to_owned(), user_id.to_owned());
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT patient, MAX(expires) FROM emergency_access
                     WHERE tenant = ?1 AND user_id = ?2 AND expires > ?3 AND started <= ?3 GROUP BY patient",
                )?;
                let rows = stmt.query_map(params![tenant, user_id, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<(String, i64)>, _>>()?)
            })
            .await
    }

    async fn access_epoch(&self, tenant: &str) -> Result<AccessEpoch, StoreError> {
        let tenant = tenant.to_owned();
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM resource_versions WHERE tenant = ?1 AND rtype = 'Consent'),
                                (SELECT COALESCE(MAX(changed), 0) FROM users WHERE tenant = ?1),
                                (SELECT count(*) FROM emergency_access WHERE tenant = ?1),
                                (SELECT COALESCE(MAX(revoked), 0) FROM oauth_sessions WHERE tenant = ?1)",
                    )?
                    .query_row(params![tenant], |r| {
                        Ok(AccessEpoch {
                            consent: r.get(0)?,
                            accounts: r.get(1)?,
                            emergencies: r.get(2)?,
                            sessions: r.get(3)?,
                        })
                    })?)
            })
            .await
    }

    async fn emergencies(
        &self,
        tenant: &str,
        patient: Option<&str>,
        unreviewed_only: bool,
    ) -> Result<Vec<StoredEmergency>, StoreError> {
        let (tenant, patient) = (tenant.to_owned(), patient.map(str::to_owned));
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {EMERGENCY_COLUMNS} FROM emergency_access
                     WHERE tenant = ?1 AND (?2 IS NULL OR patient = ?2) AND (NOT ?3 OR reviewed_at IS NULL)
                     ORDER BY started DESC, id"
                ))?;
                let rows = stmt.query_map(params![tenant, patient, unreviewed_only], emergency_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn review_emergency(
        &self,
        tenant: &str,
        id: &str,
        reviewer: &str,
        verdict: &str,
        at: i64,
        audit: Option<crate::AuditMaker>,
    ) -> Result<bool, StoreError> {
        let (tenant, id, reviewer, verdict) = (
            tenant.to_owned(),
            id.to_owned(),
            reviewer.to_owned(),
            verdict.to_owned(),
        );
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE emergency_access SET reviewed_at = ?3, reviewer = ?4, verdict = ?5
                         WHERE tenant = ?1 AND id = ?2 AND reviewed_at IS NULL",
                    )?
                    .execute(params![tenant, id, at, reviewer, verdict])?;
                super::audit::append_if(conn, n == 1, &audit)?;
                Ok(n == 1)
            })
            .await
    }
}
