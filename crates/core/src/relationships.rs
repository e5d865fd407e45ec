//! Care relationships: the patients a clinician may reach. A practitioner is related to a
//! patient as a participant of one of the patient's encounters (open, or ended within the
//! policy's window), a member of an active CareTeam of the patient, a participant of one of
//! the patient's appointments from today on, or the performer of an active ServiceRequest
//! for the patient — or, where the policy says so, assigned (by an active PractitionerRole)
//! to the ward (Location) or department (Organization) where the patient is now admitted (an
//! in-progress Encounter there). Found through the search index, then the patient read from
//! the matched resources; cached per practitioner for a few seconds. The organizations of the
//! practitioner's roles are kept too: consent rules may name an organization as actor.

use crate::access::Access;
use crate::{CoreError, Vault};
use carevault_domain::compartment::patients_of;
use carevault_domain::{ResourceId, ResourceType, Timestamp};
use carevault_storage::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// What access decisions depend on beyond accounts and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// How many days after an encounter ends its participants keep their relationship.
    pub encounter_days: i64,
    /// How long a practitioner's relationships are reused before being looked up again.
    pub relationship_cache_millis: i64,
    /// How long a break-the-glass grant lasts.
    pub emergency_minutes: i64,
    /// How often the database's access epoch is read again: changes made through this
    /// server hold on the next request; changes by another process (the CLI, another
    /// server on the same PostgreSQL) within this period.
    pub epoch_poll_millis: i64,
    /// Sign-in sessions, token lifetimes and lockout.
    pub signin: crate::signin::SignInPolicy,
    /// Whether staff assigned to a ward (PractitionerRole.location) reach the patients
    /// admitted there (Encounter.location, in progress).
    pub ward_relationships: bool,
    /// Whether staff of a department (PractitionerRole.organization) reach the patients
    /// admitted to it (Encounter.serviceProvider, in progress).
    pub department_relationships: bool,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            encounter_days: 14,
            relationship_cache_millis: 5_000,
            emergency_minutes: crate::emergency::DEFAULT_EMERGENCY_MINUTES,
            epoch_poll_millis: 250,
            signin: crate::signin::SignInPolicy::default(),
            ward_relationships: true,
            department_relationships: false,
        }
    }
}

/// A practitioner's care links: the patients related to them and the organizations of
/// their active roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CareLinks {
    pub patients: Vec<ResourceId>,
    pub organizations: Vec<ResourceId>,
}

#[derive(Default)]
pub(crate) struct RelationshipCache(Mutex<HashMap<String, (i64, CareLinks)>>);

const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

impl<S: Store> Vault<S> {
    /// The patients `practitioner` has a care relationship with now.
    pub async fn related_patients(&self, practitioner: &ResourceId) -> Result<Vec<ResourceId>, CoreError> {
        Ok(self.care_links(practitioner).await?.patients)
    }

