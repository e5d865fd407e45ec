/// Storage failures. Messages name operations, never values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A version expectation in a change set did not hold (someone else wrote first).
    #[error("conflicting concurrent write")]
    Conflict,
    /// A concurrent conditional create claimed the same condition first (see `Claim`).
    #[error("a concurrent conditional create claimed the same condition")]
    Claimed,
    #[error("database error during {op}: {detail}")]
    Backend { op: &'static str, detail: String },
    #[error("the storage worker stopped")]
    WorkerGone,
    #[error("stored data is malformed: {0}")]
    Corrupt(&'static str),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    pub fn backend(op: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Backend {
            op,
            detail: e.to_string(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::backend("sqlite", e)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::backend("postgres", e)
    }
}
