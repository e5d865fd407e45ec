//! `PATCH [base]/[type]/[id]` with a JSON Patch (`application/json-patch+json`) or a FHIRPath
//! Patch (a `Parameters` resource as `application/fhir+json`); `If-Match` honoured; and the
//! conditional patch, `PATCH [base]/[type]?search`.

use super::{if_match, parse_id_for_write, parse_type};
use crate::auth::Caller;
use crate::respond::{resource_response, return_pref};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
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
    let expected = if_match(&headers)?;
    let doc = read_patch(&state, &headers, body).await?;
    let written = state.vault.session(&caller).patch(rtype, &id, &doc, expected).await?;
    Ok(resource_response(
        StatusCode::OK,
        &written.resource,
        return_pref(&headers),
        None,
    ))
}

/// `PATCH [base]/[type]?search`: the patch applied to the one resource the search finds
/// (404 if none, 412 if several).
pub(crate) async fn conditional(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let cond = super::conditional::condition(query)?;
    let expected = if_match(&headers)?;
    let doc = read_patch(&state, &headers, body).await?;
    let written = state
        .vault
        .session(&caller)
        .conditional_patch(rtype, &cond, &doc, expected)
        .await?;
    Ok(resource_response(
        StatusCode::OK,
        &written.resource,
        return_pref(&headers),
        None,
    ))
}

/// The patch document of a request: a JSON Patch (`application/json-patch+json`) or a
/// FHIRPath Patch (a `Parameters` as `application/fhir+json`).
async fn read_patch(state: &AppState, headers: &HeaderMap, body: Body) -> Result<PatchDocument, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.to_ascii_lowercase();
    let json_patch = ct.starts_with("application/json-patch+json");
    if !json_patch && !ct.starts_with("application/fhir+json") && !ct.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(carevault_domain::ResourceError::from_json(&e).to_string()))?;
    if json_patch {
        Ok(PatchDocument::Json(doc))
    } else {
        // A FHIR body must be a Parameters (a FHIRPath Patch); anything else is not a patch
        // format this server takes.
        PatchDocument::from_fhir_body(doc).map_err(|_| ApiError::UnsupportedMediaType)
    }
}
