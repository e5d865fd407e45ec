//! A FHIR resource body: a JSON object with a known `resourceType`, checked on the way in.

use crate::{Reference, ResourceId, ResourceType, Timestamp, VersionId};
use serde_json::{Map, Value};

/// Why a body is not an acceptable resource. Messages never repeat the body's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("the body is not valid JSON (line {line}, column {column})")]
    BadJson { line: usize, column: usize },
    /// Valid JSON nested past the parser's limit (128 arrays and objects deep).
    #[error("the body nests arrays and objects more than 128 deep")]
    TooDeep,
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("the body has no resourceType")]
    MissingType,
    #[error("resourceType is not an R4 resource type")]
    UnknownType,
    #[error("the element `{0}` has the wrong JSON type")]
    WrongType(String),
    #[error("the id is not a valid FHIR id")]
    BadId,
    /// A well-formed value that FHIR does not allow (answered with 422).
    #[error("{0}")]
    Unprocessable(String),
}

/// A parsed resource. The JSON object is kept whole; helpers read and change the few
/// elements the server owns (`id`, `meta.versionId`, `meta.lastUpdated`).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    rtype: ResourceType,
    /// Always a JSON object (checked by `from_value`).
    body: Value,
}

impl ResourceError {
    /// Why a body did not parse as JSON: where, or that it nests too deep.
    pub fn from_json(e: &serde_json::Error) -> Self {
        if e.to_string().starts_with("recursion limit exceeded") {
            ResourceError::TooDeep
        } else {
            ResourceError::BadJson {
                line: e.line(),
                column: e.column(),
            }
        }
    }
}

impl Resource {
    pub fn parse(bytes: &[u8]) -> Result<Self, ResourceError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ResourceError::from_json(&e))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, ResourceError> {
        let Value::Object(body) = value else {
            return Err(ResourceError::NotAnObject);
        };
        let rtype = match body.get("resourceType") {
            None => return Err(ResourceError::MissingType),
            Some(Value::String(s)) => s.parse::<ResourceType>().map_err(|_| ResourceError::UnknownType)?,
            Some(_) => return Err(ResourceError::WrongType("resourceType".into())),
        };
        match body.get("id") {
            None => {}
            Some(Value::String(s)) => {
                ResourceId::parse(s).map_err(|_| ResourceError::BadId)?;
            }
            Some(_) => return Err(ResourceError::WrongType("id".into())),
        }
        match body.get("meta") {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(ResourceError::WrongType("meta".into())),
        }
        if let Some(v) = body.get("identifier")
            && !v.is_array()
            && !v.is_object()
        {
            return Err(ResourceError::WrongType("identifier".into()));
        }
        crate::validate::check(rtype.as_str(), &body).map_err(|e| match e {
            crate::validate::ContentError::WrongType(element) => ResourceError::WrongType(element),
            crate::validate::ContentError::BadValue(..) => ResourceError::Unprocessable(e.to_string()),
        })?;
        Ok(Self {
            rtype,
            body: Value::Object(body),
        })
    }

    fn map(&self) -> Option<&Map<String, Value>> {
        self.body.as_object()
    }

    fn map_mut(&mut self) -> Option<&mut Map<String, Value>> {
        self.body.as_object_mut()
    }

    pub fn rtype(&self) -> ResourceType {
        self.rtype
    }

    /// The id in the body, if any (already checked to be well formed).
    pub fn id(&self) -> Option<ResourceId> {
        match self.body.get("id") {
            Some(Value::String(s)) => ResourceId::parse(s).ok(),
            _ => None,
        }
    }

    /// Sets the id, placing it right after `resourceType` when it is new.
    pub fn set_id(&mut self, id: &ResourceId) {
        let v = Value::String(id.as_str().to_owned());
        let Some(body) = self.map_mut() else { return };
        match body.get_mut("id") {
            Some(slot) => *slot = v,
            None => {
                let at = usize::from(body.contains_key("resourceType")).min(body.len());
                body.shift_insert(at, "id".into(), v);
            }
        }
    }

    /// Writes the server-owned `meta.versionId` and `meta.lastUpdated`, keeping other meta.
    pub fn set_meta(&mut self, version: VersionId, at: Timestamp) {
        let Some(body) = self.map_mut() else { return };
        if !body.contains_key("meta") {
            let at = body.keys().position(|k| k == "id").map_or(0, |i| i + 1).min(body.len());
            body.shift_insert(at, "meta".into(), Value::Object(Map::new()));
        }
        if let Some(Value::Object(m)) = body.get_mut("meta") {
            m.insert("versionId".into(), Value::String(version.to_string()));
            m.insert("lastUpdated".into(), Value::String(at.to_fhir()));
        }
    }

    /// True when the two differ at most in `meta.versionId` and `meta.lastUpdated`: an update
    /// that changes nothing else makes no new version.
    pub fn same_content(&self, other: &Resource) -> bool {
        match (self.map(), other.map()) {
            (Some(a), Some(b)) => self.rtype == other.rtype && strip_server_meta(a) == strip_server_meta(b),
            _ => false,
        }
    }

    /// The resource as JSON (always an object).
    pub fn json(&self) -> &Value {
        &self.body
    }

    pub fn as_value(&self) -> Value {
        self.body.clone()
    }

    pub fn into_value(self) -> Value {
        self.body
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a JSON value cannot fail.
        serde_json::to_vec(&self.body).unwrap_or_default()
    }

    /// `(system, value)` of each `identifier` element; a missing system is empty.
    pub fn identifiers(&self) -> Vec<(String, String)> {
        identifiers_of(&self.body)
    }

    /// Calls `f` on every `reference` string anywhere in the body (contained resources
    /// included); `f` may replace it.
    pub fn rewrite_references(&mut self, f: &mut dyn FnMut(&str) -> Option<String>) {
        if let Some(body) = self.map_mut() {
            for v in body.values_mut() {
                rewrite_in(v, f);
            }
        }
    }

    /// Every reference in the body, parsed.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for v in self.map().into_iter().flat_map(|m| m.values()) {
            collect_refs(v, &mut out);
        }
        out
    }
}

