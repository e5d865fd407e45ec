//! Signed client assertions (RFC 7523, SMART Backend Services): a backend client proves who
//! it is with a JWS signed by a key whose public half it registered as a JWK Set. The
//! algorithms SMART names (RS384, ES384) and EdDSA are accepted; nothing else, never `none`.

use crate::CryptoError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA384, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::Value;

fn b64(v: &Value) -> Result<Vec<u8>, CryptoError> {
    let s = v.as_str().ok_or(CryptoError::Integrity)?;
    URL_SAFE_NO_PAD.decode(s).map_err(|_| CryptoError::Integrity)
}

/// The key of `jwks` a header names: by `kid` when it has one, else the only key that fits
/// the algorithm.
fn pick<'a>(jwks: &'a Value, kid: Option<&str>, kty: &str) -> Result<&'a Value, CryptoError> {
    let keys = jwks["keys"].as_array().ok_or(CryptoError::Integrity)?;
    let mut fitting = keys.iter().filter(|k| k["kty"] == kty);
    match kid {
        Some(kid) => fitting.find(|k| k["kid"] == kid).ok_or(CryptoError::Integrity),
        None => match (fitting.next(), fitting.next()) {
            (Some(k), None) => Ok(k),
            _ => Err(CryptoError::Integrity),
        },
    }
}

/// Whether a JWK Set holds at least one key this module can verify with.
pub fn jwks_usable(jwks: &Value) -> bool {
    jwks["keys"].as_array().is_some_and(|keys| {
        keys.iter().any(|k| match k["kty"].as_str() {
            Some("RSA") => b64(&k["n"]).is_ok() && b64(&k["e"]).is_ok(),
            Some("EC") => k["crv"] == "P-384" && b64(&k["x"]).is_ok() && b64(&k["y"]).is_ok(),
            Some("OKP") => k["crv"] == "Ed25519" && b64(&k["x"]).is_ok(),
            _ => false,
        })
    })
}

/// The claims of a compact JWS signed by a key of `jwks`; the caller checks their meaning
/// (issuer, audience, expiry, replay).
pub fn verify_assertion(token: &str, jwks: &Value) -> Result<Vec<u8>, CryptoError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Integrity);
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| CryptoError::Integrity)?)
            .map_err(|_| CryptoError::Integrity)?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| CryptoError::Integrity)?;
    let message = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    let kid = header["kid"].as_str();
    match header["alg"].as_str() {
        Some("RS384") => {
            let k = pick(jwks, kid, "RSA")?;
            RsaPublicKeyComponents {
                n: b64(&k["n"])?,
                e: b64(&k["e"])?,
            }
            .verify(&RSA_PKCS1_2048_8192_SHA384, message, &sig)
            .map_err(|_| CryptoError::Integrity)?;
        }
        Some("ES384") => {
            let k = pick(jwks, kid, "EC")?;
            if k["crv"] != "P-384" {
                return Err(CryptoError::Integrity);
            }
            let mut point = vec![4u8];
            point.extend(b64(&k["x"])?);
            point.extend(b64(&k["y"])?);
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
                .verify(message, &sig)
                .map_err(|_| CryptoError::Integrity)?;
        }
        Some("EdDSA") => {
            let k = pick(jwks, kid, "OKP")?;
            UnparsedPublicKey::new(&ED25519, b64(&k["x"])?)
                .verify(message, &sig)
                .map_err(|_| CryptoError::Integrity)?;
        }
        _ => return Err(CryptoError::Integrity),
    }
    URL_SAFE_NO_PAD.decode(claims_b64).map_err(|_| CryptoError::Integrity)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn es384() -> (EcdsaKeyPair, Value) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let public = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-384", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&public[1..49]),
            "y": URL_SAFE_NO_PAD.encode(&public[49..]),
        }]});
        (pair, jwks)
    }

    fn sign(pair: &EcdsaKeyPair, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn es384_assertions_verify_and_forgeries_do_not() {
        let (pair, jwks) = es384();
        assert!(jwks_usable(&jwks));
        let token = sign(&pair, r#"{"alg":"ES384","kid":"k1","typ":"JWT"}"#, r#"{"iss":"c"}"#);
        assert_eq!(verify_assertion(&token, &jwks).unwrap(), br#"{"iss":"c"}"#);
        let (other, other_jwks) = es384();
        assert!(verify_assertion(&token, &other_jwks).is_err(), "another client's key");
        let wrong_kid = sign(&pair, r#"{"alg":"ES384","kid":"k2"}"#, "{}");
        assert!(verify_assertion(&wrong_kid, &jwks).is_err());
        let by_other = sign(&other, r#"{"alg":"ES384","kid":"k1"}"#, "{}");
        assert!(verify_assertion(&by_other, &jwks).is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert!(verify_assertion(&none, &jwks).is_err());
        let hs = sign(&pair, r#"{"alg":"HS256","kid":"k1"}"#, "{}");
        assert!(verify_assertion(&hs, &jwks).is_err());
        assert!(!jwks_usable(
            &serde_json::json!({"keys": [{"kty": "oct", "k": "AAAA"}]})
        ));
    }
}
