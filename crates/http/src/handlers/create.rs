//! `POST [base]/[type]`: create, or conditional create with `If-None-Exist`.

use super::parse_type;
use crate::auth::Caller;
use crate::body::read_resource;
use crate::respond::{base_url, resource_response, return_pref};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let resource = read_resource(&state, &headers, body).await?;
    if resource.rtype() != rtype {
        return Err(ApiError::BadRequest("resourceType does not match the URL".into()));
    }
    let written = match headers.get("if-none-exist") {
        Some(v) => {
            let cond = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("If-None-Exist is not text".into()))?;
            state
                .vault
                .session(&caller)
                .create_if_none_exist(resource, carevault_core::condition_query(cond))
                .await?
        }
        None => state.vault.session(&caller).create(resource).await?,
    };
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
        Some(&base),
    ))
}
