//! Data keys: generated per patient compartment (or per tenant), stored only wrapped by the
//! KEK, and used to seal resource bodies with associated data that binds each ciphertext to
//! the row it lives in.

use crate::{CryptoError, KeyFile, KeyVersion, RandomSource};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// Where a ciphertext lives. Every field goes into the associated data, length-prefixed, so
/// a ciphertext copied to any other row (another id, version, type, patient, tenant or key)
/// fails to open.
#[derive(Debug, Clone, Copy)]
pub struct RowBinding<'a> {
    pub tenant: &'a str,
    pub rtype: &'a str,
    pub id: &'a str,
    pub version: u64,
    /// The patient compartment's id, or empty for the tenant key.
    pub patient: &'a str,
    pub key_id: i64,
}

impl RowBinding<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"carevault/row/v1");
        for part in [self.tenant, self.rtype, self.id, self.patient] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out
    }
}

/// A data key as stored: wrapped by a KEK of the given version.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kek_version: KeyVersion,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedKey(kek v{})", self.kek_version.0)
    }
}

/// An unwrapped data key, ready to seal and open. Its bytes were zeroized after loading.
pub struct DataKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn wrap_aad(tenant: &str, scope: &str) -> Vec<u8> {
    let mut out = b"carevault/dek/v1".to_vec();
    for part in [tenant, scope] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn seal_with(key: &LessSafeKey, rng: &dyn RandomSource, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .map_err(|_| CryptoError::Integrity)?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(CryptoError::Integrity);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Integrity)?;
    let mut buf = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Integrity)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

impl DataKey {
    /// A fresh data key for `scope` (a patient id, or empty for the tenant key), returned with
    /// its wrapped form for storage.
    pub fn generate(
        keys: &KeyFile,
        rng: &dyn RandomSource,
        tenant: &str,
        scope: &str,
    ) -> Result<(DataKey, WrappedKey), CryptoError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rng.fill(raw.as_mut())?;
        let kek = keys.current_kek();
        let bytes = seal_with(&kek.key, rng, &wrap_aad(tenant, scope), raw.as_ref())?;
        let key = Self::from_raw(raw.as_ref())?;
        Ok((
            key,
            WrappedKey {
                kek_version: kek.version,
                bytes,
            },
        ))
    }

    /// Unwraps a stored data key; fails if it was wrapped for another tenant or scope.
    pub fn unwrap(keys: &KeyFile, tenant: &str, scope: &str, wrapped: &WrappedKey) -> Result<DataKey, CryptoError> {
        let kek = keys.kek(wrapped.kek_version)?;
        let raw = Zeroizing::new(open_with(&kek.key, &wrap_aad(tenant, scope), &wrapped.bytes)?);
        Self::from_raw(&raw)
    }

    /// Re-wraps a stored data key under the current KEK (rotation without re-encrypting data).
    pub fn rewrap(
        keys: &KeyFile,
        rng: &dyn RandomSource,
        tenant: &str,
        scope: &str,
        wrapped: &WrappedKey,
    ) -> Result<WrappedKey, CryptoError> {
        let old = keys.kek(wrapped.kek_version)?;
        let raw = Zeroizing::new(open_with(&old.key, &wrap_aad(tenant, scope), &wrapped.bytes)?);
        let kek = keys.current_kek();
        let bytes = seal_with(&kek.key, rng, &wrap_aad(tenant, scope), &raw)?;
        Ok(WrappedKey {
            kek_version: kek.version,
            bytes,
        })
    }

    fn from_raw(raw: &[u8]) -> Result<DataKey, CryptoError> {
        let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| CryptoError::Integrity)?;
        Ok(DataKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Seals `plaintext` for the row `at`: `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, rng: &dyn RandomSource, at: &RowBinding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.key, rng, &at.encode(), plaintext)
    }

    /// Opens a ciphertext sealed for the row `at`; any mismatch fails closed.
    pub fn open(&self, at: &RowBinding<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.key, &at.encode(), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemRandomSource;

    fn setup() -> Result<(KeyFile, SystemRandomSource), CryptoError> {
        let rng = SystemRandomSource::new();
        let kf = KeyFile::parse(&KeyFile::generate(&rng)?)?;
        Ok((kf, rng))
    }

    fn row(id: &str, version: u64) -> RowBinding<'_> {
        RowBinding {
            tenant: "default",
            rtype: "Patient",
            id,
            version,
            patient: id,
            key_id: 7,
        }
    }

    #[test]
    fn seal_open_and_binding() -> Result<(), CryptoError> {
        let (kf, rng) = setup()?;
        let (dk, wrapped) = DataKey::generate(&kf, &rng, "default", "p1")?;
        let sealed = dk.seal(&rng, &row("p1", 1), b"{\"name\":\"x\"}")?;
        assert_eq!(dk.open(&row("p1", 1), &sealed)?, b"{\"name\":\"x\"}");
        assert!(dk.open(&row("p1", 2), &sealed).is_err(), "another version");
        assert!(dk.open(&row("p2", 1), &sealed).is_err(), "another row");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(dk.open(&row("p1", 1), &flipped).is_err(), "bit flip");
        assert!(dk.open(&row("p1", 1), &sealed[..10]).is_err(), "truncated");
        let again = DataKey::unwrap(&kf, "default", "p1", &wrapped)?;
        assert_eq!(again.open(&row("p1", 1), &sealed)?, b"{\"name\":\"x\"}");
        assert!(
            DataKey::unwrap(&kf, "default", "p2", &wrapped).is_err(),
            "key moved to another patient"
        );
        let re = DataKey::rewrap(&kf, &rng, "default", "p1", &wrapped)?;
        assert_ne!(re.bytes, wrapped.bytes);
        assert!(DataKey::unwrap(&kf, "default", "p1", &re).is_ok());
        Ok(())
    }

    #[test]
    fn another_key_cannot_open() -> Result<(), CryptoError> {
        let (kf, rng) = setup()?;
        let (a, _) = DataKey::generate(&kf, &rng, "default", "p1")?;
        let (b, _) = DataKey::generate(&kf, &rng, "default", "p1")?;
        let sealed = a.seal(&rng, &row("p1", 1), b"secret")?;
        assert!(b.open(&row("p1", 1), &sealed).is_err());
        Ok(())
    }
}
