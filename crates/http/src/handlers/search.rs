//! `GET [base]/[type]?…`: for now only what the blind identifier index answers — `_id` and
//! `identifier` — returned as a searchset Bundle. Full search is a later piece of work; other
//! parameters get a 400 that says so, never a silently wrong answer.

use super::parse_type;
use crate::error::fhir_json_response;
use crate::respond::base_url;
use crate::{ApiError, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use carevault_core::{IdentifierQuery, ReadOutcome};
use carevault_domain::query::parse_query;
use serde_json::{Value, json};

pub(crate) async fn search_type(
    State(state): State<AppState>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let pairs = parse_query(query.as_deref().unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Result-shaping parameters are accepted and have no effect on so small a result.
    let conditions: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "_count" | "_format" | "_pretty"))
        .map(|(k, v)| {
            format!(
                "{}={}",
                carevault_domain::query::percent_encode(k),
                carevault_domain::query::percent_encode(v)
            )
        })
        .collect();
    if conditions.is_empty() {
        return Err(ApiError::BadRequest(
            "search currently needs an `_id` or `identifier` parameter".into(),
        ));
    }
    let q = IdentifierQuery::parse(&conditions.join("&")).map_err(|_| {
        ApiError::BadRequest("search currently supports only the `_id` and `identifier` parameters".into())
    })?;
    let ids = state.vault.find(rtype, &q).await?;
    let base = base_url(&state, &headers);
    let mut entries = Vec::new();
    for id in ids {
        if let ReadOutcome::Found(r) = state.vault.read(rtype, &id).await? {
            let resource: Value =
                serde_json::from_slice(&r.body).map_err(|_| ApiError::Internal("stored body is not JSON".into()))?;
            entries.push(json!({
                "fullUrl": format!("{base}/{rtype}/{id}"),
                "resource": resource,
                "search": {"mode": "match"}
            }));
        }
    }
    let body = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "link": [{"relation": "self", "url": format!("{base}/{rtype}")}],
        "entry": entries
    });
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}
