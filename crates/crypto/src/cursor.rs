//! Sealed paging cursors: a search's terms and position travel inside `next`/`previous`
//! links encrypted and authenticated (AES-256-GCM under a key derived from the key file's
//! `cursor` root), so links carry no search terms and cannot be forged or altered.

use crate::{CryptoError, KeyFile, RandomSource};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;

/// The cursor key of one tenant.
pub struct CursorKey(LessSafeKey);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    pub fn derive(keys: &KeyFile, tenant: &str) -> Result<Self, CryptoError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"carevault/v1").extract(keys.cursor_root());
        let info = format!("cursor-aead|{tenant}");
        let infos = [info.as_bytes()];
        let okm = prk.expand(&infos, &AES_256_GCM).map_err(|_| CryptoError::Integrity)?;
        Ok(Self(LessSafeKey::new(UnboundKey::from(okm))))
    }

    /// `plaintext` sealed for `context` (e.g. the resource type), as URL-safe text.
    pub fn seal(&self, rng: &dyn RandomSource, context: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)?;
        let mut body = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| CryptoError::Integrity)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a cursor sealed for the same `context`; anything else is `Integrity`.
    pub fn open(&self, context: &str, text: &str) -> Result<Vec<u8>, CryptoError> {
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| CryptoError::Integrity)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptoError::Integrity);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Integrity)?;
        let mut buf = body.to_vec();
        let n = self
            .0
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Integrity)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemRandomSource;

    #[test]
    fn round_trip_and_tamper() -> Result<(), CryptoError> {
        let rng = SystemRandomSource::new();
        let kf = KeyFile::parse(&KeyFile::generate(&rng)?)?;
        let k = CursorKey::derive(&kf, "default")?;
        let c = k.seal(&rng, "Patient", b"name=smith")?;
        assert!(!c.contains("smith"));
        assert_eq!(k.open("Patient", &c)?, b"name=smith");
        assert!(k.open("Observation", &c).is_err());
        let mut bad = c.clone().into_bytes();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        assert!(k.open("Patient", &String::from_utf8_lossy(&bad)).is_err());
        Ok(())
    }
}
