//! Request bodies: content type checked (415), size limited (413), JSON parsed into a
//! resource (400) — in that order, before any handler logic.

use crate::{ApiError, AppState};
use axum::body::Body;
use axum::http::{HeaderMap, header};
use carevault_domain::{Resource, ResourceError};

fn content_type_ok(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(
        mime.as_str(),
        "application/fhir+json" | "application/json" | "application/json+fhir"
    )
}

/// Reads the whole body within the configured limit.
pub(crate) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    if !content_type_ok(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = state.config.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)
}

/// Reads and parses a resource body.
pub(crate) async fn read_resource(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Resource, ApiError> {
    let bytes = read_body(state, headers, body).await?;
    Resource::parse(&bytes).map_err(|e| match e {
        ResourceError::Unprocessable(m) => ApiError::Unprocessable(m),
        other => ApiError::BadRequest(other.to_string()),
    })
}

/// Reads an `application/x-www-form-urlencoded` body (a `_search` POST) as a query string.
pub(crate) async fn read_form(state: &AppState, headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::BadRequest("the form is not UTF-8".into()))?;
    // Forms encode spaces as `+`, which the query parser reads as it reads a URL's.
    Ok(text)
}
