//! One audit entry as the code builds it, and as it is stored: a FHIR R4 AuditEvent following
//! IHE Basic Audit Log Patterns, serialised in a fixed field order with its own index as `id`.

use carevault_domain::Timestamp;
use serde_json::{Value, json};

/// How the interaction ended (AuditEvent.outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `0`: success.
    Success,
    /// `4`: the request was refused or failed by the caller's fault (a 4xx).
    MinorFailure,
    /// `8`: the server failed (a 5xx).
    SeriousFailure,
}

impl Outcome {
    pub fn from_status(status: u16) -> Outcome {
        match status {
            0..=399 => Outcome::Success,
            400..=499 => Outcome::MinorFailure,
            _ => Outcome::SeriousFailure,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
            Outcome::SeriousFailure => "8",
        }
    }
}

/// Who acted: opaque ids and codes only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditAgent {
    /// `system`, `user:ID`, `client:ID`, or `anonymous` (no valid credential).
    pub who: String,
    /// The account's role, if any.
    pub role: Option<String>,
    /// The OAuth client the token was issued to, if any.
    pub client: Option<String>,
    /// The network address the request came from.
    pub address: Option<String>,
}

/// An entry before it has its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub recorded: i64,
    /// The interaction (a `restful-interaction` code, or an operation or event name such as
    /// `login`, `token`, `break-the-glass`).
    pub subtype: String,
    /// C, R, U, D or E.
    pub action: char,
    pub outcome: Outcome,
    pub agent: AuditAgent,
    /// The resource or type acted on (`Type/id` or `Type`).
    pub entity: Option<String>,
    /// The patient whose record was touched, by id.
    pub patient: Option<String>,
    /// A keyed hash of the search's terms.
    pub query_tag: Option<String>,
    /// v3-ActReason purpose of use.
    pub purpose: Option<String>,
    /// Details of an event about the log itself (name, value): opaque numbers only.
    pub detail: Vec<(String, String)>,
}

impl AuditDraft {
    /// The stored form: canonical JSON, its index as `id`.
    pub fn render(&self, index: i64) -> Vec<u8> {
        let mut agent = json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                  "code": "humanuser"}]},
            "who": {"identifier": {"system": "urn:carevault:actor", "value": self.agent.who}},
            "requestor": true
        });
        if let Some(role) = &self.agent.role {
            agent["role"] = json!([{"text": role}]);
        }
        if let Some(addr) = &self.agent.address {
            agent["network"] = json!({"address": addr, "type": "2"});
        }
        let mut agents = vec![agent];
        if let Some(client) = &self.agent.client {
            agents.push(json!({
                "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150",
                                      "display": "Application"}]},
                "who": {"identifier": {"system": "urn:carevault:client", "value": client}},
                "requestor": false
            }));
        }
        let mut entities = Vec::new();
        if let Some(e) = &self.entity {
            let mut ent = json!({"what": {"reference": e}, "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}});
            if let Some(q) = &self.query_tag {
                ent["description"] = json!(format!("query hmac {q}"));
            }
            entities.push(ent);
        }
        if !self.detail.is_empty() {
            let detail: Vec<Value> = self
                .detail
                .iter()
                .map(|(k, v)| json!({"type": k, "valueString": v}))
                .collect();
            entities.push(json!({"what": {"display": "audit log"}, "detail": detail}));
        }
        if let Some(p) = &self.patient {
            entities.push(json!({
                "what": {"reference": format!("Patient/{p}")},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}
            }));
        }
        let mut v = json!({
            "resourceType": "AuditEvent",
            "id": index.to_string(),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": self.subtype}],
            "action": self.action.to_string(),
            "recorded": Timestamp::from_millis(self.recorded).to_fhir(),
            "outcome": self.outcome.code(),
            "agent": agents,
            "source": {"observer": {"display": "carevault"},
                       "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        });
        if let Some(p) = &self.purpose {
            v["purposeOfEvent"] =
                json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p}]}]);
        }
        if !entities.is_empty() {
            v["entity"] = Value::Array(entities);
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// The index an entry's body says it has.
pub(crate) fn index_of(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["id"].as_str()?.parse().ok()
}
