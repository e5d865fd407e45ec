//! Who may see what. An [`Access`] is the decision for one caller — token scopes ∩ role ∩
//! care relationship — as data the query layer turns into conditions before anything is
//! read. It can only be made by [`Access::decide`] (or, for operator tools and the bootstrap
//! integration token, [`Access::unchecked_system`]), and the record store is reachable only
//! through a [`crate::Session`] that holds one.

pub mod mask;
mod role;
mod scope;

pub use role::{Kind, Role};
pub use scope::{ClinicalScope, Level, Perms, Scope, ScopeError, ScopeSet};

use carevault_domain::{ResourceId, ResourceType};

/// Security labels (`meta.security`) of sensitive data: hidden from staff unless the
/// patient's consent permits them by name (v3-ActCode sensitivity codes, and the restricted
/// and very restricted confidentiality codes).
pub const SENSITIVE_LABELS: &[(&str, &str)] = &[
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "ETH"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "GDIS"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIV"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "SCA"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "SDV"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "SEX"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "STD"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "TBOO"),
    ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"),
    ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "V"),
];

/// The consents a decision applies, with the caller as they see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsentView {
    pub consents: std::sync::Arc<crate::consent::ConsentSet>,
    /// Patients reached by break-the-glass: their consents and sensitivity labels do not
    /// limit this caller until the grant expires.
    pub emergency: Vec<ResourceId>,
    pub practitioner: Option<ResourceId>,
    /// The organizations of the practitioner's active roles (consent actors may name them).
    pub organizations: Vec<ResourceId>,
    pub purpose: &'static str,
    pub now: i64,
}

/// Which patients' compartments a caller reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every patient (system integrations; roles that see no clinical type anyway).
    All,
    /// Only these patients (possibly none).
    Patients(Vec<ResourceId>),
}

/// The account behind a request, as authentication established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Opaque account id (never a name).
    pub user_id: String,
    pub role: Role,
    /// The Patient a patient account is.
    pub patient: Option<ResourceId>,
    /// The Practitioner a staff account is.
    pub practitioner: Option<ResourceId>,
}

/// Who acted, for logs and the audit trail: opaque ids only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The bootstrap integration token or an operator command.
    System,
    /// A registered backend service acting for itself (SMART Backend Services).
    Client {
        client_id: String,
    },
    User {
        user_id: String,
        role: Role,
    },
}

/// One grant on a type: the interactions allowed and, for granular scopes, the search
/// constraints a resource must meet (all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    rtype: Option<ResourceType>,
    perms: Perms,
    filter: Vec<(String, String)>,
}

/// The decision for one caller. Fields are private: a value exists only because
/// [`Access::decide`] or [`Access::unchecked_system`] made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    actor: Actor,
    role: Option<Role>,
    reach: Reach,
    grants: Vec<Grant>,
    consent: Option<ConsentView>,
}

/// How a type's reads are limited for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFilter {
    /// Every resource of the type.
    Open,
    /// Only resources meeting one of these constraint sets (granular scopes).
    AnyOf(Vec<Vec<(String, String)>>),
}

impl Access {
    /// Everything, everywhere: for the bootstrap integration token (documented as
    /// `system/*.cruds`) and operator commands that run on the server's own machine.
    pub fn unchecked_system() -> Access {
        Access {
            actor: Actor::System,
            role: None,
            reach: Reach::All,
            grants: vec![Grant {
                rtype: None,
                perms: Perms::ALL,
                filter: Vec::new(),
            }],
            consent: None,
        }
    }

    /// An opaque key of who acts, for ownership of what they start (exports): never a name.
    pub fn actor_key(&self) -> String {
        match &self.actor {
            Actor::System => "system".into(),
            Actor::User { user_id, .. } => format!("user:{user_id}"),
            Actor::Client { client_id } => format!("client:{client_id}"),
        }
    }

    /// A backend service's decision: its `system/` scopes over every patient, and nothing
    /// from any other level (a backend acts for no user and no patient).
    pub fn for_backend(client_id: &str, scopes: &ScopeSet) -> Access {
        Access {
            actor: Actor::Client {
                client_id: client_id.to_owned(),
            },
            role: None,
            reach: Reach::All,
            grants: scopes
                .clinical(Level::System)
                .map(|s| Grant {
                    rtype: s.rtype,
                    perms: s.perms,
                    filter: s.filter.clone(),
                })
                .collect(),
            consent: None,
        }
    }

