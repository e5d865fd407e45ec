//! Create, read, vread, update and delete of one resource.

use crate::access::Perms;
use crate::conditional::{CLAIMED, Claimed};
use crate::identifiers::identifier_tags;
use crate::keys::Row;
use crate::{CoreError, Session};
use carevault_domain::compartment::key_owner;
use carevault_domain::{Resource, ResourceId, ResourceType, Timestamp, VersionId};
use carevault_storage::{ChangeSet, Claim, Expect, NewVersion, Op, ResourceKey, Store, StoredVersion};

/// A resource as the client sees it: the decrypted body (with `meta`) and its version.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub rtype: ResourceType,
    pub id: ResourceId,
    pub version: u64,
    pub last_updated: Timestamp,
    pub body: Vec<u8>,
    /// The patient whose compartment (and key) the resource belongs to, if any: for the
    /// audit entry, never for decisions.
    pub patient: Option<String>,
}

/// The result of a read: present, deleted (with the deleting version) or never there.
#[derive(Debug)]
pub enum ReadOutcome {
    Found(StoredResource),
    Deleted { version: u64, last_updated: Timestamp },
    NotFound,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    pub resource: StoredResource,
    /// A new resource (201) rather than a new version of an existing one (200).
    pub created: bool,
    /// False when the content was identical and no version was made.
    pub changed: bool,
}

/// A write prepared and sealed, waiting to be applied with others.
pub(crate) struct Pending {
    pub version: NewVersion,
    pub written: Written,
}

pub(crate) const MAX_RETRIES: usize = 8;

