//! Roles and what each may do with each resource type, before scopes, relationships and
//! consent narrow it further. docs/ACCESS.md prints this table; a test keeps them equal.

use super::Perms;
use carevault_domain::{ResourceType, compartment};
use std::fmt;

/// The role of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Patient,
    Physician,
    Nurse,
    Receptionist,
    LabTechnician,
    Pharmacist,
    Analyst,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::Patient,
        Role::Physician,
        Role::Nurse,
        Role::Receptionist,
        Role::LabTechnician,
        Role::Pharmacist,
        Role::Analyst,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::Receptionist => "receptionist",
            Role::LabTechnician => "lab-technician",
            Role::Pharmacist => "pharmacist",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Staff roles sign in with a second factor by default.
    pub fn is_staff(self) -> bool {
        self != Role::Patient
    }

    /// Whether patient data is limited to patients the account has a care relationship with
    /// (clinical roles); the others either see their own compartment (patients) or see no
    /// clinical type at all, so their reach is the whole tenant for the types they may use.
    pub fn needs_relationship(self) -> bool {
        matches!(
            self,
            Role::Physician | Role::Nurse | Role::LabTechnician | Role::Pharmacist
        )
    }

    /// What the role may do with a resource type.
    pub fn perms(self, rtype: ResourceType) -> Perms {
        use Perms as P;
        use ResourceType as T;
        let crus = P::CREATE.union(P::READ).union(P::UPDATE).union(P::SEARCH);
        let rsu = P::RS.union(P::UPDATE);
        let kind = Kind::of(rtype);
        match self {
            Role::Patient => match (kind, rtype) {
                (_, T::AuditEvent) => P::NONE,
                (Kind::Compartment, T::Consent | T::Appointment | T::QuestionnaireResponse | T::Communication) => crus,
                (Kind::Compartment | Kind::Directory, _) => P::RS,
                _ => P::NONE,
            },
            Role::Physician | Role::Nurse => match (kind, rtype) {
                (_, T::AuditEvent) => P::NONE,
                (Kind::Compartment, _) if self == Role::Physician => P::ALL,
                (Kind::Compartment, _) => crus,
                (Kind::Directory, _) => P::RS,
                _ => P::NONE,
            },
            Role::LabTechnician => match rtype {
                T::Patient => P::RS,
                T::ServiceRequest => rsu,
                T::Specimen | T::Observation | T::DiagnosticReport | T::ImagingStudy | T::Media => crus,
                _ if kind == Kind::Directory => P::RS,
                _ => P::NONE,
            },
            Role::Pharmacist => match rtype {
                T::Patient | T::AllergyIntolerance | T::Condition | T::Observation | T::MedicationStatement => P::RS,
                T::MedicationRequest => rsu,
                T::MedicationDispense | T::MedicationAdministration => crus,
                _ if kind == Kind::Directory => P::RS,
                _ => P::NONE,
            },
            Role::Receptionist => match rtype {
                T::Patient | T::RelatedPerson | T::Coverage => crus,
                T::Appointment | T::AppointmentResponse | T::Schedule | T::Slot => P::ALL,
                _ if kind == Kind::Directory => P::RS,
                _ => P::NONE,
            },
            Role::Admin => match kind {
                Kind::Directory => P::ALL,
                _ => P::NONE,
            },
            Role::Auditor => match rtype {
                T::AuditEvent => P::RS,
                _ => P::NONE,
            },
            Role::Analyst => P::NONE,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How access to a type is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In the patient compartment: filtered by the patients the caller may reach.
    Compartment,
    /// Shared directory and definition data (practitioners, organisations, locations, code
    /// systems…): no patient's data, readable by anyone whose role and scopes allow the type.
    Directory,
    /// Neither (Bundle, Binary, Group members outside the compartment…): may carry patient
    /// data without saying whose, so only a caller with the whole tenant in reach sees it.
    Unscoped,
}

impl Kind {
    pub fn of(rtype: ResourceType) -> Kind {
        use ResourceType as T;
        if !compartment::params(rtype).is_empty() {
            return Kind::Compartment;
        }
        match rtype {
            T::Practitioner
            | T::PractitionerRole
            | T::Organization
            | T::OrganizationAffiliation
            | T::Location
            | T::HealthcareService
            | T::Endpoint
            | T::Slot
            | T::Medication
            | T::MedicationKnowledge
            | T::Substance
            | T::ActivityDefinition
            | T::PlanDefinition
            | T::Questionnaire
            | T::ValueSet
            | T::CodeSystem
            | T::ConceptMap
            | T::NamingSystem
            | T::StructureDefinition
            | T::SearchParameter
            | T::CapabilityStatement
            | T::OperationDefinition
            | T::CompartmentDefinition
            | T::Library
            | T::Measure
            | T::ObservationDefinition
            | T::SpecimenDefinition => Kind::Directory,
            _ => Kind::Unscoped,
        }
    }
}
