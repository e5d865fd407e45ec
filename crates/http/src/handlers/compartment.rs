//! `GET [base]/Patient/[id]/[type]?…` (a search inside the patient's compartment) and
//! `GET [base]/Patient/[id]/$everything` (`_since`, `_type`, `_count`, paged); also the
//! door to `GET [base]/Group/[id]/$export` (see `export.rs`).

use super::{parse_id_for_read, parse_type};
use crate::auth::Caller;
use crate::error::fhir_json_response;
use crate::respond::base_url;
use crate::{ApiError, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use carevault_domain::ResourceType;
use serde_json::{Value, json};

pub(crate) async fn patient_scoped(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id, rest)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    if rtype == ResourceType::Group && rest == "$export" {
        let id = parse_id_for_read(&id)?;
        return super::export::group(&state, &caller, &headers, id, query.as_deref().unwrap_or("")).await;
    }
    if rtype != ResourceType::Patient {
        return Err(ApiError::NotFound("no such endpoint"));
    }
    let id = parse_id_for_read(&id)?;
    let query = query.unwrap_or_default();
    if rest == "$everything" {
        let page = state.vault.session(&caller).everything(&id, &query).await?;
        let base = base_url(&state, &headers);
        let mut entries = Vec::with_capacity(page.resources.len());
        for r in &page.resources {
            let resource: Value =
                serde_json::from_slice(&r.body).map_err(|_| ApiError::Internal("stored body is not JSON".into()))?;
            entries.push(json!({"fullUrl": format!("{base}/{}/{}", r.rtype, r.id), "resource": resource, "search": {"mode": "match"}}));
        }
        let mut links = vec![json!({"relation": "self", "url": format!("{base}/Patient/{id}/$everything")})];
        if let Some(next) = &page.next {
            links.push(json!({"relation": "next", "url": format!("{base}/Patient/{id}/$everything?_cursor={next}")}));
        }
        let body = json!({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries});
        return Ok(fhir_json_response(
            StatusCode::OK,
            serde_json::to_vec(&body).unwrap_or_default(),
        ));
    }
    let target = parse_type(&rest)?;
    // The patient must exist (and be visible) for its compartment to be searched.
    if !matches!(
        state.vault.session(&caller).read(ResourceType::Patient, &id).await?,
        carevault_core::ReadOutcome::Found(_)
    ) {
        return Err(ApiError::NotFound("resource not found"));
    }
    let scoped = if query.is_empty() {
        format!("{}=Patient/{id}", carevault_core::COMPARTMENT)
    } else {
        format!("{}=Patient/{id}&{query}", carevault_core::COMPARTMENT)
    };
    super::search::run(&state, &caller, &headers, Some(target), &scoped).await
}
