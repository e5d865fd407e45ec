//! Sign-in state on SQLite.

use super::SqliteStore;
use crate::oauth::{CLIENT_COLUMNS, SECURITY_COLUMNS, SESSION_COLUMNS, which_hash};
use crate::{OAuthStore, Revoke, SessionMatch, StoreError, StoredClient, StoredSecurity, StoredSession};
use rusqlite::{OptionalExtension, Row, params};

fn client_from_row(r: &Row<'_>) -> rusqlite::Result<StoredClient> {
    Ok(StoredClient {
        id: r.get(0)?,
        tenant: r.get(1)?,
        doc: r.get(2)?,
        created: r.get(3)?,
        disabled: r.get(4)?,
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<StoredSession> {
    Ok(StoredSession {
        id: r.get(0)?,
        tenant: r.get(1)?,
        user_id: r.get(2)?,
        client_id: r.get(3)?,
        code_hash: r.get(4)?,
        refresh_hash: r.get(5)?,
        prev_refresh_hash: r.get(6)?,
        doc: r.get(7)?,
        created: r.get(8)?,
        last_active: r.get(9)?,
        expires: r.get(10)?,
        generation: r.get(11)?,
        revoked: r.get::<_, i64>(12)? != 0,
    })
}

fn security_from_row(r: &Row<'_>) -> rusqlite::Result<StoredSecurity> {
    Ok(StoredSecurity {
        user_id: r.get(0)?,
        tenant: r.get(1)?,
        totp_sealed: r.get(2)?,
        totp_key_id: r.get(3)?,
        totp_last_step: r.get(4)?,
        failed: r.get(5)?,
        locked_until: r.get(6)?,
    })
}

impl OAuthStore for SqliteStore {
    async fn insert_client(&self, c: StoredClient, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                let taken: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM oauth_clients WHERE id = ?1")?
                    .query_row(params![c.id], |r| r.get(0))
                    .optional()?;
                if taken.is_some() {
                    return Err(StoreError::Conflict);
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                ))?
                .execute(params![c.id, c.tenant, c.doc, c.created, c.disabled])?;
                super::audit::append_if(conn, true, &audit)
            })
            .await
    }

    async fn client_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredClient>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant = ?1 AND id = ?2"
                    ))?
                    .query_row(params![tenant, id], client_from_row)
                    .optional()?)
            })
            .await
    }

    async fn clients(&self, tenant: &str) -> Result<Vec<StoredClient>, StoreError> {
        let tenant = tenant.to_owned();
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE tenant = ?1 ORDER BY created, id"
                ))?;
                let rows = stmt.query_map(params![tenant], client_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn insert_session(&self, s: StoredSession, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                let taken: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM oauth_sessions WHERE id = ?1")?
                    .query_row(params![s.id], |r| r.get(0))
                    .optional()?;
                if taken.is_some() {
                    return Err(StoreError::Conflict);
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO oauth_sessions ({SESSION_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)"
                ))?
                .execute(params![
                    s.id,
                    s.tenant,
                    s.user_id,
                    s.client_id,
                    s.code_hash,
                    s.refresh_hash,
                    s.prev_refresh_hash,
                    s.doc,
                    s.created,
                    s.last_active,
                    s.expires,
                    s.generation
                ])?;
                super::audit::append_if(conn, true, &audit)
            })
            .await
    }

    async fn session_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM oauth_sessions WHERE tenant = ?1 AND id = ?2"
                    ))?
                    .query_row(params![tenant, id], session_from_row)
                    .optional()?)
            })
            .await
    }

    async fn session_by_hash(
        &self,
        tenant: &str,
        hash: &[u8],
    ) -> Result<Option<(StoredSession, SessionMatch)>, StoreError> {
        let (tenant, hash) = (tenant.to_owned(), hash.to_vec());
        self.pool
            .read(move |conn| {
                let found = conn
                    .prepare_cached(&format!(
                        "SELECT {SESSION_COLUMNS} FROM oauth_sessions WHERE tenant = ?1
                         AND (code_hash = ?2 OR refresh_hash = ?2 OR prev_refresh_hash = ?2)"
                    ))?
                    .query_row(params![tenant, hash], session_from_row)
                    .optional()?;
                Ok(found.map(|s| {
                    let m = which_hash(&s, &hash);
                    (s, m)
                }))
            })
            .await
    }

    async fn update_session(&self, s: StoredSession, audit: Option<crate::AuditMaker>) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE oauth_sessions SET code_hash = ?3, refresh_hash = ?4, prev_refresh_hash = ?5, doc = ?6,
                         last_active = ?7, expires = ?8, generation = ?9
                         WHERE tenant = ?1 AND id = ?2 AND generation = ?9 - 1 AND revoked = 0",
                    )?
                    .execute(params![
                        s.tenant,
                        s.id,
                        s.code_hash,
                        s.refresh_hash,
                        s.prev_refresh_hash,
                        s.doc,
                        s.last_active,
                        s.expires,
                        s.generation
                    ])?;
                super::audit::append_if(conn, n == 1, &audit)?;
                Ok(n == 1)
            })
            .await
    }

    async fn revoke_sessions(
        &self,
        tenant: &str,
        which: Revoke<'_>,
        audit: Option<crate::AuditMaker>,
    ) -> Result<u64, StoreError> {
        let tenant = tenant.to_owned();
        let (column, value) = match which {
            Revoke::Session(id) => ("id", id.to_owned()),
            Revoke::User(id) => ("user_id", id.to_owned()),
        };
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached(&format!(
                        "UPDATE oauth_sessions
                         SET revoked = (SELECT COALESCE(MAX(revoked), 0) + 1 FROM oauth_sessions WHERE tenant = ?1)
                         WHERE tenant = ?1 AND {column} = ?2 AND revoked = 0"
                    ))?
                    .execute(params![tenant, value])?;
                super::audit::append_if(conn, n > 0, &audit)?;
                Ok(n as u64)
            })
            .await
    }

    async fn security(&self, tenant: &str, user_id: &str) -> Result<Option<StoredSecurity>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), user_id.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {SECURITY_COLUMNS} FROM user_security WHERE tenant = ?1 AND user_id = ?2"
                    ))?
                    .query_row(params![tenant, id], security_from_row)
                    .optional()?)
            })
            .await
    }

    async fn put_security(&self, s: StoredSecurity, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO user_security ({SECURITY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))?
                .execute(params![
                    s.user_id,
                    s.tenant,
                    s.totp_sealed,
                    s.totp_key_id,
                    s.totp_last_step,
                    s.failed,
                    s.locked_until
                ])?;
                super::audit::append_if(conn, true, &audit)
            })
            .await
    }

    async fn delete_ended_sessions(
        &self,
        tenant: &str,
        now: i64,
        audit: Option<crate::AuditMaker>,
    ) -> Result<u64, StoreError> {
        let tenant = tenant.to_owned();
        self.pool
            .write(move |conn| {
                // The newest revocation stays: the access epoch reads its stamp.
                let n = conn
                    .prepare_cached(
                        "DELETE FROM oauth_sessions WHERE tenant = ?1 AND expires < ?2
                         AND (revoked = 0 OR revoked < (SELECT MAX(revoked) FROM oauth_sessions WHERE tenant = ?1))",
                    )?
                    .execute(params![tenant, now])?;
                super::audit::append_if(conn, n > 0, &audit)?;
                Ok(n as u64)
            })
            .await
    }
}
