//! One audit entry as the code builds it, and as it is stored: a FHIR R4 AuditEvent following
//! IHE Basic Audit Log Patterns, serialised in a fixed field order with its own index as `id`.

use carevault_domain::Timestamp;
use serde_json::Value;

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
    /// Details of an event about the log itself or of the server's housekeeping (name,
    /// value): opaque numbers and random ids only.
    pub detail: Vec<(String, String)>,
}

/// What every entry's body starts with; the entry's index follows.
const HEAD: &[u8] = br#"{"resourceType":"AuditEvent","id":""#;

/// Appends `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `{"system":SYSTEM,"code":CODE}`.
fn coding(out: &mut Vec<u8>, system: &str, code: &str) {
    out.extend_from_slice(br#"{"system":"#);
    string(out, system);
    out.extend_from_slice(br#","code":"#);
    string(out, code);
    out.push(b'}');
}

impl AuditDraft {
    /// The stored form: canonical JSON (fixed field order), its index as `id`.
    pub fn render(&self, index: i64) -> Vec<u8> {
        self.rendered().with_index(index)
    }

    /// The entry rendered but for its index (known only inside the store's transaction):
    /// the expensive part, done before the entry reaches the store's single writer.
    pub(crate) fn rendered(&self) -> Rendered {
        let mut o = Vec::with_capacity(1024);
        o.extend_from_slice(br#"","type":"#);
        coding(&mut o, "http://terminology.hl7.org/CodeSystem/audit-event-type", "rest");
        o.extend_from_slice(br#","subtype":["#);
        coding(&mut o, "http://hl7.org/fhir/restful-interaction", &self.subtype);
        o.extend_from_slice(br#"],"action":"#);
        string(&mut o, self.action.encode_utf8(&mut [0u8; 4]));
        o.extend_from_slice(br#","recorded":"#);
        string(&mut o, &Timestamp::from_millis(self.recorded).to_fhir());
        o.extend_from_slice(br#","outcome":"#);
        string(&mut o, self.outcome.code());
        o.extend_from_slice(br#","agent":[{"type":{"coding":["#);
        coding(
            &mut o,
            "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "humanuser",
        );
        o.extend_from_slice(br#"]},"who":{"identifier":{"system":"urn:carevault:actor","value":"#);
        string(&mut o, &self.agent.who);
        o.extend_from_slice(br#"}},"requestor":true"#);
        if let Some(role) = &self.agent.role {
            o.extend_from_slice(br#","role":[{"text":"#);
            string(&mut o, role);
            o.extend_from_slice(b"}]");
        }
        if let Some(addr) = &self.agent.address {
            o.extend_from_slice(br#","network":{"address":"#);
            string(&mut o, addr);
            o.extend_from_slice(br#","type":"2"}"#);
        }
        o.push(b'}');
        if let Some(client) = &self.agent.client {
            o.extend_from_slice(
                br#",{"type":{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110150","display":"Application"}]},"who":{"identifier":{"system":"urn:carevault:client","value":"#,
            );
            string(&mut o, client);
            o.extend_from_slice(br#"}},"requestor":false}"#);
        }
        o.extend_from_slice(
            br#"],"source":{"observer":{"display":"carevault"},"type":[{"system":"http://terminology.hl7.org/CodeSystem/security-source-type","code":"4"}]}"#,
        );
        if let Some(p) = &self.purpose {
            o.extend_from_slice(br#","purposeOfEvent":[{"coding":["#);
            coding(&mut o, "http://terminology.hl7.org/CodeSystem/v3-ActReason", p);
            o.extend_from_slice(b"]}]");
        }
        let mut first = true;
        let mut entity = |o: &mut Vec<u8>| {
            o.extend_from_slice(if first {
                br#","entity":["#.as_slice()
            } else {
                b",".as_slice()
            });
            first = false;
        };
        const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
        if let Some(e) = &self.entity {
            entity(&mut o);
            o.extend_from_slice(br#"{"what":{"reference":"#);
            string(&mut o, e);
            o.extend_from_slice(br#"},"type":"#);
            coding(&mut o, ENTITY_TYPE, "2");
            if let Some(q) = &self.query_tag {
                o.extend_from_slice(br#","description":"#);
                string(&mut o, &format!("query hmac {q}"));
            }
            o.push(b'}');
        }
        if !self.detail.is_empty() {
            entity(&mut o);
            o.extend_from_slice(br#"{"what":{"display":"audit log"},"detail":["#);
            for (i, (k, v)) in self.detail.iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                o.extend_from_slice(br#"{"type":"#);
                string(&mut o, k);
                o.extend_from_slice(br#","valueString":"#);
                string(&mut o, v);
                o.push(b'}');
            }
            o.extend_from_slice(b"]}");
        }
        if let Some(p) = &self.patient {
            entity(&mut o);
            o.extend_from_slice(br#"{"what":{"reference":"#);
            string(&mut o, &format!("Patient/{p}"));
            o.extend_from_slice(br#"},"type":"#);
            coding(&mut o, ENTITY_TYPE, "1");
            o.extend_from_slice(br#","role":"#);
            coding(&mut o, "http://terminology.hl7.org/CodeSystem/object-role", "1");
            o.push(b'}');
        }
        if !first {
            o.push(b']');
        }
        o.push(b'}');
        Rendered { tail: o }
    }
}

/// An entry rendered but for its index.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    tail: Vec<u8>,
}

impl Rendered {
    /// What follows the index in the body.
    pub(crate) fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// An entry rendered earlier (kept in the journal), from what follows its index.
    pub(crate) fn from_tail(tail: Vec<u8>) -> Self {
        Rendered { tail }
    }

    /// The body with its index in place.
    pub(crate) fn with_index(&self, index: i64) -> Vec<u8> {
        let mut body = Vec::with_capacity(HEAD.len() + 20 + self.tail.len());
        body.extend_from_slice(HEAD);
        body.extend_from_slice(index.to_string().as_bytes());
        body.extend_from_slice(&self.tail);
        body
    }
}

/// The index an entry's body says it has.
pub(crate) fn index_of(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["id"].as_str()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> AuditDraft {
        AuditDraft {
            recorded: 1_700_000_000_123,
            subtype: "read".into(),
            action: 'R',
            outcome: Outcome::MinorFailure,
            agent: AuditAgent {
                who: "user:u\"1".into(),
                role: Some("physician".into()),
                client: Some("app-1".into()),
                address: Some("127.0.0.1".into()),
            },
            entity: Some("Patient/p1".into()),
            patient: Some("p1".into()),
            query_tag: Some("00ff".into()),
            purpose: Some("TREAT".into()),
            detail: vec![("pruned-from".into(), "0".into())],
        }
    }

    #[test]
    fn an_entry_is_a_balp_audit_event_with_its_index_as_id() {
        let body = full().render(42);
        assert!(body.starts_with(br#"{"resourceType":"AuditEvent","id":"42","#));
        let v: Value = serde_json::from_slice(&body).unwrap();
        let expected = json!({
            "resourceType": "AuditEvent",
            "id": "42",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
            "action": "R",
            "recorded": Timestamp::from_millis(1_700_000_000_123).to_fhir(),
            "outcome": "4",
            "agent": [
                {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                      "code": "humanuser"}]},
                 "who": {"identifier": {"system": "urn:carevault:actor", "value": "user:u\"1"}},
                 "requestor": true,
                 "role": [{"text": "physician"}],
                 "network": {"address": "127.0.0.1", "type": "2"}},
                {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150",
                                      "display": "Application"}]},
                 "who": {"identifier": {"system": "urn:carevault:client", "value": "app-1"}},
                 "requestor": false}
            ],
            "source": {"observer": {"display": "carevault"},
                       "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
            "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}],
            "entity": [
                {"what": {"reference": "Patient/p1"},
                 "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                 "description": "query hmac 00ff"},
                {"what": {"display": "audit log"}, "detail": [{"type": "pruned-from", "valueString": "0"}]},
                {"what": {"reference": "Patient/p1"},
                 "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                 "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}
            ]
        });
        assert_eq!(v, expected);
        assert_eq!(index_of(&body), Some(42));
    }

    #[test]
    fn optional_parts_are_left_out_and_the_body_stays_json() {
        let d = AuditDraft {
            agent: AuditAgent {
                who: "anonymous".into(),
                ..AuditAgent::default()
            },
            entity: None,
            patient: None,
            query_tag: None,
            purpose: None,
            detail: Vec::new(),
            ..full()
        };
        let v: Value = serde_json::from_slice(&d.render(0)).unwrap();
        assert!(v.get("entity").is_none() && v.get("purposeOfEvent").is_none());
        assert_eq!(v["agent"].as_array().unwrap().len(), 1);
        assert!(v["agent"][0].get("role").is_none() && v["agent"][0].get("network").is_none());
        assert_eq!(v["id"], "0");
    }
}
