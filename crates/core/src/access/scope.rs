//! SMART on FHIR scopes (App Launch 2.x, with the v1 forms): parsed once into values, never
//! widened. A string that is not exactly one of the forms below is an error, not a guess.
//!
//! - clinical: `patient|user|system` `/` `Type|*` `.` permissions, where permissions are the
//!   letters `c r u d s` in that order (v2) or `read`, `write`, `*` (v1: `rs`, `cud`,
//!   `cruds`); a v2 scope may end in `?param=value&…` (granular, read and search only);
//! - context: `openid`, `fhirUser`, `profile`, `launch`, `launch/patient`, `launch/encounter`,
//!   `offline_access`, `online_access`.

use carevault_domain::ResourceType;
use std::fmt;

/// Who the scope speaks for: the patient in context, the signed-in user, or a backend system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Patient,
    User,
    System,
}

/// A set of the five SMART interactions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u8);

impl Perms {
    pub const CREATE: Perms = Perms(1);
    pub const READ: Perms = Perms(2);
    pub const UPDATE: Perms = Perms(4);
    pub const DELETE: Perms = Perms(8);
    pub const SEARCH: Perms = Perms(16);
    pub const NONE: Perms = Perms(0);
    pub const ALL: Perms = Perms(31);
    /// Read and search.
    pub const RS: Perms = Perms(2 | 16);

    pub const fn union(self, o: Perms) -> Perms {
        Perms(self.0 | o.0)
    }

    pub const fn intersect(self, o: Perms) -> Perms {
        Perms(self.0 & o.0)
    }

    pub const fn contains(self, o: Perms) -> bool {
        self.0 & o.0 == o.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `cruds` letters, in order.
    fn letters(self) -> String {
        "cruds"
            .chars()
            .enumerate()
            .filter(|(i, _)| self.0 & LETTER_BITS[*i] != 0)
            .map(|(_, c)| c)
            .collect()
    }
}

const LETTER_BITS: [u8; 5] = [1, 2, 4, 8, 16];

impl fmt::Debug for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Perms({})", self.letters())
    }
}

/// One clinical scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicalScope {
    pub level: Level,
    /// `None` for `*`.
    pub rtype: Option<ResourceType>,
    pub perms: Perms,
    /// Granular constraint (`?category=…`): decoded `(name, value)` pairs, all of which must hold.
    pub filter: Vec<(String, String)>,
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Clinical(ClinicalScope),
    OpenId,
    FhirUser,
    Profile,
    Launch,
    LaunchPatient,
    LaunchEncounter,
    OfflineAccess,
    OnlineAccess,
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("empty scope")]
    Empty,
    #[error("unknown scope {0:?}")]
    Unknown(String),
    #[error("scope {0:?}: the level must be patient, user or system")]
    Level(String),
    #[error("scope {0:?}: unknown resource type")]
    Type(String),
    #[error("scope {0:?}: permissions must be letters of cruds in that order, or read, write or *")]
    Perms(String),
    #[error("scope {0:?}: a granular constraint needs parameters and grants read and search only")]
    Filter(String),
}

/// Longest scope string accepted (a defence against pathological input, far above real use).
const MAX_SCOPE_LEN: usize = 512;

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s.is_empty() {
            return Err(ScopeError::Empty);
        }
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::Unknown(s.chars().take(32).collect()));
        }
        match s {
            "openid" => return Ok(Scope::OpenId),
            "fhirUser" => return Ok(Scope::FhirUser),
            "profile" => return Ok(Scope::Profile),
            "launch" => return Ok(Scope::Launch),
            "launch/patient" => return Ok(Scope::LaunchPatient),
            "launch/encounter" => return Ok(Scope::LaunchEncounter),
            "offline_access" => return Ok(Scope::OfflineAccess),
            "online_access" => return Ok(Scope::OnlineAccess),
            _ => {}
        }
        let Some((level, rest)) = s.split_once('/') else {
            return Err(ScopeError::Unknown(s.to_owned()));
        };
        let level = match level {
            "patient" => Level::Patient,
            "user" => Level::User,
            "system" => Level::System,
            _ => return Err(ScopeError::Level(s.to_owned())),
        };
        let (resource, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let Some((rtype, perms)) = resource.split_once('.') else {
            return Err(ScopeError::Perms(s.to_owned()));
        };
        let rtype = match rtype {
            "*" => None,
            name => Some(
                name.parse::<ResourceType>()
                    .map_err(|_| ScopeError::Type(s.to_owned()))?,
            ),
        };
        let (perms, v1) = match perms {
            "read" => (Perms::RS, true),
            "write" => (Perms::CREATE.union(Perms::UPDATE).union(Perms::DELETE), true),
            "*" => (Perms::ALL, true),
            letters => (
                parse_letters(letters).ok_or_else(|| ScopeError::Perms(s.to_owned()))?,
                false,
            ),
        };
        let filter = match query {
            None => Vec::new(),
            Some(q) => {
                if v1 || q.is_empty() || !Perms::RS.contains(perms) {
                    return Err(ScopeError::Filter(s.to_owned()));
                }
                parse_filter(q).ok_or_else(|| ScopeError::Filter(s.to_owned()))?
            }
        };
        Ok(Scope::Clinical(ClinicalScope {
            level,
            rtype,
            perms,
            filter,
        }))
    }
}

