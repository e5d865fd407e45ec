//! Password hashing: Argon2id (RFC 9106) with OWASP's parameters (19 MiB, 2 passes, one
//! lane), a random 16-byte salt from the injected random source, stored as a PHC string.

use crate::{CryptoError, RandomSource};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

/// A password as typed: never printed, wiped when dropped.
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn hasher() -> Result<Argon2<'static>, CryptoError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|_| CryptoError::Integrity)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string of `password` under a fresh salt.
pub fn hash_password(rng: &dyn RandomSource, password: &Password) -> Result<String, CryptoError> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| CryptoError::Integrity)?;
    let hash = hasher()?
        .hash_password(password.0.as_bytes(), &salt)
        .map_err(|_| CryptoError::Integrity)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string (constant time in the hash comparison;
/// a malformed stored string never matches).
pub fn verify_password(phc: &str, password: &Password) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(h) = hasher() else { return false };
    h.verify_password(password.0.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SystemRandomSource;

    #[test]
    fn hashes_verify_and_differ_per_salt() {
        let rng = SystemRandomSource::new();
        let pw = Password::new("correct horse battery staple".into());
        let a = hash_password(&rng, &pw).unwrap();
        let b = hash_password(&rng, &pw).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify_password(&a, &pw));
        assert!(!verify_password(
            &a,
            &Password::new("correct horse battery stapl".into())
        ));
        assert!(!verify_password("not a phc string", &pw));
    }
}
