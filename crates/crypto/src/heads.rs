//! Signed tree heads of the audit log: Ed25519 under a key of its own, derived (HKDF) from the
//! key file with a label no other key uses. A head says "the log had `size` entries and this
//! root at this time"; the signature covers exactly that.

use crate::{CryptoError, KeyFile};
use ring::hkdf;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

struct SeedLen;

impl hkdf::KeyType for SeedLen {
    fn len(&self) -> usize {
        32
    }
}

/// The audit log's head signing key.
pub struct HeadSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadSigner(..)")
    }
}

/// The bytes a head's signature covers.
pub fn head_message(size: u64, root: &[u8; 32], at_millis: i64) -> Vec<u8> {
    let hex: String = root.iter().map(|b| format!("{b:02x}")).collect();
    format!("carevault audit head v1\nsize {size}\nroot {hex}\nat {at_millis}\n").into_bytes()
}

impl HeadSigner {
    pub fn derive(keys: &KeyFile) -> Result<Self, CryptoError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"carevault/v1").extract(keys.cursor_root());
        let infos: [&[u8]; 1] = [b"audit-head-signing"];
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&infos, SeedLen)
            .and_then(|okm| okm.fill(seed.as_mut()))
            .map_err(|_| CryptoError::Integrity)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| CryptoError::Integrity)?;
        Ok(Self { pair })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn sign(&self, size: u64, root: &[u8; 32], at_millis: i64) -> Vec<u8> {
        self.pair.sign(&head_message(size, root, at_millis)).as_ref().to_vec()
    }
}

/// Whether `signature` is `public_key`'s signature of this head.
pub fn verify_head(public_key: &[u8; 32], size: u64, root: &[u8; 32], at_millis: i64, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&head_message(size, root, at_millis), signature)
        .is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SystemRandomSource;

    #[test]
    fn heads_verify_and_any_change_breaks_them() {
        let text = KeyFile::generate(&SystemRandomSource::new()).unwrap();
        let s = HeadSigner::derive(&KeyFile::parse(&text).unwrap()).unwrap();
        let root = [7u8; 32];
        let sig = s.sign(10, &root, 1000);
        let pk = s.public_key();
        assert!(verify_head(&pk, 10, &root, 1000, &sig));
        assert!(!verify_head(&pk, 9, &root, 1000, &sig));
        assert!(!verify_head(&pk, 10, &[8u8; 32], 1000, &sig));
        assert!(!verify_head(&pk, 10, &root, 1001, &sig));
        // not the access-token key
        let tokens = crate::TokenSigner::derive(&KeyFile::parse(&text).unwrap(), "default").unwrap();
        assert_ne!(tokens.public_jwk()["x"].as_str().unwrap().len(), 0);
        assert!(!verify_head(&[0u8; 32], 10, &root, 1000, &sig));
    }
}
