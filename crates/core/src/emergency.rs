//! Break-the-glass: a clinician without a care relationship asks for emergency access to one
//! patient, with a reason. The grant is time-boxed (60 minutes by default), raises a security
//! alert in the log, waits as a review item for the privacy officer, and is shown to the
//! patient. While it lasts, the patient's compartment is in the clinician's reach and the
//! patient's consent rules and sensitivity labels do not hold it back (purpose ETREAT).

use crate::access::{Access, Actor, Role};
use crate::keys::Row;
use crate::{CoreError, ReadOutcome, Session};
use carevault_domain::{ResourceId, ResourceType, Timestamp};
use carevault_storage::{Store, StoredEmergency};

/// How long a grant lasts unless the policy says otherwise.
pub const DEFAULT_EMERGENCY_MINUTES: i64 = 60;

/// A grant as reviewers and the patient see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyGrant {
    pub id: String,
    /// The clinician's account id.
    pub user_id: String,
    pub patient: String,
    pub started: Timestamp,
    pub expires: Timestamp,
    pub reason: String,
    /// `(reviewer account, verdict, when)` once reviewed.
    pub review: Option<(String, String, Timestamp)>,
    /// Who the clinician is, as the patient's report shows them: their role, their
    /// Practitioner and its name.
    pub staff: Option<StaffMember>,
}

/// A member of staff as a report names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffMember {
    pub role: Role,
    pub practitioner: Option<ResourceId>,
    /// The Practitioner's name ("given family"), when it has one.
    pub name: Option<String>,
}

/// The verdicts a review may give.
pub const VERDICTS: [&str; 2] = ["appropriate", "inappropriate"];

