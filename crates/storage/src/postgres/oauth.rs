//! Sign-in state on PostgreSQL.

use super::{PgStore, map_err};
use crate::oauth::{CLIENT_COLUMNS, SECURITY_COLUMNS, SESSION_COLUMNS, which_hash};
use crate::{OAuthStore, Revoke, SessionMatch, StoreError, StoredClient, StoredSecurity, StoredSession};
use tokio_postgres::Row;

fn client_from_row(r: &Row) -> StoredClient {
    StoredClient {
        id: r.get(0),
        tenant: r.get(1),
        doc: r.get(2),
        created: r.get(3),
        disabled: r.get(4),
    }
}

fn session_from_row(r: &Row) -> StoredSession {
    StoredSession {
        id: r.get(0),
        tenant: r.get(1),
        user_id: r.get(2),
        client_id: r.get(3),
        code_hash: r.get(4),
        refresh_hash: r.get(5),
        prev_refresh_hash: r.get(6),
        doc: r.get(7),
        created: r.get(8),
        last_active: r.get(9),
        expires: r.get(10),
        generation: r.get(11),
        revoked: r.get::<_, i64>(12) != 0,
    }
}

fn security_from_row(r: &Row) -> StoredSecurity {
    StoredSecurity {
        user_id: r.get(0),
        tenant: r.get(1),
        totp_sealed: r.get(2),
        totp_key_id: r.get(3),
        totp_last_step: r.get(4),
        failed: r.get(5),
        locked_until: r.get(6),
    }
}

impl OAuthStore for PgStore {
    async fn insert_client(&self, c: StoredClient, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            &format!("INSERT INTO oauth_clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
            &[&c.id, &c.tenant, &c.doc, &c.created, &c.disabled],
        )
        .await
        .map_err(map_err)?;
        super::audit::append_if(&tx, true, &audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn client_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredClient>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant = $1 AND id = $2"),
                &[&tenant, &id],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(client_from_row))
    }

    async fn clients(&self, tenant: &str) -> Result<Vec<StoredClient>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant = $1 ORDER BY created, id"),
                &[&tenant],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(client_from_row).collect())
    }

    async fn insert_session(&self, s: StoredSession, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            &format!(
                "INSERT INTO oauth_sessions ({SESSION_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0)"
            ),
            &[
                &s.id,
                &s.tenant,
                &s.user_id,
                &s.client_id,
                &s.code_hash,
                &s.refresh_hash,
                &s.prev_refresh_hash,
                &s.doc,
                &s.created,
                &s.last_active,
                &s.expires,
                &s.generation,
            ],
        )
        .await
        .map_err(map_err)?;
        super::audit::append_if(&tx, true, &audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn session_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM oauth_sessions WHERE tenant = $1 AND id = $2"
            ))
            .await
            .map_err(map_err)?;
        let row = client.query_opt(&stmt, &[&tenant, &id]).await.map_err(map_err)?;
        Ok(row.as_ref().map(session_from_row))
    }

    async fn session_by_hash(
        &self,
        tenant: &str,
        hash: &[u8],
    ) -> Result<Option<(StoredSession, SessionMatch)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM oauth_sessions WHERE tenant = $1
                     AND (code_hash = $2 OR refresh_hash = $2 OR prev_refresh_hash = $2)"
                ),
                &[&tenant, &hash],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(session_from_row).map(|s| {
            let m = which_hash(&s, hash);
            (s, m)
        }))
    }

    async fn update_session(&self, s: StoredSession, audit: Option<crate::AuditMaker>) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "UPDATE oauth_sessions SET code_hash = $3, refresh_hash = $4, prev_refresh_hash = $5, doc = $6,
                 last_active = $7, expires = $8, generation = $9::BIGINT
                 WHERE tenant = $1 AND id = $2 AND generation = $9::BIGINT - 1 AND revoked = 0",
                &[
                    &s.tenant,
                    &s.id,
                    &s.code_hash,
                    &s.refresh_hash,
                    &s.prev_refresh_hash,
                    &s.doc,
                    &s.last_active,
                    &s.expires,
                    &s.generation,
                ],
            )
            .await
            .map_err(map_err)?;
        super::audit::append_if(&tx, n == 1, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n == 1)
    }

    async fn revoke_sessions(
        &self,
        tenant: &str,
        which: Revoke<'_>,
        audit: Option<crate::AuditMaker>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let (column, value) = match which {
            Revoke::Session(id) => ("id", id),
            Revoke::User(id) => ("user_id", id),
        };
        let n = tx
            .execute(
                &format!(
                    "UPDATE oauth_sessions SET revoked = nextval('sessions_revoked_seq')
                     WHERE tenant = $1 AND {column} = $2 AND revoked = 0"
                ),
                &[&tenant, &value],
            )
            .await
            .map_err(map_err)?;
        super::audit::append_if(&tx, n > 0, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }

    async fn security(&self, tenant: &str, user_id: &str) -> Result<Option<StoredSecurity>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {SECURITY_COLUMNS} FROM user_security WHERE tenant = $1 AND user_id = $2"),
                &[&tenant, &user_id],
            )
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(security_from_row))
    }

    async fn put_security(&self, s: StoredSecurity, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            &format!(
                "INSERT INTO user_security ({SECURITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (user_id) DO UPDATE SET tenant = EXCLUDED.tenant, totp_sealed = EXCLUDED.totp_sealed,
                     totp_key_id = EXCLUDED.totp_key_id, totp_last_step = EXCLUDED.totp_last_step,
                     failed = EXCLUDED.failed, locked_until = EXCLUDED.locked_until"
            ),
            &[
                &s.user_id,
                &s.tenant,
                &s.totp_sealed,
                &s.totp_key_id,
                &s.totp_last_step,
                &s.failed,
                &s.locked_until,
            ],
        )
        .await
        .map_err(map_err)?;
        super::audit::append_if(&tx, true, &audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_ended_sessions(
        &self,
        tenant: &str,
        now: i64,
        audit: Option<crate::AuditMaker>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // The newest revocation stays: the access epoch reads its stamp.
        let n = tx
            .execute(
                "DELETE FROM oauth_sessions WHERE tenant = $1 AND expires < $2
                 AND (revoked = 0 OR revoked < (SELECT MAX(revoked) FROM oauth_sessions WHERE tenant = $1))",
                &[&tenant, &now],
            )
            .await
            .map_err(map_err)?;
        super::audit::append_if(&tx, n > 0, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }
}
