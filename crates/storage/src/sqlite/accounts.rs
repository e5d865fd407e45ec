//! Accounts on SQLite.

use super::SqliteStore;
use crate::accounts::USER_COLUMNS;
use crate::{AccountStore, StoreError, StoredUser};
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

impl AccountStore for SqliteStore {
    async fn insert_user(&self, u: StoredUser) -> Result<(), StoreError> {
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

    async fn set_user_disabled(&self, tenant: &str, id: &str, disabled: bool) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached("UPDATE users SET disabled = ?3 WHERE tenant = ?1 AND id = ?2")?
                    .execute(params![tenant, id, disabled])?;
                Ok(n == 1)
            })
            .await
    }
}