    /// The patients `practitioner` has a care relationship with now, and the organizations of
    /// their active roles.
    pub async fn care_links(&self, practitioner: &ResourceId) -> Result<CareLinks, CoreError> {
        let now = self.clock.now().millis();
        if let Ok(cache) = self.relationships.0.lock()
            && let Some((at, found)) = cache.get(practitioner.as_str())
            && now - at < self.policy.relationship_cache_millis
        {
            return Ok(found.clone());
        }
        let found = self.find_related(practitioner, now).await?;
        if let Ok(mut cache) = self.relationships.0.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(practitioner.as_str().to_owned(), (now, found.clone()));
        }
        Ok(found)
    }

    async fn find_related(&self, practitioner: &ResourceId, now: i64) -> Result<CareLinks, CoreError> {
        let enc = carevault_domain::query::percent_encode;
        let who = enc(&format!("Practitioner/{practitioner}"));
        let since = enc(&Timestamp::from_millis(now - self.policy.encounter_days * DAY_MILLIS).to_fhir());
        let today = enc(&Timestamp::from_millis(now - now.rem_euclid(DAY_MILLIS)).to_fhir());
        let mut queries = vec![
            (ResourceType::Encounter, format!("participant={who}&date=ge{since}")),
            (ResourceType::CareTeam, format!("participant={who}&status=active")),
            (ResourceType::Appointment, format!("practitioner={who}&date=ge{today}")),
            (ResourceType::ServiceRequest, format!("performer={who}&status=active")),
        ];
        let system = Access::unchecked_system();
        let session = self.session(&system);
        // The practitioner's active roles: their wards and departments.
        let (mut wards, mut organizations) = (Vec::new(), Vec::new());
        let role_ids: Vec<String> = session
            .matching_ids(
                ResourceType::PractitionerRole,
                &format!("practitioner={who}&active=true"),
            )
            .await?
            .into_iter()
            .map(|i| i.as_str().to_owned())
            .collect();
        for r in session.read_visible(ResourceType::PractitionerRole, &role_ids).await? {
            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                continue;
            };
            if !role_current(&body, now) {
                continue;
            }
            for l in body["location"].as_array().into_iter().flatten() {
                if let Some(id) = local_id(&l["reference"], "Location") {
                    wards.push(id);
                }
            }
            if let Some(id) = local_id(&body["organization"]["reference"], "Organization") {
                organizations.push(id);
            }
        }
        let refs = |kind: &str, ids: &[ResourceId]| {
            ids.iter()
                .map(|i| enc(&format!("{kind}/{i}")))
                .collect::<Vec<_>>()
                .join(",")
        };
        if self.policy.ward_relationships && !wards.is_empty() {
            queries.push((
                ResourceType::Encounter,
                format!("location={}&status=in-progress", refs("Location", &wards)),
            ));
        }
        if self.policy.department_relationships && !organizations.is_empty() {
            queries.push((
                ResourceType::Encounter,
                format!(
                    "service-provider={}&status=in-progress",
                    refs("Organization", &organizations)
                ),
            ));
        }
        let mut out: Vec<ResourceId> = Vec::new();
        for (rtype, query) in queries {
            let ids: Vec<String> = session
                .matching_ids(rtype, &query)
                .await?
                .into_iter()
                .map(|i| i.as_str().to_owned())
                .collect();
            for r in session.read_visible(rtype, &ids).await? {
                let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                    continue;
                };
                for p in patients_of(rtype, None, &body) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        organizations.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        organizations.dedup();
        Ok(CareLinks {
            patients: out,
            organizations,
        })
    }
}

/// Relationship codes (v3-RoleCode) that give a related person authority to act for a
/// patient: guardians, holders of a power of attorney, parents.
pub const AUTHORITY_CODES: &[&str] = &[
    "GUARD", "GUADLTM", "POWATT", "DPOWATT", "HPOWATT", "SPOWATT", "PRN", "NPRN", "MTH", "FTH", "NMTH", "NFTH",
    "ADOPTP", "ADOPTM", "ADOPTF", "STPPRN", "STPMTH", "STPFTH", "PRNFOST", "MTHFOST", "FTHFOST",
];

impl<S: Store> Vault<S> {
    /// The patients a patient account acts for: each RelatedPerson its own Patient links to
    /// (`Patient.link.other`) that is active, holds an authority relationship
    /// ([`AUTHORITY_CODES`]) and whose `period` (if any) covers now.
    pub async fn dependents(&self, own: &ResourceId) -> Result<Vec<ResourceId>, CoreError> {
        let system = Access::unchecked_system();
        let session = self.session(&system);
        let crate::ReadOutcome::Found(me) = session.read(ResourceType::Patient, own).await? else {
            return Ok(Vec::new());
        };
        let Ok(me) = serde_json::from_slice::<Value>(&me.body) else {
            return Ok(Vec::new());
        };
        let linked: Vec<String> = me["link"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| local_id(&l["other"]["reference"], "RelatedPerson"))
            .map(|id| id.as_str().to_owned())
            .collect();
        let now = self.clock.now().millis();
        let mut out = Vec::new();
        for r in session.read_visible(ResourceType::RelatedPerson, &linked).await? {
            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                continue;
            };
            let authority = body["relationship"].as_array().into_iter().flatten().any(|cc| {
                cc["coding"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["code"].as_str().is_some_and(|code| AUTHORITY_CODES.contains(&code)))
            });
            if body["active"] == false || !authority || !role_current(&body, now) {
                continue;
            }
            if let Some(p) = local_id(&body["patient"]["reference"], "Patient")
                && p != *own
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// The id of a local reference `Kind/id`.
fn local_id(reference: &Value, kind: &str) -> Option<ResourceId> {
    let r = reference.as_str()?.strip_prefix(kind)?.strip_prefix('/')?;
    ResourceId::parse(r).ok()
}

/// Whether a resource's `period` (if any) covers `now`.
fn role_current(body: &Value, now: i64) -> bool {
    let bound = |k: &str| {
        body["period"][k]
            .as_str()
            .and_then(Timestamp::parse)
            .map(Timestamp::millis)
    };
    bound("start").is_none_or(|s| s <= now) && bound("end").is_none_or(|e| now < e)
}
