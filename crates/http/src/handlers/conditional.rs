//! `PUT [base]/[type]?search` (conditional update) and `DELETE [base]/[type]?search`
//! (conditional delete), resolved through the search engine.

use super::parse_type;
use crate::auth::Caller;
use crate::body::read_resource;
use crate::respond::{base_url, etag, resource_response, return_pref};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The search of a conditional interaction; without one the method is not allowed here.
pub(crate) fn condition(query: Option<String>) -> Result<String, ApiError> {
    query.filter(|q| !q.is_empty()).ok_or(ApiError::MethodNotAllowed)
}

pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let cond = condition(query)?;
    let resource = read_resource(&state, &headers, body).await?;
    if resource.rtype() != rtype {
        return Err(ApiError::BadRequest("resourceType does not match the URL".into()));
    }
    let written = state.vault.session(&caller).conditional_update(resource, &cond).await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let base = base_url(&state, &headers);
    Ok(resource_response(
        status,
        &written.resource,
        return_pref(&headers),
        written.created.then_some(base.as_str()),
    ))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let cond = condition(query)?;
    let version = state.vault.session(&caller).conditional_delete(rtype, &cond).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&etag(v)).ok()) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}
