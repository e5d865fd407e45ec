//! One file per FHIR interaction.

pub(crate) mod audit_log;
pub(crate) mod bundle;
pub(crate) mod compartment;
pub(crate) mod conditional;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod emergency;
pub(crate) mod export;
pub(crate) mod fallback;
pub(crate) mod history;
pub(crate) mod metadata;
pub(crate) mod patch;
pub(crate) mod read;
pub(crate) mod search;
pub(crate) mod update;

use crate::ApiError;
use carevault_domain::{ResourceId, ResourceType, VersionId};

/// A type from the URL: every R4 resource type is served; anything else is 404.
pub(crate) fn parse_type(s: &str) -> Result<ResourceType, ApiError> {
    s.parse::<ResourceType>()
        .map_err(|_| ApiError::NotFound("unknown resource type"))
}

/// An id from the URL of a read: a malformed id names nothing, so 404.
pub(crate) fn parse_id_for_read(s: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(s).map_err(|_| ApiError::NotFound("resource not found"))
}

/// An id from the URL of a write: a malformed id is the client's mistake, so 400.
pub(crate) fn parse_id_for_write(s: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `If-Match: W/"3"`; absent is `None`, malformed is 400.
pub(crate) fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<VersionId>, ApiError> {
    match headers.get(axum::http::header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("If-Match is not an ETag".into()))?;
            carevault_core::parse_etag(s)
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest("If-Match is not an ETag like W/\"3\"".into()))
        }
    }
}