impl<S: Store> Session<'_, S> {
    /// Starts emergency access to `patient` for the calling clinician.
    pub async fn break_the_glass(&self, patient: &ResourceId, reason: &str) -> Result<EmergencyGrant, CoreError> {
        let Actor::User { user_id, role } = self.access().actor() else {
            return Err(CoreError::Forbidden(
                "break-the-glass is for clinicians' own accounts".into(),
            ));
        };
        if !role.needs_relationship() {
            return Err(CoreError::Forbidden(format!("a {role} account cannot break the glass")));
        }
        let reason = reason.trim();
        if reason.chars().count() < 10 || reason.chars().count() > 1000 {
            return Err(CoreError::Invalid("give a reason of 10 to 1000 characters".into()));
        }
        let system = Access::unchecked_system();
        if !matches!(
            self.session(&system).read(ResourceType::Patient, patient).await?,
            ReadOutcome::Found(_)
        ) {
            return Err(CoreError::NotFound);
        }
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw)?;
        let id = ResourceId::from_random(raw).as_str().to_owned();
        let (key_id, dek) = self.key_for_scope(patient.as_str()).await?;
        let row = Row {
            rtype: "EmergencyAccess",
            id: &id,
            version: 0,
            patient: patient.as_str(),
            key_id,
        };
        let sealed = self.seal_with(&dek, &row, reason.as_bytes())?;
        let now = self.clock.now().millis();
        let expires = now + self.policy.emergency_minutes * 60_000;
        // The request's audit entry goes in with the grant, in one transaction.
        let pending = self.pending_audit().map(|mut d| {
            d.entity = Some(format!("Patient/{patient}"));
            d.patient = Some(patient.as_str().to_owned());
            d
        });
        let audit = pending
            .as_ref()
            .map(|d| crate::audit::maker(crate::audit::mac_key(&self.keys), d.clone()));
        self.store
            .insert_emergency(
                StoredEmergency {
                    id: id.clone(),
                    tenant: self.tenant.as_str().to_owned(),
                    user_id: user_id.clone(),
                    patient: patient.as_str().to_owned(),
                    started: now,
                    expires,
                    reason_sealed: sealed,
                    reason_key_id: key_id,
                    reviewed_at: None,
                    reviewer: None,
                    verdict: None,
                },
                audit,
            )
            .await?;
        if let Some(d) = pending {
            crate::audit::committed(d);
        }
        self.access_changed();
        tracing::warn!(
            target: "carevault::security",
            alert = "break-the-glass",
            grant = %id,
            user = %user_id,
            patient = %patient,
            expires = %Timestamp::from_millis(expires).to_fhir(),
            "emergency access granted; awaiting review"
        );
        Ok(EmergencyGrant {
            id,
            user_id: user_id.clone(),
            patient: patient.as_str().to_owned(),
            started: Timestamp::from_millis(now),
            expires: Timestamp::from_millis(expires),
            reason: reason.to_owned(),
            review: None,
            staff: None,
        })
    }

    /// Emergency grants: a patient sees those on their own record; the auditor (privacy
    /// officer) sees all, or one patient's, or only those awaiting review.
    pub async fn emergency_grants(
        &self,
        patient: Option<&ResourceId>,
        unreviewed_only: bool,
    ) -> Result<Vec<EmergencyGrant>, CoreError> {
        let patient = match (self.access().role(), self.access().own_patient()) {
            (Some(Role::Patient), Some(own)) => match patient {
                Some(p) if p != own => return Err(CoreError::NotFound),
                _ => Some(own.clone()),
            },
            (Some(Role::Auditor) | None, _) => patient.cloned(),
            _ => {
                return Err(CoreError::Forbidden(
                    "only the patient and the privacy officer see these".into(),
                ));
            }
        };
        let rows = self
            .store
            .emergencies(
                self.tenant.as_str(),
                patient.as_ref().map(ResourceId::as_str),
                unreviewed_only,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut names = std::collections::HashMap::new();
        for r in rows {
            let row = Row {
                rtype: "EmergencyAccess",
                id: &r.id,
                version: 0,
                patient: &r.patient,
                key_id: r.reason_key_id,
            };
            let reason =
                String::from_utf8(self.open(&row, &r.reason_sealed).await?).map_err(|_| CoreError::Integrity)?;
            let review = match (r.reviewer, r.verdict, r.reviewed_at) {
                (Some(who), Some(v), Some(at)) => Some((who, v, Timestamp::from_millis(at))),
                _ => None,
            };
            let staff = self.staff_member(&r.user_id, &mut names).await?;
            out.push(EmergencyGrant {
                staff,
                id: r.id,
                user_id: r.user_id,
                patient: r.patient,
                started: Timestamp::from_millis(r.started),
                expires: Timestamp::from_millis(r.expires),
                reason,
                review,
            });
        }
        Ok(out)
    }

    /// The account's role and its Practitioner's name (read as the system: staff names are
    /// not the patient's data), remembered per account for one report.
    pub(crate) async fn staff_member(
        &self,
        user_id: &str,
        seen: &mut std::collections::HashMap<String, Option<StaffMember>>,
    ) -> Result<Option<StaffMember>, CoreError> {
        if let Some(s) = seen.get(user_id) {
            return Ok(s.clone());
        }
        let found = match self.store.user_by_id(self.tenant.as_str(), user_id).await? {
            Some(u) => {
                let practitioner = u.practitioner.as_deref().and_then(|p| ResourceId::parse(p).ok());
                let mut name = None;
                if let Some(p) = &practitioner {
                    let system = crate::access::Access::unchecked_system();
                    if let crate::ReadOutcome::Found(r) = self
                        .session(&system)
                        .read(carevault_domain::ResourceType::Practitioner, p)
                        .await?
                    {
                        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                        let n = &body["name"][0];
                        let given = n["given"]
                            .as_array()
                            .map(|g| g.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default();
                        let full = format!(
                            "{} {} {}",
                            n["prefix"][0].as_str().unwrap_or_default(),
                            given,
                            n["family"].as_str().unwrap_or_default()
                        );
                        let full = full.split_whitespace().collect::<Vec<_>>().join(" ");
                        if !full.is_empty() {
                            name = Some(full);
                        }
                    }
                }
                Role::parse(&u.role).map(|role| StaffMember {
                    role,
                    practitioner,
                    name,
                })
            }
            None => None,
        };
        seen.insert(user_id.to_owned(), found.clone());
        Ok(found)
    }

    /// Records the privacy officer's verdict on a grant (once).
    pub async fn review_emergency(&self, id: &str, verdict: &str) -> Result<(), CoreError> {
        let reviewer = match self.access().actor() {
            Actor::User {
                user_id,
                role: Role::Auditor,
            } => user_id.clone(),
            Actor::System => "system".to_owned(),
            Actor::User { .. } | Actor::Client { .. } => {
                return Err(CoreError::Forbidden(
                    "only the privacy officer reviews emergency access".into(),
                ));
            }
        };
        if !VERDICTS.contains(&verdict) {
            return Err(CoreError::Invalid(format!(
                "a verdict is one of {}",
                VERDICTS.join(", ")
            )));
        }
        let now = self.clock.now().millis();
        // Over the API the entry names the privacy officer; an operator command's names the
        // operator already.
        let entry = self.change_entry(|d| {
            if d.agent.who == crate::audit::ANONYMOUS {
                self.fill_caller(d);
            }
        });
        let reviewed = self
            .store
            .review_emergency(
                self.tenant.as_str(),
                id,
                &reviewer,
                verdict,
                now,
                crate::audit::ChangeEntry::maker(&entry),
            )
            .await?;
        crate::audit::ChangeEntry::done_if(entry, reviewed);
        if reviewed {
            tracing::info!(target: "carevault::security", grant = %id, verdict, "emergency access reviewed");
            Ok(())
        } else {
            Err(CoreError::NotFound)
        }
    }
}
