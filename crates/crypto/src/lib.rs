//! All of carevault's cryptography, in one small crate over `ring`: the key file, data-key
//! wrapping, AEAD sealing bound to a row, blind-index tags, token hashing, password hashing
//! (Argon2id), access-token signatures (Ed25519) and randomness.
//! Nothing else in the workspace touches a primitive directly.
//!
//! AEAD choice: AES-256-GCM with a fresh random 96-bit nonce per message. Each patient has
//! its own data key, so the number of messages under one key stays far below the 2^32 bound
//! at which random 96-bit nonces risk a collision; the tenant key is the busiest and is
//! rotatable (the key id is stored beside every ciphertext).

mod aead;
mod assertion;
mod blind;
mod cursor;
mod error;
mod heads;
mod jwt;
mod keyfile;
pub mod merkle;
mod password;
mod random;
mod token;
mod totp;

pub use aead::{DataKey, RowBinding, WrappedKey};
pub use assertion::{jwks_usable, verify_assertion};
pub use blind::{BlindTag, IndexKey};
pub use cursor::CursorKey;
pub use error::CryptoError;
pub use heads::{HeadSigner, head_message, verify_head};
pub use jwt::TokenSigner;
pub use keyfile::{Kek, KeyFile, KeyVersion};
pub use password::{Password, hash_password, verify_password};
pub use random::{RandomSource, SystemRandomSource};
pub use token::{TokenHash, constant_time_eq, hash_token, new_token};
pub use totp::{TOTP_STEP_SECS, TotpSecret, base32_decode, base32_encode};