impl<S: Store> Session<'_, S> {
    pub(crate) fn resource_key(&self, rtype: ResourceType, id: &ResourceId) -> ResourceKey {
        ResourceKey {
            tenant: self.tenant.as_str().to_owned(),
            rtype: rtype.as_str().to_owned(),
            id: id.to_string(),
        }
    }

    pub(crate) async fn open_version(
        &self,
        rtype: ResourceType,
        v: &StoredVersion,
    ) -> Result<StoredResource, CoreError> {
        let row = Row {
            rtype: &v.key.rtype,
            id: &v.key.id,
            version: v.version,
            patient: &v.patient,
            key_id: v.key_id,
        };
        let body = self.open(&row, &v.body).await?;
        let id = ResourceId::parse(&v.key.id).map_err(|_| CoreError::Integrity)?;
        Ok(StoredResource {
            rtype,
            id,
            version: v.version,
            last_updated: Timestamp::from_millis(v.last_updated),
            body,
            patient: (!v.patient.is_empty()).then(|| v.patient.clone()),
        })
    }

    /// Seals `resource` as the next version after `current` (or the first).
    /// Returns `Ok(None)` when the content equals the current version's.
    pub(crate) async fn prepare(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        mut resource: Resource,
        current: Option<&StoredVersion>,
    ) -> Result<Result<Pending, StoredResource>, CoreError> {
        let live = current.filter(|c| !c.is_deleted());
        let masks = self.access().masks(rtype);
        if let Some(cur) = live {
            let existing = self.open_version(rtype, cur).await?;
            if let Ok(old) = Resource::parse(&existing.body) {
                // A caller who sees masked fields sends them back masked: keep the stored values.
                if !masks.is_empty() {
                    let mut v = resource.json().clone();
                    crate::access::mask::unmask(masks, &mut v, old.json());
                    resource = Resource::from_value(v).map_err(|e| CoreError::Invalid(e.to_string()))?;
                }
                let mut candidate = resource.clone();
                candidate.set_id(id);
                if candidate.same_content(&old) {
                    return Ok(Err(self.masked(existing)));
                }
            }
        }
        let version = current.map_or(1, |c| c.version + 1);
        let expect = current.map_or(Expect::Absent, |c| Expect::Version(c.version));
        let op = if live.is_some() || current.is_some() {
            Op::Update
        } else {
            Op::Create
        };
        let now = self.clock.now();
        resource.set_id(id);
        resource.set_meta(
            VersionId::new(version).map_err(|e| CoreError::Invalid(e.to_string()))?,
            now,
        );
        let owner = key_owner(rtype, id, resource.json());
        let scope = owner.as_ref().map_or("", ResourceId::as_str);
        let (key_id, dek) = self.key_for_scope(scope).await?;
        let plaintext = resource.to_bytes();
        let row = Row {
            rtype: rtype.as_str(),
            id: id.as_str(),
            version,
            patient: scope,
            key_id,
        };
        let sealed = self.seal_with(&dek, &row, &plaintext)?;
        let tags = identifier_tags(&self.identifier_index, resource.json());
        let search_rows = crate::search::search_rows(&self.search_index, rtype, id, resource.json());
        Ok(Ok(Pending {
            version: NewVersion {
                key: self.resource_key(rtype, id),
                version,
                expect,
                last_updated: now.millis(),
                op,
                key_id,
                patient: scope.to_owned(),
                body: sealed,
                identifier_tags: tags,
                search_rows,
            },
            written: Written {
                // What the caller is shown of what it wrote: masked like any read.
                resource: self.masked(StoredResource {
                    rtype,
                    id: id.clone(),
                    version,
                    last_updated: now,
                    body: plaintext,
                    patient: (!scope.is_empty()).then(|| scope.to_owned()),
                }),
                created: current.is_none(),
                changed: true,
            },
        }))
    }

    /// Creates a resource under a new server-assigned id (any id in the body is replaced).
    pub async fn create(&self, resource: Resource) -> Result<Written, CoreError> {
        self.create_claiming(resource, None)
            .await?
            .map_err(|Claimed| CoreError::Conflict(CLAIMED.into()))
    }

    /// `create`, claiming a condition for the new resource (see `claim_tag`).
    pub(crate) async fn create_claiming(
        &self,
        resource: Resource,
        claim: Option<Vec<u8>>,
    ) -> Result<Result<Written, Claimed>, CoreError> {
        let rtype = resource.rtype();
        self.require(rtype, Perms::CREATE)?;
        let id = self.new_id()?;
        self.check_write_target(rtype, &id, resource.json())?;
        let pending = match self.prepare(rtype, &id, resource, None).await? {
            Ok(p) => p,
            Err(_) => return Err(CoreError::Conflict("id collision".into())),
        };
        match self
            .apply(ChangeSet {
                versions: vec![pending.version],
                audit: None,
                claims: claim.map(|tag| vec![Claim { tag, version: 0 }]).unwrap_or_default(),
                reindex: Vec::new(),
            })
            .await
        {
            Ok(()) => Ok(Ok(pending.written)),
            Err(carevault_storage::StoreError::Claimed) => Ok(Err(Claimed)),
            Err(e) => Err(e.into()),
        }
    }

    /// Update (or create-on-update with the client's id). `if_match` is the version the
    /// client last saw; a stale one fails with `PreconditionFailed`.
    pub async fn update(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        resource: Resource,
        if_match: Option<VersionId>,
    ) -> Result<Written, CoreError> {
        self.update_claiming(rtype, id, resource, if_match, None)
            .await?
            .map_err(|Claimed| CoreError::Conflict(CLAIMED.into()))
    }

    /// `update`, claiming a condition for the version it writes (see `claim_tag`).
    pub(crate) async fn update_claiming(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        resource: Resource,
        if_match: Option<VersionId>,
        claim: Option<Vec<u8>>,
    ) -> Result<Result<Written, Claimed>, CoreError> {
        for _ in 0..MAX_RETRIES {
            let current = self.checked_put(rtype, id, &resource).await?;
            if let Some(want) = if_match {
                let live = current.as_ref().filter(|c| !c.is_deleted());
                if live.map(|c| c.version) != Some(want.get()) {
                    return Err(CoreError::PreconditionFailed(
                        "If-Match does not name the current version".into(),
                    ));
                }
            }
            let pending = match self.prepare(rtype, id, resource.clone(), current.as_ref()).await? {
                Ok(p) => p,
                Err(unchanged) => {
                    return Ok(Ok(Written {
                        resource: unchanged,
                        created: false,
                        changed: false,
                    }));
                }
            };
            match self
                .apply(ChangeSet {
                    versions: vec![pending.version],
                    audit: None,
                    claims: claim
                        .clone()
                        .map(|tag| vec![Claim { tag, version: 0 }])
                        .unwrap_or_default(),
                    reindex: Vec::new(),
                })
                .await
            {
                Ok(()) => return Ok(Ok(pending.written)),
                Err(carevault_storage::StoreError::Claimed) => return Ok(Err(Claimed)),
                Err(carevault_storage::StoreError::Conflict) if if_match.is_some() => {
                    return Err(CoreError::PreconditionFailed(
                        "If-Match does not name the current version".into(),
                    ));
                }
                Err(carevault_storage::StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Conflict(
            "too many concurrent writes to this resource".into(),
        ))
    }

    /// Soft delete: a new version marks the resource deleted; later reads answer 410.
    /// Returns the deleting version, or `None` when there was nothing to delete.
    pub async fn delete(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        if_match: Option<VersionId>,
    ) -> Result<Option<u64>, CoreError> {
        self.require(rtype, Perms::DELETE)?;
        let key = self.resource_key(rtype, id);
        for _ in 0..MAX_RETRIES {
            let current = match self.writable_current(rtype, id, &key, Perms::DELETE).await {
                Err(CoreError::NotFound) => return Ok(None),
                other => other?,
            };
            let live = current.as_ref().filter(|c| !c.is_deleted());
            if let Some(want) = if_match
                && live.map(|c| c.version) != Some(want.get())
            {
                return Err(CoreError::PreconditionFailed(
                    "If-Match does not name the current version".into(),
                ));
            }
            let Some(cur) = live else { return Ok(None) };
            let v = self.deletion(rtype, id, cur);
            let version = v.version;
            match self
                .apply(ChangeSet {
                    versions: vec![v],
                    ..ChangeSet::default()
                })
                .await
            {
                Ok(()) => return Ok(Some(version)),
                Err(carevault_storage::StoreError::Conflict) if if_match.is_some() => {
                    return Err(CoreError::PreconditionFailed(
                        "If-Match does not name the current version".into(),
                    ));
                }
                Err(carevault_storage::StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Conflict(
            "too many concurrent writes to this resource".into(),
        ))
    }

    /// The current version an update (plain or in a transaction) replaces, once the caller
    /// is known to be allowed to write it: a create-on-update with a client's id would tell a
    /// caller limited to some patients whether that id exists elsewhere, so such callers
    /// create with POST.
    pub(crate) async fn checked_put(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        resource: &Resource,
    ) -> Result<Option<StoredVersion>, CoreError> {
        self.require(rtype, Perms::UPDATE)?;
        let mut candidate = resource.clone();
        candidate.set_id(id);
        self.check_write_target(rtype, id, candidate.json())?;
        let current = self
            .writable_current(rtype, id, &self.resource_key(rtype, id), Perms::UPDATE)
            .await?;
        if current.is_none() {
            self.require(rtype, Perms::CREATE)?;
            if self.access().reach() != &crate::access::Reach::All {
                return Err(CoreError::NotFound);
            }
        }
        Ok(current)
    }

    /// The request's pending audit entry, if it has one not yet committed, filled in with
    /// the caller: to be committed with the request's first write.
    pub(crate) fn pending_audit(&self) -> Option<crate::audit::AuditDraft> {
        crate::audit::pending().map(|mut d| {
            self.fill_caller(&mut d);
            d
        })
    }

    /// Names the caller in an entry: actor, role, client and purpose of use.
    pub(crate) fn fill_caller(&self, d: &mut crate::audit::AuditDraft) {
        crate::audit::name_caller(d, self.access());
    }

    /// Applies a change set; a change to a Consent makes the next decision look again. The
    /// request's pending audit entry (if the HTTP layer set one) is committed with the first
    /// change set, filled in with the caller and the resource written.
    pub(crate) async fn apply(&self, mut changes: ChangeSet) -> Result<(), carevault_storage::StoreError> {
        let consent = changes.versions.iter().any(|v| v.key.rtype == "Consent");
        let pending = self.pending_audit().map(|mut d| {
            if let [v] = changes.versions.as_slice() {
                d.entity = Some(format!("{}/{}", v.key.rtype, v.key.id));
            }
            if d.patient.is_none() {
                d.patient = changes
                    .versions
                    .iter()
                    .find(|v| !v.patient.is_empty())
                    .map(|v| v.patient.clone());
            }
            d
        });
        if let Some(d) = &pending {
            changes.audit = Some(crate::audit::maker(crate::audit::mac_key(&self.keys), d.clone()));
        }
        let result = self.store.apply(changes).await;
        if result.is_ok()
            && let Some(d) = pending
        {
            crate::audit::committed(d);
        }
        if consent {
            self.access_changed();
        }
        result
    }

    /// The current version of a resource the caller is about to change, or `None` when it
    /// does not exist or the caller may not see it (a write then cannot tell the two apart).
    pub(crate) async fn writable_current(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        key: &ResourceKey,
        want: Perms,
    ) -> Result<Option<StoredVersion>, CoreError> {
        let current = self.store.current(key).await?;
        match &current {
            Some(c) if !c.is_deleted() && !self.visible(rtype, id, want).await? => Err(CoreError::NotFound),
            _ => Ok(current),
        }
    }

    pub(crate) fn deletion(&self, rtype: ResourceType, id: &ResourceId, cur: &StoredVersion) -> NewVersion {
        NewVersion {
            key: self.resource_key(rtype, id),
            version: cur.version + 1,
            expect: Expect::Version(cur.version),
            last_updated: self.clock.now().millis(),
            op: Op::Delete,
            key_id: 0,
            patient: String::new(),
            body: Vec::new(),
            identifier_tags: Vec::new(),
            search_rows: Vec::new(),
        }
    }

    /// A read as the caller sees it (field masks applied).
    pub async fn read(&self, rtype: ResourceType, id: &ResourceId) -> Result<ReadOutcome, CoreError> {
        Ok(match self.read_raw(rtype, id).await? {
            ReadOutcome::Found(r) => ReadOutcome::Found(self.masked(r)),
            other => other,
        })
    }

    /// A read with the caller's access decided but without its field masks: for re-checking
    /// search matches and patching, never for output.
    pub(crate) async fn read_raw(&self, rtype: ResourceType, id: &ResourceId) -> Result<ReadOutcome, CoreError> {
        self.require(rtype, Perms::READ)?;
        let key = self.resource_key(rtype, id);
        if self.needs_facts(rtype, Perms::READ) {
            // One round trip: the row with its compartment and label rows; the body is opened
            // only when those allow it.
            let Some((v, facts)) = self.store.current_with_facts(&key).await? else {
                return Ok(ReadOutcome::NotFound);
            };
            let allowed = match self
                .access()
                .allows_resource(rtype, Perms::READ, &facts.patients, &facts.labels)
            {
                Some(ok) => ok,
                None => self.visible(rtype, id, Perms::READ).await?,
            };
            if !allowed || v.is_deleted() {
                return Ok(ReadOutcome::NotFound);
            }
            return Ok(ReadOutcome::Found(self.open_version(rtype, &v).await?));
        }
        match self.store.current(&key).await? {
            None => Ok(ReadOutcome::NotFound),
            Some(v) if v.is_deleted() => Ok(ReadOutcome::Deleted {
                version: v.version,
                last_updated: Timestamp::from_millis(v.last_updated),
            }),
            Some(v) => Ok(ReadOutcome::Found(self.open_version(rtype, &v).await?)),
        }
    }

    /// The live resources of a search's `hits` (of one type), opened, in the hits' order:
    /// read by row id (see `ResourceStore::current_by_rid`). The caller has decided they
    /// may be read (the search carried the guard).
    pub(crate) async fn read_hits(
        &self,
        rtype: ResourceType,
        hits: &[carevault_storage::SearchHit],
    ) -> Result<Vec<StoredResource>, CoreError> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let rids: Vec<i64> = hits.iter().map(|h| h.rid).collect();
        let versions = self
            .store
            .current_by_rid(self.tenant.as_str(), rtype.as_str(), &rids)
            .await?;
        self.open_in_order(rtype, versions, hits.iter().map(|h| h.id.as_str()))
            .await
    }

    /// The live resources among `ids` (of one type), in the order given; missing and deleted
    /// ones are left out. One store round trip instead of one per id.
    pub(crate) async fn read_many(
        &self,
        rtype: ResourceType,
        ids: &[String],
    ) -> Result<Vec<StoredResource>, CoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let versions = self
            .store
            .current_many(self.tenant.as_str(), rtype.as_str(), ids)
            .await?;
        self.open_in_order(rtype, versions, ids.iter().map(String::as_str))
            .await
    }

    /// `versions` opened in the order of `ids`, the deleted ones left out.
    async fn open_in_order(
        &self,
        rtype: ResourceType,
        versions: Vec<StoredVersion>,
        ids: impl Iterator<Item = &str>,
    ) -> Result<Vec<StoredResource>, CoreError> {
        let mut by_id: std::collections::HashMap<String, StoredVersion> = versions
            .into_iter()
            .filter(|v| !v.is_deleted())
            .map(|v| (v.key.id.clone(), v))
            .collect();
        let mut out = Vec::with_capacity(by_id.len());
        for id in ids {
            if let Some(v) = by_id.remove(id) {
                out.push(self.open_version(rtype, &v).await?);
            }
        }
        Ok(out)
    }

    pub async fn vread(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        version: VersionId,
    ) -> Result<ReadOutcome, CoreError> {
        self.require(rtype, Perms::READ)?;
        if !self.visible(rtype, id, Perms::READ).await? {
            return Ok(ReadOutcome::NotFound);
        }
        match self.store.version(&self.resource_key(rtype, id), version.get()).await? {
            None => Ok(ReadOutcome::NotFound),
            Some(v) if v.is_deleted() => Ok(ReadOutcome::Deleted {
                version: v.version,
                last_updated: Timestamp::from_millis(v.last_updated),
            }),
            Some(v) => Ok(ReadOutcome::Found(self.masked(self.open_version(rtype, &v).await?))),
        }
    }
}
