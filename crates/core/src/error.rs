use carevault_storage::StoreError;

/// What can go wrong in a use case. Messages are safe to show a client: they never carry
/// resource content, only shapes and positions.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("resource not found")]
    NotFound,
    #[error("resource deleted")]
    Gone { version: u64, last_updated: i64 },
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this kind of thing at all (a type or interaction outside its
    /// role or scopes). Never used for "this record is not yours": that is `NotFound`.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Conflict(String),
    /// A stored ciphertext failed authentication: tampering, a row copied elsewhere, or the
    /// wrong key. Never answered with data.
    #[error("stored data failed its integrity check")]
    Integrity,
    #[error("storage failure")]
    Store(#[source] StoreError),
    #[error("cryptographic failure")]
    Crypto(#[source] carevault_crypto::CryptoError),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => CoreError::Conflict("a concurrent write changed this resource".into()),
            other => CoreError::Store(other),
        }
    }
}

impl From<carevault_crypto::CryptoError> for CoreError {
    fn from(e: carevault_crypto::CryptoError) -> Self {
        match e {
            carevault_crypto::CryptoError::Integrity => CoreError::Integrity,
            other => CoreError::Crypto(other),
        }
    }
}
