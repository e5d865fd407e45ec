//! The R4 patient compartment, written out as our own table: for each resource type, the
//! search parameters that place a resource in a patient's compartment and the element paths
//! behind them. The compartment decides which data key encrypts a resource.

use crate::{Reference, ResourceId, ResourceType};
use serde_json::Value;

/// One compartment parameter: its name and the element paths (without the type prefix) whose
/// references it follows. Only references to `Patient` count.
#[derive(Debug, Clone, Copy)]
pub struct CompartmentParam {
    pub name: &'static str,
    pub paths: &'static [&'static str],
}

macro_rules! p {
    ($name:literal, &[$($path:literal),*]) => {
        CompartmentParam { name: $name, paths: &[$($path),*] }
    };
}

/// The compartment parameters of a type; empty when the type is never in a patient's
/// compartment.
pub fn params(rtype: ResourceType) -> &'static [CompartmentParam] {
    use ResourceType as T;
    match rtype {
        T::Account => &[p!("subject", &["subject"])],
        T::AdverseEvent => &[p!("subject", &["subject"])],
        T::AllergyIntolerance => &[
            p!("patient", &["patient"]),
            p!("recorder", &["recorder"]),
            p!("asserter", &["asserter"]),
        ],
        T::Appointment => &[p!("actor", &["participant.actor"])],
        T::AppointmentResponse => &[p!("actor", &["actor"])],
        T::AuditEvent => &[p!("patient", &["agent.who", "entity.what"])],
        T::Basic => &[p!("patient", &["subject"]), p!("author", &["author"])],
        T::BodyStructure => &[p!("patient", &["patient"])],
        T::CarePlan => &[
            p!("patient", &["subject"]),
            p!("performer", &["activity.detail.performer"]),
        ],
        T::CareTeam => &[p!("patient", &["subject"]), p!("participant", &["participant.member"])],
        T::ChargeItem => &[p!("subject", &["subject"])],
        T::Claim => &[p!("patient", &["patient"]), p!("payee", &["payee.party"])],
        T::ClaimResponse => &[p!("patient", &["patient"])],
        T::ClinicalImpression => &[p!("subject", &["subject"])],
        T::Communication => &[
            p!("subject", &["subject"]),
            p!("sender", &["sender"]),
            p!("recipient", &["recipient"]),
        ],
        T::CommunicationRequest => &[
            p!("subject", &["subject"]),
            p!("sender", &["sender"]),
            p!("recipient", &["recipient"]),
            p!("requester", &["requester"]),
        ],
        T::Composition => &[
            p!("subject", &["subject"]),
            p!("author", &["author"]),
            p!("attester", &["attester.party"]),
        ],
        T::Condition => &[p!("patient", &["subject"]), p!("asserter", &["asserter"])],
        T::Consent => &[p!("patient", &["patient"])],
        T::Coverage => &[
            p!("policy-holder", &["policyHolder"]),
            p!("subscriber", &["subscriber"]),
            p!("beneficiary", &["beneficiary"]),
            p!("payor", &["payor"]),
        ],
        T::CoverageEligibilityRequest => &[p!("patient", &["patient"])],
        T::CoverageEligibilityResponse => &[p!("patient", &["patient"])],
        T::DetectedIssue => &[p!("patient", &["patient"])],
        T::DeviceRequest => &[p!("subject", &["subject"]), p!("performer", &["performer"])],
        T::DeviceUseStatement => &[p!("subject", &["subject"])],
        T::DiagnosticReport => &[p!("subject", &["subject"])],
        T::DocumentManifest => &[
            p!("subject", &["subject"]),
            p!("author", &["author"]),
            p!("recipient", &["recipient"]),
        ],
        T::DocumentReference => &[p!("subject", &["subject"]), p!("author", &["author"])],
        T::Encounter => &[p!("patient", &["subject"])],
        T::EnrollmentRequest => &[p!("subject", &["candidate"])],
        T::EpisodeOfCare => &[p!("patient", &["patient"])],
        T::ExplanationOfBenefit => &[p!("patient", &["patient"]), p!("payee", &["payee.party"])],
        T::FamilyMemberHistory => &[p!("patient", &["patient"])],
        T::Flag => &[p!("patient", &["subject"])],
        T::Goal => &[p!("patient", &["subject"])],
        T::Group => &[p!("member", &["member.entity"])],
        T::ImagingStudy => &[p!("patient", &["subject"])],
        T::Immunization => &[p!("patient", &["patient"])],
        T::ImmunizationEvaluation => &[p!("patient", &["patient"])],
        T::ImmunizationRecommendation => &[p!("patient", &["patient"])],
        T::Invoice => &[
            p!("subject", &["subject"]),
            p!("patient", &["subject"]),
            p!("recipient", &["recipient"]),
        ],
        T::List => &[p!("subject", &["subject"]), p!("source", &["source"])],
        T::MeasureReport => &[p!("patient", &["subject"])],
        T::Media => &[p!("subject", &["subject"])],
        T::MedicationAdministration => &[
            p!("patient", &["subject"]),
            p!("performer", &["performer.actor"]),
            p!("subject", &["subject"]),
        ],
        T::MedicationDispense => &[
            p!("subject", &["subject"]),
            p!("patient", &["subject"]),
            p!("receiver", &["receiver"]),
        ],
        T::MedicationRequest => &[p!("subject", &["subject"])],
        T::MedicationStatement => &[p!("subject", &["subject"])],
        T::MolecularSequence => &[p!("patient", &["patient"])],
        T::NutritionOrder => &[p!("patient", &["patient"])],
        T::Observation => &[p!("subject", &["subject"]), p!("performer", &["performer"])],
        T::Patient => &[p!("link", &["link.other"])],
        T::Person => &[p!("patient", &["link.target"])],
        T::Procedure => &[p!("patient", &["subject"]), p!("performer", &["performer.actor"])],
        T::Provenance => &[p!("patient", &["target"])],
        T::QuestionnaireResponse => &[p!("subject", &["subject"]), p!("author", &["author"])],
        T::RelatedPerson => &[p!("patient", &["patient"])],
        T::RequestGroup => &[p!("subject", &["subject"]), p!("participant", &["action.participant"])],
        T::ResearchSubject => &[p!("individual", &["individual"])],
        T::RiskAssessment => &[p!("subject", &["subject"])],
        T::Schedule => &[p!("actor", &["actor"])],
        T::ServiceRequest => &[p!("subject", &["subject"]), p!("performer", &["performer"])],
        T::Specimen => &[p!("subject", &["subject"])],
        T::SupplyDelivery => &[p!("patient", &["patient"])],
        T::SupplyRequest => &[p!("subject", &["deliverTo"])],
        T::VisionPrescription => &[p!("patient", &["patient"])],
        _ => &[],
    }
}

