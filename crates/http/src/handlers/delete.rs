//! `DELETE [base]/[type]/[id]`: soft delete; `If-Match` honoured. Deleting what is not there
//! (or is already deleted) succeeds too, as the spec allows.

use super::{if_match, parse_id_for_write, parse_type};
use crate::auth::Caller;
use crate::error::{fhir_json_response, operation_outcome};
use crate::respond::{ReturnPref, etag, return_pref};
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_write(&id)?;
    let expected = if_match(&headers)?;
    let version = state.vault.session(&caller).delete(rtype, &id, expected).await?;
    let mut resp = if return_pref(&headers) == ReturnPref::OperationOutcome {
        let text = if version.is_some() {
            "deleted"
        } else {
            "nothing to delete"
        };
        let body = serde_json::to_vec(&operation_outcome("information", "informational", text)).unwrap_or_default();
        fhir_json_response(StatusCode::OK, body)
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&etag(v)).ok()) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}
