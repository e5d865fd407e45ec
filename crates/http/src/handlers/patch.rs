//! `PATCH [base]/[type]/[id]` with a JSON Patch (`application/json-patch+json`) or a FHIRPath
//! Patch (a `Parameters` resource as `application/fhir+json`); `If-Match` honoured.

use super::{if_match, parse_id_for_write, parse_type};
use crate::auth::Caller;
use crate::respond::{resource_response, return_pref};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use carevault_domain::patch::PatchDocument;
use serde_json::Value;

pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_write(&id)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.to_ascii_lowercase();
    let json_patch = ct.starts_with("application/json-patch+json");
    if !json_patch && !ct.starts_with("application/fhir+json") && !ct.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let expected = if_match(&headers)?;
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(carevault_domain::ResourceError::from_json(&e).to_string()))?;
    let doc = if json_patch {
        PatchDocument::Json(doc)
    } else {
        // A FHIR body must be a Parameters (a FHIRPath Patch); anything else is not a patch
        // format this server takes.
        PatchDocument::from_fhir_body(doc).map_err(|_| ApiError::UnsupportedMediaType)?
    };
    let written = state.vault.session(&caller).patch(rtype, &id, &doc, expected).await?;
    Ok(resource_response(
        StatusCode::OK,
        &written.resource,
        return_pref(&headers),
        None,
    ))
}
