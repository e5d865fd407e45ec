//! `GET [base]/[type]/[id]` and `GET [base]/[type]/[id]/_history/[vid]`, conditional on
//! `If-None-Match` or `If-Modified-Since` (304 when the client's copy is current).

use super::{parse_id_for_read, parse_type};
use crate::auth::Caller;
use crate::respond::{ReturnPref, etag, http_date, resource_response};
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::{ReadOutcome, StoredResource};
use carevault_domain::VersionId;

/// Whether the client's copy is the current one: `If-None-Match` names the current ETag
/// (weakly compared) or is `*`; without it, `If-Modified-Since` is no earlier than the last
/// update, to the second (RFC 9110 §13.1.2–13.1.3).
fn client_is_current(headers: &HeaderMap, r: &StoredResource) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        let current = weak(&etag(r.version));
        return v
            .to_str()
            .is_ok_and(|list| list.split(',').any(|t| t.trim() == "*" || weak(t) == current));
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|since| since.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|since| r.last_updated.unix_seconds() <= since.as_secs() as i64)
}

fn answer(outcome: ReadOutcome, headers: &HeaderMap) -> Result<Response, ApiError> {
    match outcome {
        ReadOutcome::Found(r) if client_is_current(headers, &r) => {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&http_date(r.last_updated)) {
                resp.headers_mut().insert(header::LAST_MODIFIED, v);
            }
            Ok(resp)
        }
        ReadOutcome::Found(r) => Ok(resource_response(StatusCode::OK, &r, ReturnPref::Representation, None)),
        ReadOutcome::Deleted { version, last_updated } => {
            let mut resp = ApiError::Gone.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag(version)) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&http_date(last_updated)) {
                resp.headers_mut().insert(header::LAST_MODIFIED, v);
            }
            Ok(resp)
        }
        ReadOutcome::NotFound => Err(ApiError::NotFound("resource not found")),
    }
}

pub(crate) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_read(&id)?;
    answer(state.vault.session(&caller).read(rtype, &id).await?, &headers)
}

pub(crate) async fn vread(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_read(&id)?;
    let version = VersionId::parse(&vid).map_err(|_| ApiError::NotFound("version not found"))?;
    answer(state.vault.session(&caller).vread(rtype, &id, version).await?, &headers)
}