fn strip_server_meta(body: &Map<String, Value>) -> Map<String, Value> {
    let mut b = body.clone();
    let now_empty = match b.get_mut("meta") {
        Some(Value::Object(m)) => {
            m.remove("versionId");
            m.remove("lastUpdated");
            m.is_empty()
        }
        _ => false,
    };
    if now_empty {
        b.remove("meta");
    }
    b
}

fn rewrite_in(v: &mut Value, f: &mut dyn FnMut(&str) -> Option<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = child
                {
                    if let Some(new) = f(s) {
                        *s = new;
                    }
                    continue;
                }
                rewrite_in(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_in(i, f)),
        _ => {}
    }
}

fn collect_refs(v: &Value, out: &mut Vec<Reference>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("reference", Value::String(s)) => out.push(Reference::parse(s)),
                    _ => collect_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

/// The `(system, value)` of each of a resource body's identifiers (system empty if none).
pub fn identifiers_of(body: &Value) -> Vec<(String, String)> {
    let ids: &[Value] = match body.get("identifier") {
        Some(Value::Array(ids)) => ids,
        // Some R4 types (Bundle, Composition, QuestionnaireResponse, …) have one identifier.
        Some(one @ Value::Object(_)) => std::slice::from_ref(one),
        _ => &[],
    };
    let mut out = Vec::new();
    for i in ids {
        let system = i.get("system").and_then(Value::as_str).unwrap_or("");
        if let Some(value) = i.get("value").and_then(Value::as_str) {
            out.push((system.to_owned(), value.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(Resource::parse(b"{"), Err(ResourceError::BadJson { .. })));
        assert_eq!(Resource::parse(b"[]"), Err(ResourceError::NotAnObject));
        assert_eq!(Resource::parse(b"{}"), Err(ResourceError::MissingType));
        assert_eq!(
            Resource::parse(br#"{"resourceType":"Nope"}"#),
            Err(ResourceError::UnknownType)
        );
        assert_eq!(
            Resource::parse(br#"{"resourceType":5}"#),
            Err(ResourceError::WrongType("resourceType".into()))
        );
        assert_eq!(
            Resource::parse(br#"{"resourceType":"Patient","id":"a b"}"#),
            Err(ResourceError::BadId)
        );
        assert_eq!(
            Resource::parse(br#"{"resourceType":"Patient","meta":1}"#),
            Err(ResourceError::WrongType("meta".into()))
        );
    }

    #[test]
    fn meta_is_ignored_when_comparing() {
        let mut a = Resource::parse(br#"{"resourceType":"Patient","active":true}"#).unwrap_or_else(|_| unreachable!());
        let b = a.clone();
        a.set_meta(VersionId::FIRST, Timestamp::from_millis(5));
        assert!(a.same_content(&b));
        let c = Resource::parse(br#"{"resourceType":"Patient","active":false}"#).unwrap_or_else(|_| unreachable!());
        assert!(!a.same_content(&c));
    }

    #[test]
    fn rewrites_nested_references() {
        let mut r = Resource::parse(
            br#"{"resourceType":"Observation","subject":{"reference":"urn:uuid:1"},"contained":[{"resourceType":"Patient","link":[{"other":{"reference":"urn:uuid:1"}}]}]}"#,
        )
        .unwrap_or_else(|_| unreachable!());
        r.rewrite_references(&mut |s| (s == "urn:uuid:1").then(|| "Patient/x".to_owned()));
        assert_eq!(r.references().len(), 2);
        assert!(r.references().iter().all(|x| x.patient_id().is_some()));
    }
}
