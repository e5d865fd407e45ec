//! `POST [base]` with a transaction or batch Bundle. GET entries (reads and searches) always
//! carry their resource or searchset; writes carry theirs with `Prefer: return=representation`.

use crate::auth::Caller;
use crate::body::read_body;
use crate::error::fhir_json_response;
use crate::respond::{ReturnPref, base_url, etag, return_pref, status_line};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use carevault_core::BundleKind;
use serde_json::{Value, json};

pub(crate) async fn process(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(carevault_domain::ResourceError::from_json(&e).to_string()))?;
    let outcome = state.vault.session(&caller).process_bundle(&value).await?;
    let base = base_url(&state, &headers);
    let with_resources = return_pref(&headers) == ReturnPref::Representation && headers.contains_key("prefer");
    let mut entries = Vec::with_capacity(outcome.entries.len());
    for e in outcome.entries {
        let mut response = serde_json::Map::new();
        let api = e.error.map(ApiError::from);
        let status = match &api {
            Some(err) if e.status == 0 => err.status().as_u16(),
            _ => e.status,
        };
        response.insert("status".into(), json!(status_line(status)));
        if let Some(loc) = &e.location {
            response.insert("location".into(), json!(loc));
        }
        if let Some(v) = e.version {
            response.insert("etag".into(), json!(etag(v)));
        }
        if let Some(t) = e.last_modified {
            response.insert("lastModified".into(), json!(t.to_fhir()));
        }
        if let Some(api) = api {
            let oo: Value = serde_json::from_slice(&api.outcome_body()).unwrap_or(Value::Null);
            response.insert("outcome".into(), oo);
        }
        let mut entry = json!({ "response": Value::Object(response) });
        if let (true, Some(body)) = (with_resources || e.read, &e.resource) {
            entry["resource"] = serde_json::from_slice(body).unwrap_or(Value::Null);
        }
        if let Some((rtype, page)) = &e.search {
            entry["resource"] = super::search::searchset(&base, Some(*rtype), page)?;
        }
        if let Some(loc) = &e.location
            && let Some((path, _)) = loc.split_once("/_history")
        {
            entry["fullUrl"] = json!(format!("{base}/{path}"));
        }
        entries.push(entry);
    }
    let kind = match outcome.kind {
        BundleKind::Transaction => "transaction-response",
        BundleKind::Batch => "batch-response",
    };
    let body = json!({ "resourceType": "Bundle", "type": kind, "entry": entries });
    Ok(fhir_json_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()).into_response())
}