    /// The purpose of use a role acts for (v3-ActReason), as consent rules see it.
    pub fn purpose(&self) -> &'static str {
        match self.role {
            Some(Role::Physician | Role::Nurse | Role::LabTechnician | Role::Pharmacist) => "TREAT",
            Some(Role::Analyst) => "HRESCH",
            Some(Role::Patient) => "PATRQT",
            Some(Role::Receptionist | Role::Admin | Role::Auditor) => "HOPERAT",
            None => "HOPERAT",
        }
    }

    /// Applies the patients' consents to this decision (staff only: patients see their own
    /// record whole, and the system credential loads data).
    pub(crate) fn with_consent(
        mut self,
        consents: std::sync::Arc<crate::consent::ConsentSet>,
        practitioner: Option<ResourceId>,
        organizations: Vec<ResourceId>,
        emergency: Vec<ResourceId>,
        now: i64,
    ) -> Access {
        if self.role.is_some_and(|r| r != Role::Patient) {
            self.consent = Some(ConsentView {
                consents,
                emergency,
                practitioner,
                organizations,
                purpose: self.purpose(),
                now,
            });
        }
        self
    }

    /// Whether the caller may see one resource of `rtype` in these patients' compartments
    /// with these labels: its reach and the patients' consents, decided in memory (reads by
    /// id). `None` when the decision needs the index (a granular scope).
    pub(crate) fn allows_resource(
        &self,
        rtype: ResourceType,
        want: Perms,
        patients: &[String],
        labels: &[(String, String)],
    ) -> Option<bool> {
        match self.filter(rtype, want)? {
            TypeFilter::Open => {}
            TypeFilter::AnyOf(_) => return None,
        }
        if let Some(reached) = self.compartment_limit(rtype)
            && !patients.iter().any(|p| reached.iter().any(|r| r.as_str() == p))
        {
            return Some(false);
        }
        let (Some(view), Some(role)) = (&self.consent, self.role) else {
            return Some(true);
        };
        if Kind::of(rtype) != Kind::Compartment {
            return Some(true);
        }
        let who = crate::consent::ConsentActor {
            role,
            practitioner: view.practitioner.as_ref(),
            organizations: &view.organizations,
            purpose: view.purpose,
            now: view.now,
        };
        Some(crate::consent::allows(
            &view.consents,
            &who,
            rtype,
            self.compartment_limit(rtype),
            &view.emergency,
            patients,
            labels,
        ))
    }

    /// The conditions the patients' consents put on a query of `rtype`.
    pub(crate) fn consent_conds(&self, rtype: ResourceType) -> Vec<carevault_storage::Cond> {
        let (Some(view), Some(role)) = (&self.consent, self.role) else {
            return Vec::new();
        };
        if Kind::of(rtype) != Kind::Compartment {
            return Vec::new();
        }
        let who = crate::consent::ConsentActor {
            role,
            practitioner: view.practitioner.as_ref(),
            organizations: &view.organizations,
            purpose: view.purpose,
            now: view.now,
        };
        crate::consent::conditions(
            &view.consents,
            &who,
            rtype,
            self.compartment_limit(rtype),
            &view.emergency,
        )
    }

    /// The decision for `subject` holding `scopes`. `related` is the set of patients the
    /// subject has a care relationship with (clinical roles) or acts for (patients: `user/`
    /// scopes reach them too, `patient/` scopes only the patient's own record); `context` is the patient
    /// chosen at launch, which `patient/` scopes require.
    pub fn decide(
        subject: &Subject,
        scopes: &ScopeSet,
        related: Vec<ResourceId>,
        context: Option<&ResourceId>,
    ) -> Access {
        let role = subject.role;
        // The patients each scope level reaches.
        let user_reach = match role {
            // A patient reaches their own record and, through `related`, the patients they
            // act for (a RelatedPerson with authority, linked from their own Patient).
            Role::Patient => match &subject.patient {
                Some(p) => {
                    let mut mine = vec![p.clone()];
                    mine.extend(related.iter().filter(|r| *r != p).cloned());
                    Reach::Patients(mine)
                }
                None => Reach::Patients(Vec::new()),
            },
            r if r.needs_relationship() => Reach::Patients(related),
            _ => Reach::All,
        };
        let patient_reach = match (role, context, &subject.patient) {
            (Role::Patient, _, Some(own)) => Some(Reach::Patients(vec![own.clone()])),
            (Role::Patient, _, None) => None,
            (_, Some(ctx), _) => Some(narrow(&user_reach, ctx)),
            (_, None, _) => None,
        };
        // User scopes reach what the account reaches; patient scopes only the patient in
        // context. With both, the narrower reach holds for every grant: never widened.
        let mut grants = Vec::new();
        let mut reach = None;
        for (level, level_reach) in [(Level::User, Some(user_reach)), (Level::Patient, patient_reach)] {
            let Some(level_reach) = level_reach else { continue };
            let before = grants.len();
            grants.extend(scopes.clinical(level).map(|s| Grant {
                rtype: s.rtype,
                perms: s.perms,
                filter: s.filter.clone(),
            }));
            if grants.len() > before {
                reach = Some(level_reach);
            }
        }
        Access {
            actor: Actor::User {
                user_id: subject.user_id.clone(),
                role,
            },
            role: Some(role),
            reach: reach.unwrap_or(Reach::Patients(Vec::new())),
            grants,
            consent: None,
        }
    }

    /// Whether nothing limits the caller (the bootstrap token, operator commands).
    pub fn is_unrestricted(&self) -> bool {
        self.role.is_none()
            && self.reach == Reach::All
            && self
                .grants
                .iter()
                .any(|g| g.rtype.is_none() && g.perms == Perms::ALL && g.filter.is_empty())
    }

    /// The patient a patient account is (its only reach).
    pub fn own_patient(&self) -> Option<&ResourceId> {
        match (&self.role, &self.reach) {
            (Some(Role::Patient), Reach::Patients(p)) => p.first(),
            _ => None,
        }
    }

    /// The masks this caller's reads of `rtype` go through.
    pub fn masks(&self, rtype: ResourceType) -> &'static [mask::Mask] {
        self.role.map_or(&[], |r| r.masks(rtype))
    }

    /// The role behind the decision (`None` for the system credential).
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// Whether the caller may do all of `want` on some resources of `rtype`.
    pub fn allows(&self, rtype: ResourceType, want: Perms) -> bool {
        self.filter(rtype, want).is_some()
    }

    /// How the caller's `want` interactions on `rtype` are limited; `None` = not at all allowed.
    pub fn filter(&self, rtype: ResourceType, want: Perms) -> Option<TypeFilter> {
        if let Some(role) = self.role
            && !role.perms(rtype).contains(want)
        {
            return None;
        }
        if Kind::of(rtype) == Kind::Unscoped && self.reach != Reach::All {
            return None;
        }
        let mut sets = Vec::new();
        for g in &self.grants {
            if g.rtype.is_some_and(|t| t != rtype) || !g.perms.contains(want) {
                continue;
            }
            if g.filter.is_empty() {
                return Some(TypeFilter::Open);
            }
            sets.push(g.filter.clone());
        }
        (!sets.is_empty()).then_some(TypeFilter::AnyOf(sets))
    }

    /// The patients whose compartments `rtype` is limited to; `None` = no limit (the caller
    /// reaches every patient, or the type is directory data).
    pub fn compartment_limit(&self, rtype: ResourceType) -> Option<&[ResourceId]> {
        match (&self.reach, Kind::of(rtype)) {
            (Reach::Patients(p), Kind::Compartment) => Some(p),
            _ => None,
        }
    }

    /// Whether every patient in `patients` is reachable (and, when limited, there is one).
    pub fn reaches_all(&self, patients: &[ResourceId]) -> bool {
        match &self.reach {
            Reach::All => true,
            Reach::Patients(p) => !patients.is_empty() && patients.iter().all(|x| p.contains(x)),
        }
    }
}

fn narrow(reach: &Reach, patient: &ResourceId) -> Reach {
    match reach {
        Reach::All => Reach::Patients(vec![patient.clone()]),
        Reach::Patients(p) if p.contains(patient) => Reach::Patients(vec![patient.clone()]),
        Reach::Patients(_) => Reach::Patients(Vec::new()),
    }
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod doc;
#[cfg(test)]
mod tests;
