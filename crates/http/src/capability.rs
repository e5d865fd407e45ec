//! The CapabilityStatement: built from the same facts the router serves, and checked claim
//! by claim against the running server by the integration tests.

use carevault_domain::ResourceType;
use serde_json::{Value, json};

/// Interactions every stored type supports.
pub(crate) const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Interactions at the system level.
pub(crate) const SYSTEM_INTERACTIONS: &[&str] = &["transaction", "batch", "history-system"];

pub(crate) fn capability_statement(date: &str) -> Value {
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
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": [
                    {"name": "_id", "type": "token", "documentation": "Logical id"},
                    {"name": "identifier", "type": "token",
                     "documentation": "Business identifier, matched through a keyed blind index"}
                ]
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
        "rest": [{
            "mode": "server",
            "documentation": "Every identifying byte is encrypted at rest under per-patient keys.",
            "security": {
                "cors": false,
                "description": "Every endpoint except /metadata requires an API bearer token (Authorization: Bearer …)."
            },
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|i| json!({"code": i})).collect::<Vec<_>>()
        }]
    })
}
