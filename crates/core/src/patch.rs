//! `PATCH` with a JSON Patch or a FHIRPath Patch document: applied to the current version's decrypted body, the
//! result checked like any incoming resource, then written as an update bound to the version
//! that was patched, so a concurrent write is never lost. When that version was the
//! client's `If-Match`, a concurrent write fails the patch (412); without one, the patch is
//! applied again to the newer version.

use crate::crud::{ReadOutcome, StoredResource, Written};
use crate::{CoreError, Session};
use carevault_domain::patch::{PatchDocument, PatchError};
use carevault_domain::{Resource, ResourceError, ResourceId, ResourceType, VersionId};
use carevault_storage::Store;
use serde_json::Value;

/// How often a patch without `If-Match` is applied again after losing to a concurrent write.
const PATCH_ATTEMPTS: usize = 32;

impl<S: Store> Session<'_, S> {
    pub async fn patch(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        patch: &PatchDocument,
        if_match: Option<VersionId>,
    ) -> Result<Written, CoreError> {
        if !self.access().masks(rtype).is_empty() {
            // A patch (its `test` operations above all) would read the masked fields.
            return Err(CoreError::Forbidden(format!(
                "this token sees {} resources masked: send the whole resource with PUT",
                rtype.as_str()
            )));
        }
        for _ in 0..PATCH_ATTEMPTS {
            let current = self.patch_base(rtype, id, if_match).await?;
            let resource = self.patched(rtype, id, &current, patch)?;
            let version = VersionId::new(current.version).map_err(|_| CoreError::Integrity)?;
            match self.update(rtype, id, resource, Some(version)).await {
                // Someone wrote since the read: the client asked for no particular version,
                // so the patch goes on top of theirs.
                Err(CoreError::PreconditionFailed(_)) if if_match.is_none() => continue,
                other => return other,
            }
        }
        Err(CoreError::Conflict(
            "too many concurrent writes to this resource".into(),
        ))
    }

    /// The version a patch applies to: the current one, live, and the one `if_match` names.
    pub(crate) async fn patch_base(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        if_match: Option<VersionId>,
    ) -> Result<StoredResource, CoreError> {
        let current = match self.read_raw(rtype, id).await? {
            ReadOutcome::Found(r) => r,
            ReadOutcome::Deleted { version, last_updated } => {
                return Err(CoreError::Gone {
                    version,
                    last_updated: last_updated.millis(),
                });
            }
            ReadOutcome::NotFound => return Err(CoreError::NotFound),
        };
        if if_match.is_some_and(|v| v.get() != current.version) {
            return Err(CoreError::PreconditionFailed(
                "If-Match does not name the current version".into(),
            ));
        }
        Ok(current)
    }

    /// The current version with a JSON Patch applied, checked like any incoming resource.
    pub(crate) fn patched(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        current: &StoredResource,
        patch: &PatchDocument,
    ) -> Result<Resource, CoreError> {
        let body: Value = serde_json::from_slice(&current.body).map_err(|_| CoreError::Integrity)?;
        let patched = patch.apply(&body).map_err(|e| match e {
            PatchError::Malformed(..) => CoreError::Invalid(e.to_string()),
            PatchError::Failed(..) => CoreError::Unprocessable(e.to_string()),
        })?;
        let resource = Resource::from_value(patched).map_err(|e| match e {
            ResourceError::Unprocessable(m) => CoreError::Unprocessable(m),
            other => CoreError::Unprocessable(format!("the patched resource is not valid: {other}")),
        })?;
        if resource.rtype() != rtype || resource.id().as_ref() != Some(id) {
            return Err(CoreError::Unprocessable(
                "a patch may not change resourceType or id".into(),
            ));
        }
        Ok(resource)
    }
}
