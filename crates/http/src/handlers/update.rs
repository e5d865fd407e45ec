//! `PUT [base]/[type]/[id]`: update, or create with the client's id; `If-Match` honoured.

use super::{if_match, parse_id_for_write, parse_type};
use crate::auth::Caller;
use crate::body::read_resource;
use crate::respond::{base_url, resource_response, return_pref};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_write(&id)?;
    let expected = if_match(&headers)?;
    let resource = read_resource(&state, &headers, body).await?;
    if resource.rtype() != rtype {
        return Err(ApiError::BadRequest("resourceType does not match the URL".into()));
    }
    match resource.id() {
        Some(body_id) if body_id == id => {}
        Some(_) => {
            return Err(ApiError::BadRequest("the id in the body does not match the URL".into()));
        }
        None => {
            return Err(ApiError::BadRequest(
                "an update needs the resource's id in the body".into(),
            ));
        }
    }
    let written = state
        .vault
        .session(&caller)
        .update(rtype, &id, resource, expected)
        .await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let base = base_url(&state, &headers);
    let location = written.created.then_some(base.as_str());
    Ok(resource_response(
        status,
        &written.resource,
        return_pref(&headers),
        location,
    ))
}