/// `cruds` letters in order, each at most once, at least one.
fn parse_letters(s: &str) -> Option<Perms> {
    let mut perms = Perms::NONE;
    let mut next = 0;
    for c in s.chars() {
        let i = "cruds".find(c)?;
        if i < next {
            return None;
        }
        perms = perms.union(Perms(LETTER_BITS[i]));
        next = i + 1;
    }
    (!perms.is_empty()).then_some(perms)
}

/// `name=value&…`, percent-decoded; every pair needs a name and a value.
fn parse_filter(q: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in q.split('&') {
        let (name, value) = part.split_once('=')?;
        let name = percent_decode(name)?;
        let value = percent_decode(value)?;
        if name.is_empty() || value.is_empty() || name.starts_with('_') {
            return None;
        }
        out.push((name, value));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Profile => f.write_str("profile"),
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::LaunchEncounter => f.write_str("launch/encounter"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
            Scope::Clinical(c) => {
                let level = match c.level {
                    Level::Patient => "patient",
                    Level::User => "user",
                    Level::System => "system",
                };
                let rtype = c.rtype.map_or("*", ResourceType::as_str);
                write!(f, "{level}/{rtype}.{}", c.perms.letters())?;
                for (i, (n, v)) in c.filter.iter().enumerate() {
                    let sep = if i == 0 { '?' } else { '&' };
                    write!(f, "{sep}{}={}", encode(n), encode(v))?;
                }
                Ok(())
            }
        }
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~|:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The scopes of a token or a request: space-separated, each parsed; one bad scope refuses
/// the whole set (a client asking for something malformed gets nothing rather than a guess).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut out: Vec<Scope> = Vec::new();
        for part in s.split(' ').filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part)?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        Ok(ScopeSet(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn contains(&self, s: &Scope) -> bool {
        self.0.contains(s)
    }

    /// The scopes of `self` that `allowed` covers: a clinical scope is covered by an allowed
    /// one at the same level on the same type (or `*`) with at least its permissions and no
    /// constraint it lacks; a context scope only by itself. What is not covered is dropped,
    /// never widened.
    pub fn narrowed_to(&self, allowed: &ScopeSet) -> ScopeSet {
        let covered = |s: &Scope| match s {
            Scope::Clinical(c) => allowed.0.iter().any(|a| match a {
                Scope::Clinical(a) => {
                    a.level == c.level
                        && (a.rtype.is_none() || a.rtype == c.rtype)
                        && a.perms.contains(c.perms)
                        && a.filter.iter().all(|f| c.filter.contains(f))
                }
                _ => false,
            }),
            other => allowed.0.contains(other),
        };
        ScopeSet(self.0.iter().filter(|s| covered(s)).cloned().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any clinical scope is at another level than `level`.
    pub fn has_clinical_outside(&self, level: Level) -> bool {
        self.0
            .iter()
            .any(|s| matches!(s, Scope::Clinical(c) if c.level != level))
    }

    /// The clinical scopes at `level`.
    pub fn clinical(&self, level: Level) -> impl Iterator<Item = &ClinicalScope> {
        self.0.iter().filter_map(move |s| match s {
            Scope::Clinical(c) if c.level == level => Some(c),
            _ => None,
        })
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}
