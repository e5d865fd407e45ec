//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA1, 30-second steps, six
//! digits — what every authenticator app speaks. SHA-1 is acceptable here: HOTP needs only
//! HMAC's pseudo-randomness, not collision resistance.

use crate::{CryptoError, RandomSource};
use ring::hmac;
use zeroize::Zeroizing;

/// Seconds per time step.
pub const TOTP_STEP_SECS: i64 = 30;
const DIGITS: u32 = 6;
const SECRET_BYTES: usize = 20;

/// A shared TOTP secret (160 bits, as RFC 4226 recommends).
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    pub fn generate(rng: &dyn RandomSource) -> Result<Self, CryptoError> {
        let mut raw = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rng.fill(&mut raw)?;
        Ok(Self(raw))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in base32 without padding, as authenticator apps take it.
    pub fn base32(&self) -> String {
        base32_encode(&self.0)
    }

    /// The `otpauth://` URI an authenticator app scans.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={TOTP_STEP_SECS}",
            enc(issuer),
            enc(account),
            self.base32(),
            enc(issuer)
        )
    }

    /// The code of time step `step` (HOTP with the step as counter).
    pub fn code_at(&self, step: i64) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let tag = hmac::sign(&key, &step.to_be_bytes());
        let mac = tag.as_ref();
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let bin = (u32::from(mac[offset] & 0x7f) << 24)
            | (u32::from(mac[offset + 1]) << 16)
            | (u32::from(mac[offset + 2]) << 8)
            | u32::from(mac[offset + 3]);
        bin % 10u32.pow(DIGITS)
    }

    /// The step a presented code belongs to, if it is the code of the current step or one
    /// step either side (clock drift) and later than `last_step` (each code is good once).
    pub fn verify(&self, code: &str, now_secs: i64, last_step: i64) -> Option<i64> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let presented: u32 = code.parse().ok()?;
        let now = now_secs.div_euclid(TOTP_STEP_SECS);
        let mut found = None;
        // Every candidate is computed, so the time taken does not say which one matched.
        for step in [now - 1, now, now + 1] {
            let ok = crate::constant_time_eq(&self.code_at(step).to_be_bytes(), &presented.to_be_bytes());
            if ok && step > last_step && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, no padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column (eight digits there; six here are its last six).
    #[test]
    fn rfc6238_vectors() {
        let s = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (t, eight) in [
            (59, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(s.code_at(t / 30), eight % 1_000_000, "t = {t}");
        }
    }

    #[test]
    fn verify_accepts_drift_once_and_refuses_the_rest() {
        let s = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let now = 1_234_567_890;
        let step = now / 30;
        let code = format!("{:06}", s.code_at(step));
        assert_eq!(s.verify(&code, now, 0), Some(step));
        assert_eq!(s.verify(&code, now, step), None, "used once");
        assert_eq!(s.verify(&code, now + 30, 0), Some(step), "one step of drift");
        assert_eq!(s.verify(&code, now + 90, 0), None, "too old");
        assert_eq!(s.verify("12345", now, 0), None);
        assert_eq!(s.verify("abcdef", now, 0), None);
    }

    #[test]
    fn base32_round_trips_rfc4648_vectors() {
        for (plain, enc) in [("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foobar", "MZXW6YTBOI")] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
        }
        let s = TotpSecret::from_bytes(vec![7; 20]);
        assert!(
            s.otpauth_uri("carevault", "dr.who")
                .starts_with("otpauth://totp/carevault:dr.who?secret=")
        );
    }
}
