//! The CapabilityStatement: built from the same facts the router serves, and checked claim
//! by claim against the running server by the integration tests.

use carevault_domain::ResourceType;
use carevault_domain::search::{Class, class_of, params};
use serde_json::{Value, json};

/// Interactions every stored type supports.
pub(crate) const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Interactions at the system level.
pub(crate) const SYSTEM_INTERACTIONS: &[&str] = &["transaction", "batch", "history-system", "search-system"];

/// `root` is the server root where the OAuth endpoints live; `cors` whether any browser
/// origin is allowed.
pub(crate) fn capability_statement(date: &str, root: &str, cors: bool) -> Value {
    let resources: Vec<Value> = ResourceType::ALL
        .iter()
        .map(|t| {
            json!({
                "type": t.as_str(),
                "interaction": TYPE_INTERACTIONS.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": search_params(*t),
                "operation": match *t {
                    ResourceType::Patient => json!([
                        {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                        {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}
                    ]),
                    ResourceType::Group => json!([
                        {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}
                    ]),
                    _ => json!([]),
                },
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "carevault", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "carevault: an encrypted FHIR R4 store"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Every identifying byte is encrypted at rest under per-patient keys.",
            "security": {
                "cors": cors,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"
                }]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": format!("{root}/oauth/authorize")},
                        {"url": "token", "valueUri": format!("{root}/oauth/token")},
                        {"url": "introspect", "valueUri": format!("{root}/oauth/introspect")},
                        {"url": "revoke", "valueUri": format!("{root}/oauth/revoke")}
                    ]
                }],
                "description": "Every endpoint except /metadata and .well-known/smart-configuration requires a bearer \
                    token: a SMART access token from /oauth/token, or the operator's integration token."
            },
            "resource": resources,
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
            "interaction": SYSTEM_INTERACTIONS.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
            "searchParam": system_search_params(),
            "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]
        }]
    })
}

/// The parameters of a search across types without `_type`: those every type has alike.
fn system_search_params() -> Vec<Value> {
    let Some(first) = ResourceType::ALL.first() else {
        return Vec::new();
    };
    params::all(*first)
        .filter(|p| {
            ResourceType::ALL
                .iter()
                .all(|t| params::find(*t, p.name).is_some_and(|q| q.kind == p.kind))
        })
        .map(|p| json!({"name": p.name, "type": p.kind.as_str()}))
        .collect()
}

/// The parameters a type supports, each with its class under the searchability contract.
fn search_params(t: ResourceType) -> Vec<Value> {
    params::all(t)
        .map(|p| {
            let doc = match class_of(t, p) {
                Class::Identifying => "identifying: matched through keyed blind tags, re-checked after decryption",
                _ => "clinical: plain index keyed by random ids",
            };
            json!({"name": p.name, "type": p.kind.as_str(), "documentation": doc})
        })
        .chain(std::iter::once(json!({
            "name": "_filter",
            "type": "special",
            "documentation": "FHIR filter expressions over these parameters (and, or, not, parentheses); identifying parameters only ANDed at the top"
        })))
        .collect()
}
