//! `GET [base]/[type]/[id]` and `GET [base]/[type]/[id]/_history/[vid]`.

use super::{parse_id_for_read, parse_type};
use crate::auth::Caller;
use crate::respond::{ReturnPref, etag, http_date, resource_response};
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::ReadOutcome;
use carevault_domain::VersionId;

fn answer(outcome: ReadOutcome) -> Result<Response, ApiError> {
    match outcome {
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
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_read(&id)?;
    answer(state.vault.session(&caller).read(rtype, &id).await?)
}

pub(crate) async fn vread(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id, vid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_read(&id)?;
    let version = VersionId::parse(&vid).map_err(|_| ApiError::NotFound("version not found"))?;
    answer(state.vault.session(&caller).vread(rtype, &id, version).await?)
}
