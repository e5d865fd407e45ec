//! Signed access tokens: compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037). The
//! signing key is derived (HKDF) from the key file per tenant, so it rotates with the key
//! file and needs no file of its own. Verification accepts exactly the header this module
//! writes: no `alg` negotiation, no `none`, no foreign keys.

use crate::{CryptoError, KeyFile};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use ring::{digest, hkdf};

/// The signing key of one tenant's access tokens.
pub struct TokenSigner {
    pair: Ed25519KeyPair,
    kid: String,
    header: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSigner({})", self.kid)
    }
}

struct SeedLen;

impl hkdf::KeyType for SeedLen {
    fn len(&self) -> usize {
        32
    }
}

impl TokenSigner {
    pub fn derive(keys: &KeyFile, tenant: &str) -> Result<Self, CryptoError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"carevault/v1").extract(keys.cursor_root());
        let info = format!("token-signing|{tenant}");
        let infos = [info.as_bytes()];
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&infos, SeedLen)
            .and_then(|okm| okm.fill(seed.as_mut()))
            .map_err(|_| CryptoError::Integrity)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| CryptoError::Integrity)?;
        let thumb = digest::digest(&digest::SHA256, pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&thumb.as_ref()[..12]);
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#));
        Ok(Self { pair, kid, header })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (for the JWKS endpoint).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
        })
    }

    /// A compact JWS over `claims` (a JSON object, serialised by the caller).
    pub fn sign(&self, claims: &[u8]) -> String {
        let signing_input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let sig = self.pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// The claims of a token this signer made; anything else is `Integrity`. Expiry and the
    /// claims' meaning are the caller's to check.
    pub fn verify(&self, token: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Integrity);
        };
        if header != self.header {
            return Err(CryptoError::Integrity);
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| CryptoError::Integrity)?;
        let signing_input = &token[..header.len() + 1 + claims.len()];
        UnparsedPublicKey::new(&ED25519, self.pair.public_key().as_ref())
            .verify(signing_input.as_bytes(), &sig)
            .map_err(|_| CryptoError::Integrity)?;
        URL_SAFE_NO_PAD.decode(claims).map_err(|_| CryptoError::Integrity)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SystemRandomSource;

    fn signer(tenant: &str) -> TokenSigner {
        let text = KeyFile::generate(&SystemRandomSource::new()).unwrap();
        TokenSigner::derive(&KeyFile::parse(&text).unwrap(), tenant).unwrap()
    }

    #[test]
    fn signs_and_verifies_and_refuses_anything_else() {
        let s = signer("t");
        let token = s.sign(br#"{"sub":"u1"}"#);
        assert_eq!(s.verify(&token).unwrap(), br#"{"sub":"u1"}"#);
        // another key, a changed claim, a changed header, alg none, truncation
        assert!(signer("t").verify(&token).is_err());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(br#"{"sub":"u2"}"#),
            parts[2]
        );
        assert!(s.verify(&forged).is_err());
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(s.verify(&format!("{none}.{}.", parts[1])).is_err());
        assert!(s.verify(&format!("{}.{}", parts[0], parts[1])).is_err());
        assert!(s.verify(&format!("{token}.x")).is_err());
        assert_eq!(s.public_jwk()["kid"], s.kid());
    }
}
