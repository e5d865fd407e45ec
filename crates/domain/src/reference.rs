//! FHIR `Reference.reference` strings and what they point at.

use crate::{ResourceId, ResourceType, VersionId};

/// A parsed `Reference.reference` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `Type/id` or `Type/id/_history/v`, relative to this server.
    Local {
        rtype: ResourceType,
        id: ResourceId,
        version: Option<VersionId>,
    },
    /// `urn:uuid:...` or `urn:oid:...`, resolved inside a bundle.
    Urn(String),
    /// `#id`, a contained resource.
    Contained(String),
    /// `Type?search`, a conditional reference resolved when a bundle is processed.
    Conditional { rtype: ResourceType, query: String },
    /// Anything else (an absolute URL to another server, say): kept as is.
    Other(String),
}

impl Reference {
    pub fn parse(s: &str) -> Reference {
        if s.starts_with("urn:uuid:") || s.starts_with("urn:oid:") {
            return Reference::Urn(s.to_owned());
        }
        if let Some(rest) = s.strip_prefix('#') {
            return Reference::Contained(rest.to_owned());
        }
        if let Some((head, query)) = s.split_once('?') {
            if let Ok(rtype) = head.parse::<ResourceType>() {
                return Reference::Conditional {
                    rtype,
                    query: query.to_owned(),
                };
            }
            return Reference::Other(s.to_owned());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let local = match parts.as_slice() {
            [t, id] => Self::local(t, id, None),
            [t, id, "_history", v] => Self::local(t, id, Some(v)),
            _ => None,
        };
        local.unwrap_or_else(|| Reference::Other(s.to_owned()))
    }

    fn local(t: &str, id: &str, v: Option<&str>) -> Option<Reference> {
        let rtype = t.parse::<ResourceType>().ok()?;
        let id = ResourceId::parse(id).ok()?;
        let version = match v {
            Some(v) => Some(VersionId::parse(v).ok()?),
            None => None,
        };
        Some(Reference::Local { rtype, id, version })
    }

    /// The id of the patient this reference names, if it names one on this server.
    pub fn patient_id(&self) -> Option<&ResourceId> {
        match self {
            Reference::Local {
                rtype: ResourceType::Patient,
                id,
                ..
            } => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        assert!(matches!(
            Reference::parse("Patient/123"),
            Reference::Local {
                rtype: ResourceType::Patient,
                ..
            }
        ));
        assert!(matches!(
            Reference::parse("Observation/a/_history/2"),
            Reference::Local { version: Some(_), .. }
        ));
        assert_eq!(Reference::parse("urn:uuid:x"), Reference::Urn("urn:uuid:x".into()));
        assert_eq!(Reference::parse("#cov"), Reference::Contained("cov".into()));
        assert!(matches!(
            Reference::parse("Practitioner?identifier=a|b"),
            Reference::Conditional {
                rtype: ResourceType::Practitioner,
                ..
            }
        ));
        assert!(matches!(Reference::parse("Nope/1"), Reference::Other(_)));
        assert!(matches!(Reference::parse("http://x/y/Patient/1"), Reference::Other(_)));
    }
}
