//! Bulk export jobs and their output files, as the store keeps them: the files are sealed by
//! the layer above (the store sees ciphertext only); a job's request is the canonical text
//! the core rebuilt from parsed parameters (types, a date, random ids), never caller input,
//! and its `_typeFilter` queries are kept sealed beside it.

use crate::StoreError;
use std::future::Future;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportState {
    Running = 0,
    Done = 1,
    Failed = 2,
}

impl ExportState {
    pub fn from_i64(n: i64) -> Option<Self> {
        match n {
            0 => Some(Self::Running),
            1 => Some(Self::Done),
            2 => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One export job. Times are milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportJob {
    pub tenant: String,
    pub id: String,
    pub state: ExportState,
    pub created: i64,
    /// Last sign of life of the worker (a file written); a running job whose worker went
    /// quiet for long is reported as failed.
    pub updated: i64,
    pub expires: i64,
    pub transaction_time: i64,
    pub request: String,
    /// A fixed, PHI-free reason when the job failed.
    pub error: Option<String>,
    /// Resources written so far.
    pub written: i64,
    /// Who started it (an opaque actor key): only they see its status and files.
    pub owner: String,
    /// The kick-off's `_typeFilter` queries, sealed by the layer above: they are caller
    /// text and may hold identifying search values, so they never reach `request`.
    pub filters: Option<SealedText>,
}

/// Text sealed by the layer above, with the id of the key that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedText {
    pub key_id: i64,
    pub body: Vec<u8>,
}

/// One output file: NDJSON of one resource type, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub n: i64,
    pub rtype: String,
    pub count: i64,
    pub key_id: i64,
    pub body: Vec<u8>,
}

/// A file as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFileInfo {
    pub n: i64,
    pub rtype: String,
    pub count: i64,
}

pub trait ExportStore: Send + Sync {
    fn insert_export(
        &self,
        job: ExportJob,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn export(&self, tenant: &str, id: &str) -> impl Future<Output = Result<Option<ExportJob>, StoreError>> + Send;

    /// The files of a job in order.
    fn export_files(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Vec<ExportFileInfo>, StoreError>> + Send;

    /// Adds a file to a running job and records the sign of life; `false` when the job is
    /// gone or no longer running (cancelled), so the worker stops.
    fn add_export_file(
        &self,
        tenant: &str,
        id: &str,
        file: ExportFile,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks a running job done or failed; `false` when it is gone.
    fn finish_export(
        &self,
        tenant: &str,
        id: &str,
        state: ExportState,
        error: Option<String>,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn export_file(
        &self,
        tenant: &str,
        id: &str,
        n: i64,
    ) -> impl Future<Output = Result<Option<ExportFile>, StoreError>> + Send;

    /// Deletes a job and its files; `false` when there was none.
    fn delete_export(
        &self,
        tenant: &str,
        id: &str,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The jobs (of any tenant) that expired before `now`: (tenant, id).
    fn expired_exports(&self, now: i64) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
}
