//! Export jobs and files on PostgreSQL.

use super::{PgStore, map_err};
use crate::{ExportFile, ExportFileInfo, ExportJob, ExportState, ExportStore, StoreError};
use tokio_postgres::Row;

const JOB_COLUMNS: &str = "tenant, id, state, created, updated, expires, transaction_time, request, error, written, owner, filters_key, filters";

fn job_from_row(r: &Row) -> ExportJob {
    ExportJob {
        tenant: r.get(0),
        id: r.get(1),
        state: ExportState::from_i64(r.get(2)).unwrap_or(ExportState::Failed),
        created: r.get(3),
        updated: r.get(4),
        expires: r.get(5),
        transaction_time: r.get(6),
        request: r.get(7),
        error: r.get(8),
        written: r.get(9),
        owner: r.get(10),
        filters: match (r.get::<_, Option<i64>>(11), r.get::<_, Option<Vec<u8>>>(12)) {
            (Some(key_id), Some(body)) => Some(crate::SealedText { key_id, body }),
            _ => None,
        },
    }
}

impl ExportStore for PgStore {
    async fn insert_export(&self, job: ExportJob, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO export_jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .await?;
        let state = job.state as i64;
        let filters_key = job.filters.as_ref().map(|f| f.key_id);
        let filters = job.filters.as_ref().map(|f| f.body.as_slice());
        tx.execute(
            &stmt,
            &[
                &job.tenant,
                &job.id,
                &state,
                &job.created,
                &job.updated,
                &job.expires,
                &job.transaction_time,
                &job.request,
                &job.error,
                &job.written,
                &job.owner,
                &filters_key,
                &filters,
            ],
        )
        .await
        .map_err(map_err)?;
        super::audit::append_if(&tx, true, &audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn export(&self, tenant: &str, id: &str) -> Result<Option<ExportJob>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM export_jobs WHERE tenant = $1 AND id = $2"
            ))
            .await?;
        Ok(client
            .query_opt(&stmt, &[&tenant, &id])
            .await?
            .map(|r| job_from_row(&r)))
    }

    async fn export_files(&self, tenant: &str, id: &str) -> Result<Vec<ExportFileInfo>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT n, rtype, count FROM export_files WHERE tenant = $1 AND job = $2 ORDER BY n")
            .await?;
        Ok(client
            .query(&stmt, &[&tenant, &id])
            .await?
            .iter()
            .map(|r| ExportFileInfo {
                n: r.get(0),
                rtype: r.get(1),
                count: r.get(2),
            })
            .collect())
    }

    async fn add_export_file(&self, tenant: &str, id: &str, file: ExportFile, now: i64) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let touch = tx
            .prepare_cached(
                "UPDATE export_jobs SET updated = $3, written = written + $4
                 WHERE tenant = $1 AND id = $2 AND state = 0",
            )
            .await?;
        if tx
            .execute(&touch, &[&tenant, &id, &now, &file.count])
            .await
            .map_err(map_err)?
            == 0
        {
            return Ok(false);
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO export_files (tenant, job, n, rtype, count, key_id, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &tenant,
                &id,
                &file.n,
                &file.rtype,
                &file.count,
                &file.key_id,
                &file.body,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn finish_export(
        &self,
        tenant: &str,
        id: &str,
        state: ExportState,
        error: Option<String>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE export_jobs SET state = $3, error = $4, updated = $5
                 WHERE tenant = $1 AND id = $2 AND state = 0",
            )
            .await?;
        let state = state as i64;
        Ok(client
            .execute(&stmt, &[&tenant, &id, &state, &error, &now])
            .await
            .map_err(map_err)?
            > 0)
    }

    async fn export_file(&self, tenant: &str, id: &str, n: i64) -> Result<Option<ExportFile>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT n, rtype, count, key_id, body FROM export_files WHERE tenant = $1 AND job = $2 AND n = $3",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&tenant, &id, &n]).await?.map(|r| ExportFile {
            n: r.get(0),
            rtype: r.get(1),
            count: r.get(2),
            key_id: r.get(3),
            body: r.get(4),
        }))
    }

    async fn delete_export(
        &self,
        tenant: &str,
        id: &str,
        audit: Option<crate::AuditMaker>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            "DELETE FROM export_files WHERE tenant = $1 AND job = $2",
            &[&tenant, &id],
        )
        .await
        .map_err(map_err)?;
        let n = tx
            .execute("DELETE FROM export_jobs WHERE tenant = $1 AND id = $2", &[&tenant, &id])
            .await
            .map_err(map_err)?;
        super::audit::append_if(&tx, n > 0, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(n > 0)
    }

    async fn expired_exports(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT tenant, id FROM export_jobs WHERE expires < $1", &[&now])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
