//! Reading the log: auditors search entries; a patient reads who looked at their record.

use super::StaffMember;
use crate::access::Role;
use crate::{CoreError, Session};
use carevault_domain::Timestamp;
use carevault_storage::{AuditFilter, Store};
use serde_json::Value;

/// One line of a patient's access report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    pub when: Timestamp,
    /// The actor key (`user:ID`, `client:ID`, `system`).
    pub agent: String,
    /// The member of staff, when the actor is an account.
    pub staff: Option<StaffMember>,
    /// The interaction (`read`, `search-type`, …).
    pub interaction: String,
    /// The kind of data: the resource type.
    pub what: Option<String>,
    pub purpose: Option<String>,
    /// Whether the access was made under a break-the-glass grant.
    pub emergency: bool,
    pub outcome: String,
}

impl<S: Store> Session<'_, S> {
    /// Entries matching `filter`, newest first, as stored (AuditEvent JSON). For the privacy
    /// officer (auditor) and the system credential only.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<Vec<u8>>, CoreError> {
        let allowed = self.access().is_unrestricted() || self.access().role() == Some(Role::Auditor);
        if !allowed {
            return Err(CoreError::Forbidden("the audit log is for the privacy officer".into()));
        }
        self.flush_audit_journal().await?;
        Ok(self
            .store
            .audit_search(filter)
            .await?
            .into_iter()
            .filter(|r| !r.body.is_empty())
            .map(|r| r.body)
            .collect())
    }

    /// "Who looked at my record": every access to the calling patient's record by anyone
    /// but themselves, newest first, staff named, break-the-glass marked.
    pub async fn access_report(&self, limit: u32) -> Result<Vec<AccessLine>, CoreError> {
        let (Some(Role::Patient), Some(own)) = (self.access().role(), self.access().own_patient()) else {
            return Err(CoreError::Forbidden("the access report is the patient's own".into()));
        };
        let me = self.access().actor_key();
        self.flush_audit_journal().await?;
        let rows = self
            .store
            .audit_search(&AuditFilter {
                patient: Some(own.as_str().to_owned()),
                limit: limit.clamp(1, 1000),
                ..AuditFilter::default()
            })
            .await?;
        let grants = self
            .store
            .emergencies(self.tenant.as_str(), Some(own.as_str()), false)
            .await?;
        let mut names = std::collections::HashMap::new();
        let mut out = Vec::new();
        for r in rows.into_iter().filter(|r| r.agent != me && !r.body.is_empty()) {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let when = body["recorded"]
                .as_str()
                .and_then(Timestamp::parse)
                .unwrap_or(Timestamp::from_millis(r.recorded));
            let staff = match r.agent.strip_prefix("user:") {
                Some(id) => self.staff_member(id, &mut names).await?,
                None => None,
            };
            let emergency = r.agent.strip_prefix("user:").is_some_and(|id| {
                grants
                    .iter()
                    .any(|g| g.user_id == id && g.started <= when.millis() && when.millis() < g.expires)
            });
            out.push(AccessLine {
                when,
                agent: r.agent.clone(),
                staff,
                interaction: r.subtype.clone(),
                what: r.entity.as_deref().map(|e| e.split('/').next().unwrap_or(e).to_owned()),
                purpose: body["purposeOfEvent"][0]["coding"][0]["code"]
                    .as_str()
                    .map(str::to_owned),
                emergency,
                outcome: r.outcome.clone(),
            });
        }
        Ok(out)
    }
}
