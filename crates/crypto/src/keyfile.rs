//! The key file: the key-encryption keys (versioned) and the root secrets of the other key
//! families, one purpose each. Text, one key a line: `<purpose> <version> <base64>`.

use crate::{CryptoError, RandomSource};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use zeroize::Zeroizing;

/// A key-encryption key's version, stored beside every wrapped data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyVersion(pub u32);

/// A key-encryption key. It only ever wraps and unwraps data keys.
pub struct Kek {
    pub(crate) version: KeyVersion,
    pub(crate) key: LessSafeKey,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek(v{})", self.version.0)
    }
}

impl Kek {
    pub fn version(&self) -> KeyVersion {
        self.version
    }
}

const PURPOSES: &[&str] = &["kek", "index", "cursor"];

/// The parsed key file. Root secrets are held in zeroizing buffers.
pub struct KeyFile {
    keks: Vec<Kek>,
    index_root: Zeroizing<[u8; 32]>,
    cursor_root: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFile({} kek versions, secrets redacted)", self.keks.len())
    }
}

impl KeyFile {
    /// Text of a brand-new key file with one key of each purpose.
    pub fn generate(rng: &dyn RandomSource) -> Result<Zeroizing<String>, CryptoError> {
        let mut text = Zeroizing::new(String::from(
            "# carevault key file. Whoever holds this file and the database can read every record.\n\
             # Keep it out of backups of the database, readable by the server's user only (0600).\n",
        ));
        for purpose in PURPOSES {
            let mut k = Zeroizing::new([0u8; 32]);
            rng.fill(k.as_mut())?;
            let b64 = Zeroizing::new(STANDARD.encode(k.as_ref()));
            text.push_str(&format!("{purpose} 1 {}\n", b64.as_str()));
        }
        Ok(text)
    }

    /// Parses key-file text. Every purpose must be present; KEKs may have several versions,
    /// the highest is current.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let mut keks = Vec::new();
        let mut index_root = None;
        let mut cursor_root = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || CryptoError::KeyFile(format!("line {} is not `<purpose> <version> <base64>`", n + 1));
            let mut parts = line.split_whitespace();
            let (Some(purpose), Some(version), Some(b64), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let version: u32 = version.parse().map_err(|_| bad())?;
            let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| bad())?);
            if raw.len() != 32 {
                return Err(CryptoError::KeyFile(format!("line {}: a key is 32 bytes", n + 1)));
            }
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(&raw);
            match purpose {
                "kek" => {
                    let unbound = UnboundKey::new(&AES_256_GCM, k.as_ref()).map_err(|_| bad())?;
                    keks.push(Kek {
                        version: KeyVersion(version),
                        key: LessSafeKey::new(unbound),
                    });
                }
                "index" => index_root = Some(k),
                "cursor" => cursor_root = Some(k),
                _ => {
                    return Err(CryptoError::KeyFile(format!("line {}: unknown purpose", n + 1)));
                }
            }
        }
        keks.sort_by_key(|k| k.version);
        let (Some(index_root), Some(cursor_root)) = (index_root, cursor_root) else {
            return Err(CryptoError::KeyFile(
                "an `index` and a `cursor` key are required".into(),
            ));
        };
        if keks.is_empty() {
            return Err(CryptoError::KeyFile("no `kek` key".into()));
        }
        Ok(Self {
            keks,
            index_root,
            cursor_root,
        })
    }

    /// The current (highest-versioned) KEK, used for new wraps.
    pub fn current_kek(&self) -> &Kek {
        // `parse` guarantees at least one.
        &self.keks[self.keks.len() - 1]
    }

    pub fn kek(&self, v: KeyVersion) -> Result<&Kek, CryptoError> {
        self.keks
            .iter()
            .find(|k| k.version == v)
            .ok_or(CryptoError::UnknownKekVersion(v.0))
    }

    pub(crate) fn index_root(&self) -> &[u8; 32] {
        &self.index_root
    }

    pub(crate) fn cursor_root(&self) -> &[u8; 32] {
        &self.cursor_root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemRandomSource;

    #[test]
    fn generated_files_parse_and_bad_ones_do_not() {
        let rng = SystemRandomSource::new();
        let text = KeyFile::generate(&rng).unwrap_or_else(|_| Zeroizing::new(String::new()));
        let kf = KeyFile::parse(&text);
        assert!(kf.is_ok());
        assert!(!format!("{kf:?}").contains(text.lines().nth(2).unwrap_or("x").split(' ').next_back().unwrap_or("x")));
        assert!(KeyFile::parse("kek 1 AAAA").is_err());
        assert!(KeyFile::parse("").is_err());
        assert!(KeyFile::parse("junk").is_err());
    }
}
