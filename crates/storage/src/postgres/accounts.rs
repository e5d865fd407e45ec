//! Accounts on PostgreSQL.

use super::{PgStore, map_err};
use crate::accounts::{EMERGENCY_COLUMNS, USER_COLUMNS};
use crate::{AccessEpoch, AccountStore, StoreError, StoredEmergency, StoredUser};
use tokio_postgres::Row;

fn user_from_row(r: &Row) -> StoredUser {
    StoredUser {
        id: r.get(0),
        tenant: r.get(1),
        username_tag: r.get(2),
        username_sealed: r.get(3),
        username_key_id: r.get(4),
        role: r.get(5),
        patient: r.get(6),
        practitioner: r.get(7),
        password_hash: r.get(8),
        disabled: r.get(9),
        created: r.get(10),
    }
}

fn emergency_from_row(r: &Row) -> StoredEmergency {
    StoredEmergency {
        id: r.get(0),
        tenant: r.get(1),
        user_id: r.get(2),
        patient: r.get(3),
        started: r.get(4),
        expires: r.get(5),
        reason_sealed: r.get(6),
        reason_key_id: r.get(7),
        reviewed_at: r.get(8),
        reviewer: r.get(9),
        verdict: r.get(10),
    }
}

/// Gives an account the next change stamp of its tenant.
async fn bump(tx: &deadpool_postgres::Transaction<'_>, tenant: &str, id: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE users SET changed = nextval('users_changed_seq') WHERE tenant = $1 AND id = $2",
        &[&tenant, &id],
    )
    .await?;
    Ok(())
}

impl AccountStore for PgStore {
    async fn insert_user(&self, u: StoredUser, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            &format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
            &[
                &u.id,
                &u.tenant,
                &u.username_tag,
                &u.username_sealed,
                &u.username_key_id,
                &u.role,
                &u.patient,
                &u.practitioner,
                &u.password_hash,
                &u.disabled,
                &u.created,
            ],
        )
        .await
        .map_err(map_err)?;
        bump(&tx, &u.tenant, &u.id).await?;
        if let Some(maker) = &audit {
            super::audit::insert_made(&tx, std::slice::from_ref(maker)).await?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn user_by_tag(&self, tenant: &str, tag: &[u8]) -> Result<Option<StoredUser>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 AND username_tag = $2"
            ))
            .await?;
        Ok(client
            .query_opt(&stmt, &[&tenant, &tag])
            .await?
            .as_ref()
            .map(user_from_row))
    }

    async fn user_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredUser>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 AND id = $2"
            ))
            .await?;
        Ok(client
            .query_opt(&stmt, &[&tenant, &id])
            .await?
            .as_ref()
            .map(user_from_row))
    }

    async fn users(&self, tenant: &str) -> Result<Vec<StoredUser>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE tenant = $1 ORDER BY created, id"),
                &[&tenant],
            )
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn set_user_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
        audit: Option<crate::AuditMaker>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "UPDATE users SET disabled = $3 WHERE tenant = $1 AND id = $2",
                &[&tenant, &id, &disabled],
            )
            .await?;
        bump(&tx, tenant, id).await?;
        if let (1, Some(maker)) = (n, &audit) {
            super::audit::insert_made(&tx, std::slice::from_ref(maker)).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn insert_emergency(&self, e: StoredEmergency, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
                &format!(
                    "INSERT INTO emergency_access ({EMERGENCY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &e.id,
                    &e.tenant,
                    &e.user_id,
                    &e.patient,
                    &e.started,
                    &e.expires,
                    &e.reason_sealed,
                    &e.reason_key_id,
                    &e.reviewed_at,
                    &e.reviewer,
                    &e.verdict,
                ],
            )
            .await
            .map_err(map_err)?;
        if let Some(maker) = &audit {
            super::audit::insert_made(&tx, std::slice::from_ref(maker)).await?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn active_emergencies(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT patient, MAX(expires) FROM emergency_access
                 WHERE tenant = $1 AND user_id = $2 AND expires > $3 AND started <= $3 GROUP BY patient",
            )
            .await?;
        let rows = client.query(&stmt, &[&tenant, &user_id, &now]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn access_epoch(&self, tenant: &str) -> Result<AccessEpoch, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM resource_versions WHERE tenant = $1 AND rtype = 'Consent'),
                        (SELECT COALESCE(MAX(changed), 0) FROM users WHERE tenant = $1),
                        (SELECT count(*) FROM emergency_access WHERE tenant = $1),
                        (SELECT COALESCE(MAX(revoked), 0) FROM oauth_sessions WHERE tenant = $1)",
            )
            .await?;
        let r = client.query_one(&stmt, &[&tenant]).await?;
        Ok(AccessEpoch {
            consent: r.get(0),
            accounts: r.get(1),
            emergencies: r.get(2),
            sessions: r.get(3),
        })
    }

    async fn emergencies(
        &self,
        tenant: &str,
        patient: Option<&str>,
        unreviewed_only: bool,
    ) -> Result<Vec<StoredEmergency>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EMERGENCY_COLUMNS} FROM emergency_access
                     WHERE tenant = $1 AND ($2::TEXT IS NULL OR patient = $2) AND (NOT $3 OR reviewed_at IS NULL)
                     ORDER BY started DESC, id"
                ),
                &[&tenant, &patient, &unreviewed_only],
            )
            .await?;
        Ok(rows.iter().map(emergency_from_row).collect())
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "UPDATE emergency_access SET reviewed_at = $3, reviewer = $4, verdict = $5
                 WHERE tenant = $1 AND id = $2 AND reviewed_at IS NULL",
                &[&tenant, &id, &at, &reviewer, &verdict],
            )
            .await?;
        super::audit::append_if(&tx, n == 1, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }
}
