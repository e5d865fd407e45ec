//! Export jobs and files on SQLite.

use super::SqliteStore;
use crate::{ExportFile, ExportFileInfo, ExportJob, ExportState, ExportStore, StoreError};
use rusqlite::{OptionalExtension, Row, params};

const JOB_COLUMNS: &str = "tenant, id, state, created, updated, expires, transaction_time, request, error, written, owner, filters_key, filters";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<ExportJob> {
    Ok(ExportJob {
        tenant: r.get(0)?,
        id: r.get(1)?,
        state: ExportState::from_i64(r.get(2)?).unwrap_or(ExportState::Failed),
        created: r.get(3)?,
        updated: r.get(4)?,
        expires: r.get(5)?,
        transaction_time: r.get(6)?,
        request: r.get(7)?,
        error: r.get(8)?,
        written: r.get(9)?,
        owner: r.get(10)?,
        filters: match (r.get::<_, Option<i64>>(11)?, r.get::<_, Option<Vec<u8>>>(12)?) {
            (Some(key_id), Some(body)) => Some(crate::SealedText { key_id, body }),
            _ => None,
        },
    })
}

impl ExportStore for SqliteStore {
    async fn insert_export(&self, job: ExportJob, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        self.pool
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO export_jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))?
                .execute(params![
                    job.tenant,
                    job.id,
                    job.state as i64,
                    job.created,
                    job.updated,
                    job.expires,
                    job.transaction_time,
                    job.request,
                    job.error,
                    job.written,
                    job.owner,
                    job.filters.as_ref().map(|f| f.key_id),
                    job.filters.as_ref().map(|f| f.body.as_slice())
                ])?;
                super::audit::append_if(conn, true, &audit)
            })
            .await
    }

    async fn export(&self, tenant: &str, id: &str) -> Result<Option<ExportJob>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {JOB_COLUMNS} FROM export_jobs WHERE tenant = ?1 AND id = ?2"
                    ))?
                    .query_row(params![tenant, id], job_from_row)
                    .optional()?)
            })
            .await
    }

    async fn export_files(&self, tenant: &str, id: &str) -> Result<Vec<ExportFileInfo>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT n, rtype, count FROM export_files WHERE tenant = ?1 AND job = ?2 ORDER BY n",
                )?;
                let rows = stmt.query_map(params![tenant, id], |r| {
                    Ok(ExportFileInfo {
                        n: r.get(0)?,
                        rtype: r.get(1)?,
                        count: r.get(2)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn add_export_file(&self, tenant: &str, id: &str, file: ExportFile, now: i64) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .write(move |conn| {
                let touched = conn
                    .prepare_cached(
                        "UPDATE export_jobs SET updated = ?3, written = written + ?4
                         WHERE tenant = ?1 AND id = ?2 AND state = 0",
                    )?
                    .execute(params![tenant, id, now, file.count])?;
                if touched == 0 {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "INSERT INTO export_files (tenant, job, n, rtype, count, key_id, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    tenant,
                    id,
                    file.n,
                    file.rtype,
                    file.count,
                    file.key_id,
                    file.body
                ])?;
                Ok(true)
            })
            .await
    }

    async fn finish_export(
        &self,
        tenant: &str,
        id: &str,
        state: ExportState,
        error: Option<String>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE export_jobs SET state = ?3, error = ?4, updated = ?5
                         WHERE tenant = ?1 AND id = ?2 AND state = 0",
                    )?
                    .execute(params![tenant, id, state as i64, error, now])?;
                Ok(n > 0)
            })
            .await
    }

    async fn export_file(&self, tenant: &str, id: &str, n: i64) -> Result<Option<ExportFile>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT n, rtype, count, key_id, body FROM export_files WHERE tenant = ?1 AND job = ?2 AND n = ?3",
                    )?
                    .query_row(params![tenant, id, n], |r| {
                        Ok(ExportFile {
                            n: r.get(0)?,
                            rtype: r.get(1)?,
                            count: r.get(2)?,
                            key_id: r.get(3)?,
                            body: r.get(4)?,
                        })
                    })
                    .optional()?)
            })
            .await
    }

    async fn delete_export(
        &self,
        tenant: &str,
        id: &str,
        audit: Option<crate::AuditMaker>,
    ) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.pool
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM export_files WHERE tenant = ?1 AND job = ?2")?
                    .execute(params![tenant, id])?;
                let n = conn
                    .prepare_cached("DELETE FROM export_jobs WHERE tenant = ?1 AND id = ?2")?
                    .execute(params![tenant, id])?;
                super::audit::append_if(conn, n > 0, &audit)?;
                Ok(n > 0)
            })
            .await
    }

    async fn expired_exports(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut st = conn.prepare_cached("SELECT tenant, id FROM export_jobs WHERE expires < ?1")?;
                let rows = st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}