/// Types whose resources may name many patients at once (a Group's members, a Schedule's
/// actors). They are kept under the tenant key, not under one member's key, so erasing one
/// patient never makes a shared resource unreadable.
fn is_shared(rtype: ResourceType) -> bool {
    matches!(rtype, ResourceType::Group | ResourceType::Schedule)
}

/// Every patient whose compartment holds this resource.
pub fn patients_of(rtype: ResourceType, id: Option<&ResourceId>, body: &Value) -> Vec<ResourceId> {
    let mut out = Vec::new();
    if rtype == ResourceType::Patient
        && let Some(id) = id
    {
        out.push(id.clone());
    }
    for param in params(rtype) {
        for path in param.paths {
            collect_patient_refs(body, path, &mut out);
        }
    }
    out.dedup();
    out
}

/// The patient whose data key encrypts this resource: the Patient itself, else the first
/// patient named by the compartment parameters in table order. `None` means the tenant key.
pub fn key_owner(rtype: ResourceType, id: &ResourceId, body: &Value) -> Option<ResourceId> {
    if rtype == ResourceType::Patient {
        return Some(id.clone());
    }
    if is_shared(rtype) {
        return None;
    }
    for param in params(rtype) {
        for path in param.paths {
            let mut found = Vec::new();
            collect_patient_refs(body, path, &mut found);
            if let Some(first) = found.into_iter().next() {
                return Some(first);
            }
        }
    }
    None
}

fn collect_patient_refs(node: &Value, path: &str, out: &mut Vec<ResourceId>) {
    match node {
        Value::Array(items) => {
            for item in items {
                collect_patient_refs(item, path, out);
            }
        }
        Value::Object(map) => {
            let (head, rest) = match path.split_once('.') {
                Some((h, r)) => (h, Some(r)),
                None => (path, None),
            };
            let Some(child) = map.get(head) else { return };
            match rest {
                Some(rest) => collect_patient_refs(child, rest, out),
                None => collect_reference(child, out),
            }
        }
        _ => {}
    }
}

fn collect_reference(node: &Value, out: &mut Vec<ResourceId>) {
    match node {
        Value::Array(items) => items.iter().for_each(|i| collect_reference(i, out)),
        Value::Object(map) => {
            if let Some(Value::String(s)) = map.get("reference")
                && let Some(id) = Reference::parse(s).patient_id()
                && !out.contains(id)
            {
                out.push(id.clone());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rid(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap_or_else(|_| ResourceId::from_random([0; 16]))
    }

    #[test]
    fn owner_of_an_observation_is_its_subject() {
        let body = json!({"subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Patient/p2"}]});
        assert_eq!(key_owner(ResourceType::Observation, &rid("o"), &body), Some(rid("p1")));
        assert_eq!(
            patients_of(ResourceType::Observation, None, &body),
            vec![rid("p1"), rid("p2")]
        );
    }

    #[test]
    fn nested_paths_and_arrays() {
        let body = json!({"participant": [
            {"actor": {"reference": "Practitioner/d"}},
            {"actor": {"reference": "Patient/p9"}}
        ]});
        assert_eq!(key_owner(ResourceType::Appointment, &rid("a"), &body), Some(rid("p9")));
    }

    #[test]
    fn patient_owns_itself_and_shared_types_use_the_tenant_key() {
        assert_eq!(
            key_owner(ResourceType::Patient, &rid("me"), &json!({})),
            Some(rid("me"))
        );
        let g = json!({"member": [{"entity": {"reference": "Patient/a"}}]});
        assert_eq!(key_owner(ResourceType::Group, &rid("g"), &g), None);
        assert_eq!(key_owner(ResourceType::Organization, &rid("o"), &json!({})), None);
    }
}
