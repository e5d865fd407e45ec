//! Keyed blind-index tags: HMAC-SHA256 under a key derived (HKDF) per tenant and per index
//! from the key file's `index` root, truncated to 16 bytes. Equal normalized inputs give
//! equal tags; without the key a tag reveals nothing about its input.

use crate::KeyFile;
use ring::{hkdf, hmac};

/// A truncated HMAC tag as stored in an index table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlindTag(pub [u8; 16]);

/// An HMAC key for one index of one tenant.
#[derive(Clone)]
pub struct IndexKey(hmac::Key);

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

struct HmacLen;

impl hkdf::KeyType for HmacLen {
    fn len(&self) -> usize {
        32
    }
}

fn derive(root: &[u8; 32], label: &str) -> hmac::Key {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"carevault/v1");
    let prk = salt.extract(root);
    let info = [label.as_bytes()];
    let mut out = [0u8; 32];
    let filled = prk.expand(&info, HmacLen).and_then(|okm| okm.fill(&mut out));
    // HKDF-SHA256 can always produce 32 bytes; should it not, fall back to a key that still
    // depends on the root and label rather than aborting.
    if filled.is_err() {
        let k = hmac::Key::new(hmac::HMAC_SHA256, root);
        out.copy_from_slice(&hmac::sign(&k, label.as_bytes()).as_ref()[..32]);
    }
    hmac::Key::new(hmac::HMAC_SHA256, &out)
}

impl IndexKey {
    /// The key for index `index` (e.g. `identifier`) of `tenant`.
    pub fn derive(keys: &KeyFile, tenant: &str, index: &str) -> Self {
        Self(derive(keys.index_root(), &format!("index|{tenant}|{index}")))
    }

    /// The key that signs paging cursors of `tenant`.
    pub fn cursor(keys: &KeyFile, tenant: &str) -> Self {
        Self(derive(keys.cursor_root(), &format!("cursor|{tenant}")))
    }

    pub fn tag(&self, normalized: &[u8]) -> BlindTag {
        let full = hmac::sign(&self.0, normalized);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full.as_ref()[..16]);
        BlindTag(out)
    }

    /// Full-length MAC, for integrity-protected values such as cursors.
    pub fn mac(&self, data: &[u8]) -> Vec<u8> {
        hmac::sign(&self.0, data).as_ref().to_vec()
    }

    pub fn verify(&self, data: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.0, data, mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CryptoError, SystemRandomSource};

    #[test]
    fn tags_are_keyed_and_separated() -> Result<(), CryptoError> {
        let rng = SystemRandomSource::new();
        let kf = KeyFile::parse(&KeyFile::generate(&rng)?)?;
        let other = KeyFile::parse(&KeyFile::generate(&rng)?)?;
        let a = IndexKey::derive(&kf, "default", "identifier");
        assert_eq!(a.tag(b"x|1"), a.tag(b"x|1"));
        assert_ne!(a.tag(b"x|1"), a.tag(b"x|2"));
        assert_ne!(a.tag(b"x|1"), IndexKey::derive(&kf, "default", "name").tag(b"x|1"));
        assert_ne!(a.tag(b"x|1"), IndexKey::derive(&kf, "other", "identifier").tag(b"x|1"));
        assert_ne!(
            a.tag(b"x|1"),
            IndexKey::derive(&other, "default", "identifier").tag(b"x|1")
        );
        let c = IndexKey::cursor(&kf, "default");
        let m = c.mac(b"page");
        assert!(c.verify(b"page", &m));
        assert!(!c.verify(b"pagf", &m));
        Ok(())
    }
}
