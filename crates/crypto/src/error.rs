/// Failures of the crypto layer. None carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A ciphertext failed authentication: tampered, moved to another row, or the wrong key.
    #[error("ciphertext failed authentication")]
    Integrity,
    #[error("the system random source failed")]
    Random,
    #[error("key file: {0}")]
    KeyFile(String),
    #[error("no key-encryption key of version {0}")]
    UnknownKekVersion(u32),
}
