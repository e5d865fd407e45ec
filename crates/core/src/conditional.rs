//! Conditional creates, updates and deletes (`If-None-Exist`, `PUT`/`DELETE [type]?search`):
//! the condition is a search as the caller sees it. A create that a condition decides claims
//! a keyed tag of the condition in the write's transaction (`carevault_storage::Claim`), so
//! that of several racing creates of one condition only one creates.

use crate::crud::{MAX_RETRIES, ReadOutcome, Written};
use crate::identifiers::IdentifierQuery;
use crate::{CoreError, Session};
use carevault_domain::query::{parse_query, percent_encode};
use carevault_domain::{Resource, ResourceId, ResourceType};
use carevault_storage::Store;

/// A write's claim on its condition was taken by a concurrent conditional create (which
/// created the resource the caller should now find). When the caller searches again and
/// still finds nothing, the resource is one it may not see (or the condition is spelled to
/// match it no longer): it then creates without a claim, as if there had been no race, so
/// that a claim neither blocks it nor tells it that a hidden record exists.
pub(crate) struct Claimed;

pub(crate) const CLAIMED: &str = "concurrent conditional creates kept taking the same condition";

impl<S: Store> Session<'_, S> {
    /// The claim tag of a conditional create's condition: a keyed hash of tenant, type and
    /// the condition's decoded parameters in a canonical order, so that two creates racing on
    /// the same condition (however it is spelled) cannot both create.
    pub(crate) fn claim_tag(&self, rtype: ResourceType, condition: &str) -> Result<Vec<u8>, CoreError> {
        let mut pairs = parse_query(condition).map_err(|e| CoreError::Invalid(e.to_string()))?;
        pairs.sort();
        let canonical: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        let input = format!("claim|{}|{rtype}|{}", self.tenant, canonical.join("&"));
        Ok(self.search_index.tag(input.as_bytes()).0.to_vec())
    }

    /// Conditional create: creates unless `condition` (a search query) matches; one match is
    /// returned as is, several are a failed precondition. Concurrent conditional creates of
    /// one condition create one resource: the create claims the condition, and a create that
    /// finds it claimed searches again.
    pub async fn create_if_none_exist(&self, resource: Resource, condition: &str) -> Result<Written, CoreError> {
        let rtype = resource.rtype();
        let mut claim = true;
        for _ in 0..MAX_RETRIES {
            let found = self.conditional_matches(rtype, condition).await?;
            match found.as_slice() {
                [] => {
                    let tag = if claim {
                        Some(self.claim_tag(rtype, condition)?)
                    } else {
                        None
                    };
                    match self.create_claiming(resource.clone(), tag).await? {
                        Ok(w) => return Ok(w),
                        Err(Claimed) => claim = false,
                    }
                }
                [one] => {
                    return match self.read(rtype, one).await? {
                        ReadOutcome::Found(r) => Ok(Written {
                            resource: r,
                            created: false,
                            changed: false,
                        }),
                        _ => self.create(resource).await,
                    };
                }
                _ => {
                    return Err(CoreError::PreconditionFailed(
                        "the If-None-Exist condition matches more than one resource".into(),
                    ));
                }
            }
        }
        Err(CoreError::Conflict(CLAIMED.into()))
    }

    /// Stored resources matching a condition: the blind identifier index for `_id` and
    /// `identifier`, the search engine for anything else.
    pub async fn conditional_matches(
        &self,
        rtype: ResourceType,
        condition: &str,
    ) -> Result<Vec<ResourceId>, CoreError> {
        match IdentifierQuery::parse(condition) {
            Ok(q) => self.find(rtype, &q).await,
            Err(_) => self.matching_ids(rtype, condition).await,
        }
    }

    /// Conditional update (`PUT [type]?search`): no match creates (with the body's id, or a
    /// new one), one match is updated, several are a failed precondition.
    pub async fn conditional_update(&self, resource: Resource, condition: &str) -> Result<Written, CoreError> {
        let rtype = resource.rtype();
        let mut claiming = true;
        for _ in 0..MAX_RETRIES {
            let found = self.conditional_matches(rtype, condition).await?;
            let (id, claim) = match found.as_slice() {
                // No match creates, and claims the condition like a conditional create: under
                // the body's id (an update that creates), or, without one, as a plain create
                // with its rules (a new server id).
                [] => {
                    let tag = if claiming {
                        Some(self.claim_tag(rtype, condition)?)
                    } else {
                        None
                    };
                    match resource.id() {
                        Some(id) => (id, tag),
                        None => match self.create_claiming(resource.clone(), tag).await? {
                            Ok(w) => return Ok(w),
                            Err(Claimed) => {
                                claiming = false;
                                continue;
                            }
                        },
                    }
                }
                [one] => {
                    if resource.id().is_some_and(|b| &b != one) {
                        return Err(CoreError::Invalid(
                            "the id in the body is not the id of the matching resource".into(),
                        ));
                    }
                    (one.clone(), None)
                }
                _ => {
                    return Err(CoreError::PreconditionFailed(
                        "the condition matches more than one resource".into(),
                    ));
                }
            };
            match self.update_claiming(rtype, &id, resource.clone(), None, claim).await? {
                Ok(w) => return Ok(w),
                Err(Claimed) => claiming = false,
            }
        }
        Err(CoreError::Conflict(CLAIMED.into()))
    }

    /// Conditional patch (`PATCH [type]?search`): patches the one match; none is not found,
    /// several a failed precondition.
    pub async fn conditional_patch(
        &self,
        rtype: ResourceType,
        condition: &str,
        patch: &carevault_domain::patch::PatchDocument,
        if_match: Option<carevault_domain::VersionId>,
    ) -> Result<Written, CoreError> {
        let found = self.conditional_matches(rtype, condition).await?;
        match found.as_slice() {
            [one] => self.patch(rtype, one, patch, if_match).await,
            [] => Err(CoreError::NotFound),
            _ => Err(CoreError::PreconditionFailed(
                "the condition matches more than one resource".into(),
            )),
        }
    }

    /// Conditional delete (`DELETE [type]?search`): deletes the one match; several are a
    /// failed precondition; none is success with nothing done.
    pub async fn conditional_delete(&self, rtype: ResourceType, condition: &str) -> Result<Option<u64>, CoreError> {
        let found = self.conditional_matches(rtype, condition).await?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => self.delete(rtype, one, None).await,
            _ => Err(CoreError::PreconditionFailed(
                "the condition matches more than one resource".into(),
            )),
        }
    }
}

/// How long a conditional create's claim on its condition is kept: far longer than any
/// request that could race with it.
const CLAIM_KEEP_MILLIS: i64 = 10 * 60 * 1000;

impl<S: Store> crate::Vault<S> {
    /// Deletes the conditional-create claims older than ten minutes (of any tenant); how
    /// many. They hold keyed tags and resource ids, no content, and are not audited.
    pub async fn purge_condition_claims(&self) -> Result<u64, CoreError> {
        let before = self.clock.now().millis() - CLAIM_KEEP_MILLIS;
        Ok(self.store.purge_claims(before).await?)
    }
}
