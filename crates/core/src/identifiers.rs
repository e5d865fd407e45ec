//! Finding resources by identifier through the blind index: conditional create
//! (`If-None-Exist`), conditional references and conditional writes in bundles.

use crate::{CoreError, Session};
use carevault_crypto::IndexKey;
use carevault_domain::query::parse_query;
use carevault_domain::{Resource, ResourceId, ResourceType};
use carevault_storage::{ResourceKey, Store};

/// A conditional query limited to what the blind identifier index answers: `_id` and
/// `identifier` (`system|value`, `|value` or `value`), joined with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierQuery {
    pub id: Option<ResourceId>,
    pub identifiers: Vec<(Option<String>, String)>,
}

impl IdentifierQuery {
    pub fn parse(query: &str) -> Result<Self, CoreError> {
        let pairs = parse_query(query).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let mut q = IdentifierQuery {
            id: None,
            identifiers: Vec::new(),
        };
        for (name, value) in pairs {
            match name.as_str() {
                "_id" => {
                    let id = ResourceId::parse(&value).map_err(|e| CoreError::Invalid(e.to_string()))?;
                    q.id = Some(id);
                }
                "identifier" => {
                    let (system, value) = match value.split_once('|') {
                        Some((s, v)) => (Some(s.to_owned()), v.to_owned()),
                        None => (None, value),
                    };
                    if value.is_empty() {
                        return Err(CoreError::Invalid("an identifier condition needs a value".into()));
                    }
                    q.identifiers.push((system, value));
                }
                _ => {
                    return Err(CoreError::Invalid(
                        "conditional operations accept only `_id` and `identifier` parameters".into(),
                    ));
                }
            }
        }
        if q.id.is_none() && q.identifiers.is_empty() {
            return Err(CoreError::Invalid(
                "a conditional operation needs at least one condition".into(),
            ));
        }
        Ok(q)
    }

    /// Does an in-memory resource (not yet stored) satisfy the query?
    pub fn matches(&self, resource: &Resource, id: &ResourceId) -> bool {
        if self.id.as_ref().is_some_and(|want| want != id) {
            return false;
        }
        let have = resource.identifiers();
        self.identifiers.iter().all(|(system, value)| {
            have.iter()
                .any(|(s, v)| v == value && system.as_ref().is_none_or(|want| want == s))
        })
    }
}

fn system_value_tag(system: &str, value: &str) -> Vec<u8> {
    let mut out = b"sv\0".to_vec();
    out.extend_from_slice(system.as_bytes());
    out.push(0);
    out.extend_from_slice(value.as_bytes());
    out
}

fn value_tag(value: &str) -> Vec<u8> {
    let mut out = b"v\0".to_vec();
    out.extend_from_slice(value.as_bytes());
    out
}

/// The blind tags a resource's identifiers are indexed under.
pub(crate) fn identifier_tags(key: &IndexKey, body: &serde_json::Value) -> Vec<Vec<u8>> {
    let mut tags = Vec::new();
    for (system, value) in carevault_domain::resource::identifiers_of(body) {
        for input in [system_value_tag(&system, &value), value_tag(&value)] {
            let t = key.tag(&input).0.to_vec();
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    tags
}

impl<S: Store> Session<'_, S> {
    /// Live resources of `rtype` that satisfy `q`, by id.
    pub async fn find(&self, rtype: ResourceType, q: &IdentifierQuery) -> Result<Vec<ResourceId>, CoreError> {
        self.require(rtype, crate::access::Perms::SEARCH)?;
        let tenant = self.tenant.as_str();
        let mut candidates: Option<Vec<String>> = None;
        for (system, value) in &q.identifiers {
            let input = match system {
                Some(s) => system_value_tag(s, value),
                None => value_tag(value),
            };
            let tag = self.identifier_index.tag(&input);
            let ids = self.store.find_by_identifier(tenant, rtype.as_str(), &tag.0).await?;
            candidates = Some(match candidates {
                None => ids,
                Some(prev) => prev.into_iter().filter(|i| ids.contains(i)).collect(),
            });
        }
        let ids = match (candidates, &q.id) {
            (Some(c), Some(want)) => c.into_iter().filter(|i| i == want.as_str()).collect(),
            (Some(c), None) => c,
            (None, Some(want)) => {
                let key = ResourceKey {
                    tenant: tenant.to_owned(),
                    rtype: rtype.as_str().to_owned(),
                    id: want.to_string(),
                };
                match self.store.current(&key).await? {
                    Some(v) if !v.is_deleted() => vec![want.to_string()],
                    _ => vec![],
                }
            }
            (None, None) => vec![],
        };
        let ids = self.visible_ids(rtype, ids, crate::access::Perms::SEARCH).await?;
        Ok(ids.iter().filter_map(|s| ResourceId::parse(s).ok()).collect())
    }
}
