//! Identifier newtypes. Each is built by parsing, so a value is always well formed.

use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a resource id is 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'")]
    BadResourceId,
    #[error("a version id is a positive whole number")]
    BadVersionId,
    #[error("a tenant id is 1 to 32 characters of a-z, 0-9 and '-'")]
    BadTenantId,
}

/// A FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`). Ids the server assigns are random; an id a
/// client supplies is kept as given, so clients must not put identifying data into ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadResourceId)
        }
    }

    /// A fresh id from 16 random bytes, written as a lowercase UUID-shaped string.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut b = bytes;
        // Mark it as a version-4 UUID so tools that sniff ids recognise it.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Self(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resource version: 1 for the first, then 2, 3, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(u64);

impl VersionId {
    pub const FIRST: VersionId = VersionId(1);

    pub fn new(n: u64) -> Result<Self, IdError> {
        if n == 0 {
            Err(IdError::BadVersionId)
        } else {
            Ok(Self(n))
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        s.parse::<u64>().map_err(|_| IdError::BadVersionId).and_then(Self::new)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The tenant a row belongs to. One deployment serves one tenant today (`default`); every
/// row and every associated-data string already carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadTenantId)
        }
    }

    pub fn default_tenant() -> Self {
        Self("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids() {
        assert!(ResourceId::parse("example").is_ok());
        assert!(ResourceId::parse("a.b-C9").is_ok());
        assert!(ResourceId::parse("").is_err());
        assert!(ResourceId::parse("has space").is_err());
        assert!(ResourceId::parse("../etc").is_err());
        assert!(ResourceId::parse(&"x".repeat(65)).is_err());
        let r = ResourceId::from_random([0xab; 16]);
        assert_eq!(r.as_str().len(), 36);
        assert!(ResourceId::parse(r.as_str()).is_ok());
    }

    #[test]
    fn versions() {
        assert!(VersionId::parse("0").is_err());
        assert!(VersionId::parse("-1").is_err());
        assert_eq!(VersionId::parse("3").map(VersionId::get), Ok(3));
        assert_eq!(VersionId::FIRST.next().get(), 2);
    }
}
