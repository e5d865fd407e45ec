//! `GET [base]/_history`, `[base]/[type]/_history`, `[base]/[type]/[id]/_history`.
//! Parameters: `_count`, `_since`, and the opaque `_cursor` of the `next` link.

use super::{parse_id_for_read, parse_type};
use crate::auth::Caller;
use crate::error::fhir_json_response;
use crate::respond::{base_url, etag, status_line};
use crate::{ApiError, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use carevault_core::{HistoryPage, HistoryScope};
use carevault_domain::Timestamp;
use carevault_domain::query::{parse_query, percent_encode};
use carevault_storage::Op;
use serde_json::{Value, json};

struct Params {
    count: u32,
    since: Option<(String, Timestamp)>,
    cursor: Option<String>,
}

/// `_count`, `_since` and the paging cursor. `_at` and `_list` (R4 history parameters this
/// server does not serve) are refused rather than ignored, since ignoring them would answer
/// a different question; any other parameter is ignored, or refused under
/// `Prefer: handling=strict`.
fn params(query: Option<&str>, strict: bool) -> Result<Params, ApiError> {
    let pairs = parse_query(query.unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut p = Params {
        count: 50,
        since: None,
        cursor: None,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "_count" => {
                p.count = v
                    .parse()
                    .map_err(|_| ApiError::BadRequest("_count must be a whole number".into()))?;
            }
            "_since" => {
                let t = Timestamp::parse(&v).ok_or_else(|| ApiError::BadRequest("_since must be an instant".into()))?;
                p.since = Some((v, t));
            }
            "_cursor" => p.cursor = Some(v),
            "_format" | "_pretty" => {}
            "_at" | "_list" => {
                return Err(ApiError::BadRequest(format!(
                    "history does not support `{k}` (it takes _count and _since)"
                )));
            }
            _ if strict => {
                return Err(ApiError::BadRequest(format!(
                    "history does not know the parameter `{k}` (it takes _count and _since)"
                )));
            }
            _ => {}
        }
    }
    Ok(p)
}

async fn history(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    scope: HistoryScope,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let p = params(query, super::search::strict(headers))?;
    let page = state
        .vault
        .session(caller)
        .history(&scope, p.since.as_ref().map(|s| s.1), p.count, p.cursor.as_deref())
        .await?;
    let base = base_url(state, headers);
    let path = match &scope {
        HistoryScope::System => format!("{base}/_history"),
        HistoryScope::Type(t) => format!("{base}/{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{base}/{t}/{id}/_history"),
    };
    let mut q = format!("_count={}", p.count.clamp(1, carevault_core::MAX_PAGE));
    if let Some((text, _)) = &p.since {
        q.push_str(&format!("&_since={}", percent_encode(text)));
    }
    let body = bundle(&base, &path, &q, p.cursor.as_deref(), &page)?;
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

fn bundle(base: &str, path: &str, q: &str, cursor: Option<&str>, page: &HistoryPage) -> Result<Value, ApiError> {
    let self_url = match cursor {
        Some(c) => format!("{path}?{q}&_cursor={c}"),
        None => format!("{path}?{q}"),
    };
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if cursor.is_some() {
        links.push(json!({"relation": "first", "url": format!("{path}?{q}")}));
    }
    if let Some(next) = &page.next {
        links.push(json!({"relation": "next", "url": format!("{path}?{q}&_cursor={next}")}));
    }
    let mut entries = Vec::with_capacity(page.entries.len());
    for e in &page.entries {
        let (method, url, status) = match e.op {
            Op::Create => ("POST", e.rtype.to_string(), 201),
            Op::Update => ("PUT", format!("{}/{}", e.rtype, e.id), 200),
            Op::Delete => ("DELETE", format!("{}/{}", e.rtype, e.id), 204),
        };
        let mut entry = json!({
            "fullUrl": format!("{base}/{}/{}", e.rtype, e.id),
            "request": {"method": method, "url": url},
            "response": {
                "status": status_line(status),
                "etag": etag(e.version),
                "lastModified": e.last_updated.to_fhir()
            }
        });
        if let Some(body) = &e.body {
            let resource: Value =
                serde_json::from_slice(body).map_err(|_| ApiError::Internal("stored body is not JSON".into()))?;
            entry["resource"] = resource;
        }
        entries.push(entry);
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": entries
    });
    if let Some(total) = page.total {
        bundle["total"] = json!(total);
    }
    Ok(bundle)
}

pub(crate) async fn system(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    history(&state, &caller, &headers, HistoryScope::System, query.as_deref()).await
}

pub(crate) async fn of_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    history(&state, &caller, &headers, HistoryScope::Type(rtype), query.as_deref()).await
}

pub(crate) async fn instance(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let id = parse_id_for_read(&id)?;
    // An instance that never existed has no history: 404, not an empty bundle.
    if let carevault_core::ReadOutcome::NotFound = state.vault.session(&caller).read(rtype, &id).await? {
        return Err(ApiError::NotFound("resource not found"));
    }
    history(
        &state,
        &caller,
        &headers,
        HistoryScope::Instance(rtype, id),
        query.as_deref(),
    )
    .await
}
