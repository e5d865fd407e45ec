//! Care relationships: the patients a clinician may reach. A practitioner is related to a
//! patient as a participant of one of the patient's encounters (open, or ended within the
//! policy's window), a member of an active CareTeam of the patient, a participant of one of
//! the patient's appointments from today on, or the performer of an active ServiceRequest
//! for the patient. Found through the search index, then the patient read from the matched
//! resources; cached per practitioner for a few seconds.

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
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            encounter_days: 14,
            relationship_cache_millis: 5_000,
            emergency_minutes: crate::emergency::DEFAULT_EMERGENCY_MINUTES,
            epoch_poll_millis: 250,
            signin: crate::signin::SignInPolicy::default(),
        }
    }
}

#[derive(Default)]
pub(crate) struct RelationshipCache(Mutex<HashMap<String, (i64, Vec<ResourceId>)>>);

const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

impl<S: Store> Vault<S> {
    /// The patients `practitioner` has a care relationship with now.
    pub async fn related_patients(&self, practitioner: &ResourceId) -> Result<Vec<ResourceId>, CoreError> {
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

    async fn find_related(&self, practitioner: &ResourceId, now: i64) -> Result<Vec<ResourceId>, CoreError> {
        let enc = carevault_domain::query::percent_encode;
        let who = enc(&format!("Practitioner/{practitioner}"));
        let since = enc(&Timestamp::from_millis(now - self.policy.encounter_days * DAY_MILLIS).to_fhir());
        let today = enc(&Timestamp::from_millis(now - now.rem_euclid(DAY_MILLIS)).to_fhir());
        let queries = [
            (ResourceType::Encounter, format!("participant={who}&date=ge{since}")),
            (ResourceType::CareTeam, format!("participant={who}&status=active")),
            (ResourceType::Appointment, format!("practitioner={who}&date=ge{today}")),
            (ResourceType::ServiceRequest, format!("performer={who}&status=active")),
        ];
        let system = Access::unchecked_system();
        let session = self.session(&system);
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
        Ok(out)
    }
}
