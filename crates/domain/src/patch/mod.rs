//! Patches to a resource body: JSON Patch (RFC 6902) and FHIRPath Patch (a `Parameters`
//! resource of operations addressed by FHIRPath). Applied to a copy; the caller keeps the
//! result only when every operation succeeded.

mod fhirpath;
mod json;
mod operations;
mod select;

use serde_json::Value;

/// Why a patch could not be applied. Messages name operations and positions, not values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    #[error("operation {0}: {1}")]
    Malformed(usize, &'static str),
    /// The patch does not fit the resource (422).
    #[error("operation {0}: {1}")]
    Failed(usize, &'static str),
}

/// A patch document, by the format its request named.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchDocument {
    /// `application/json-patch+json`: an array of RFC 6902 operations.
    Json(Value),
    /// A FHIR `Parameters` resource of FHIRPath Patch operations.
    FhirPath(Value),
}

impl PatchDocument {
    /// A FHIR body is a FHIRPath Patch when it is a `Parameters` resource.
    pub fn from_fhir_body(body: Value) -> Result<Self, PatchError> {
        if body.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
            Ok(Self::FhirPath(body))
        } else {
            Err(PatchError::Malformed(0, "a FHIRPath Patch is a Parameters resource"))
        }
    }

    /// `doc` with every operation applied, or the first that failed.
    pub fn apply(&self, doc: &Value) -> Result<Value, PatchError> {
        match self {
            Self::Json(p) => json::apply(doc, p),
            Self::FhirPath(p) => operations::apply(doc, p),
        }
    }
}

pub use json::apply;
