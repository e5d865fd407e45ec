//! A [`Session`] is the record store seen by one caller: every read, search and write of
//! patient data is a method here, and each one turns the caller's [`Access`] into conditions
//! of its query before anything is read. There is no other public way to the records.

use crate::access::{Access, Perms, TypeFilter};
use crate::{CoreError, Vault};
use carevault_domain::{ResourceId, ResourceType};
use carevault_storage::{Cond, SearchQuery, Store};
use std::ops::Deref;

/// The vault as one caller may use it.
pub struct Session<'a, S: Store> {
    vault: &'a Vault<S>,
    access: &'a Access,
}

impl<S: Store> Vault<S> {
    /// The records as `access` allows them to be used.
    pub fn session<'a>(&'a self, access: &'a Access) -> Session<'a, S> {
        Session { vault: self, access }
    }
}

impl<S: Store> Deref for Session<'_, S> {
    type Target = Vault<S>;
    fn deref(&self) -> &Vault<S> {
        self.vault
    }
}

impl<S: Store> Session<'_, S> {
    pub fn access(&self) -> &Access {
        self.access
    }

    /// Fails unless the caller may do `want` on some resources of `rtype`. Saying no here
    /// reveals nothing about any record: it depends on the caller alone.
    pub(crate) fn require(&self, rtype: ResourceType, want: Perms) -> Result<(), CoreError> {
        if self.access.allows(rtype, want) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(format!(
                "this token may not {} {} resources",
                verb(want),
                rtype.as_str()
            )))
        }
    }

    /// The conditions that limit a query of `rtype` to what the caller may `want`: the
    /// patients it reaches and the constraints of granular scopes.
    pub(crate) fn guard_conds(&self, rtype: ResourceType, want: Perms) -> Result<Vec<Cond>, CoreError> {
        let Some(filter) = self.access.filter(rtype, want) else {
            self.require(rtype, want)?;
            return Err(CoreError::Forbidden("not allowed".into()));
        };
        let mut conds = Vec::new();
        if let TypeFilter::AnyOf(sets) = filter {
            let mut any = Vec::new();
            for set in sets {
                let parser = self.parser(rtype, true);
                // A constraint the index cannot express exactly grants nothing (fail closed).
                let Ok(req) = parser.parse(&set) else { continue };
                if !req.links.is_empty() || !req.rechecks.is_empty() {
                    continue;
                }
                match req.conds.len() {
                    1 => any.extend(req.conds),
                    _ => continue,
                }
            }
            conds.push(Cond::Any(any));
        }
        if let Some(patients) = self.access.compartment_limit(rtype) {
            conds.push(Cond::ReferenceIn {
                param: crate::COMPARTMENT.to_owned(),
                target_type: Some("Patient".to_owned()),
                target_ids: patients.iter().map(|p| p.as_str().to_owned()).collect(),
            });
        }
        conds.extend(self.access.consent_conds(rtype));
        Ok(conds)
    }

    /// `conds` with the caller's guard added.
    pub(crate) fn guarded(
        &self,
        rtype: ResourceType,
        want: Perms,
        mut conds: Vec<Cond>,
    ) -> Result<Vec<Cond>, CoreError> {
        conds.extend(self.guard_conds(rtype, want)?);
        Ok(conds)
    }

    /// Whether deciding on one resource of `rtype` needs its index facts: not for a caller
    /// limited by nothing, nor for directory data under a plain (not granular) grant.
    pub(crate) fn needs_facts(&self, rtype: ResourceType, want: Perms) -> bool {
        let open = matches!(self.access.filter(rtype, want), Some(TypeFilter::Open));
        !(self.access.is_unrestricted() || (open && crate::access::Kind::of(rtype) != crate::access::Kind::Compartment))
    }

    /// Whether the caller may `want` this resource, decided from the index alone (its body is
    /// not read). A resource the caller may not see is reported as absent.
    pub(crate) async fn visible(&self, rtype: ResourceType, id: &ResourceId, want: Perms) -> Result<bool, CoreError> {
        self.require(rtype, want)?;
        if !self.needs_facts(rtype, want) {
            return Ok(true);
        }
        // The usual decision (patients reached, consent, labels) is made in memory from the
        // resource's compartment and label rows; a granular scope goes to the index.
        let Some(facts) = self.store.facts(&self.resource_key(rtype, id)).await? else {
            return Ok(false);
        };
        if let Some(ok) = self.access.allows_resource(rtype, want, &facts.patients, &facts.labels) {
            return Ok(ok);
        }
        let guard = self.guard_conds(rtype, want)?;
        let mut conds = vec![Cond::Id(vec![id.as_str().to_owned()])];
        conds.extend(guard);
        let q = SearchQuery {
            tenant: self.tenant.as_str().to_owned(),
            rtype: rtype.as_str().to_owned(),
            conds,
            sort: Vec::new(),
            after: None,
            backwards: false,
            limit: 1,
        };
        Ok(!self.store.search(&q).await?.is_empty())
    }

    /// Those of `ids` (of one type) the caller may `want`, in the order given, decided from
    /// the index alone; nothing when the type is not allowed at all.
    pub(crate) async fn visible_ids(
        &self,
        rtype: ResourceType,
        ids: Vec<String>,
        want: Perms,
    ) -> Result<Vec<String>, CoreError> {
        let Ok(guard) = self.guard_conds(rtype, want) else {
            return Ok(Vec::new());
        };
        if guard.is_empty() || ids.is_empty() {
            return Ok(ids);
        }
        let mut conds = vec![Cond::Id(ids.clone())];
        conds.extend(guard);
        let q = SearchQuery {
            tenant: self.tenant.as_str().to_owned(),
            rtype: rtype.as_str().to_owned(),
            conds,
            sort: Vec::new(),
            after: None,
            backwards: false,
            limit: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        };
        let allowed: std::collections::HashSet<String> =
            self.store.search(&q).await?.into_iter().map(|h| h.id).collect();
        Ok(ids.into_iter().filter(|i| allowed.contains(i)).collect())
    }

    /// The live resources among `ids` that the caller may read, in the order given; the
    /// others are left out as if they did not exist (includes).
    pub(crate) async fn read_visible(
        &self,
        rtype: ResourceType,
        ids: &[String],
    ) -> Result<Vec<crate::StoredResource>, CoreError> {
        let keep = self.visible_ids(rtype, ids.to_vec(), Perms::READ).await?;
        self.read_many(rtype, &keep).await
    }

    /// `r` as the caller may see it: the role's field masks applied.
    pub(crate) fn masked(&self, mut r: crate::StoredResource) -> crate::StoredResource {
        if let Some(body) = crate::access::mask::apply(self.access.masks(r.rtype), &r.body) {
            r.body = body;
        }
        r
    }

    /// A write of `body` as `rtype` keeps the resource inside what the caller reaches.
    pub(crate) fn check_write_target(
        &self,
        rtype: ResourceType,
        id: &ResourceId,
        body: &serde_json::Value,
    ) -> Result<(), CoreError> {
        if self.access.compartment_limit(rtype).is_none() {
            return Ok(());
        }
        let patients = carevault_domain::compartment::patients_of(rtype, Some(id), body);
        if self.access.reaches_all(&patients) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(
                "the resource would belong to a patient this token does not reach".into(),
            ))
        }
    }
}

fn verb(want: Perms) -> &'static str {
    if want == Perms::CREATE {
        "create"
    } else if want == Perms::UPDATE {
        "update"
    } else if want == Perms::DELETE {
        "delete"
    } else if want == Perms::SEARCH {
        "search"
    } else {
        "read"
    }
}
