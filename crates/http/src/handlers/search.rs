//! `GET [base]/[type]?…` and `POST [base]/[type]/_search` (form body, which keeps search
//! terms out of URLs and logs): a searchset Bundle with sealed-cursor paging links; and the
//! same across types, `GET [base]?_type=…` and `POST [base]/_search`.

use super::parse_type;
use crate::auth::Caller;
use crate::body::read_form;
use crate::error::{fhir_json_response, operation_outcome};
use crate::respond::base_url;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use carevault_core::{SearchOptions, SearchPage, StoredResource};
use carevault_domain::ResourceType;
use serde_json::{Value, json};

pub(crate) async fn search_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    run(&state, &caller, &headers, Some(rtype), query.as_deref().unwrap_or("")).await
}

/// `GET [base]?_type=…`: a search across types.
pub(crate) async fn search_system(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    run(&state, &caller, &headers, None, query.as_deref().unwrap_or("")).await
}

/// `POST [base]/_search` with a form body: a search across types.
pub(crate) async fn search_system_post(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let form = read_form(&state, &headers, body).await?;
    run(&state, &caller, &headers, None, &form).await
}

pub(crate) async fn search_post(
    State(state): State<AppState>,
    caller: Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = parse_type(&rtype)?;
    let form = read_form(&state, &headers, body).await?;
    run(&state, &caller, &headers, Some(rtype), &form).await
}

/// Whether the client asked for `Prefer: handling=strict` (unknown parameters are errors).
pub(crate) fn strict(headers: &HeaderMap) -> bool {
    crate::respond::prefers(headers, "handling=strict")
}

/// A bundle entry; `shape` subsets a match as `_elements`/`_summary` asked (included
/// resources go whole).
fn entry(base: &str, r: &StoredResource, shape: Option<&SearchPage>) -> Result<Value, ApiError> {
    let mut resource: Value =
        serde_json::from_slice(&r.body).map_err(|_| ApiError::Internal("stored body is not JSON".into()))?;
    if let Some(el) = shape.and_then(|p| p.elements.as_deref()) {
        resource = carevault_domain::subset::subset(resource, el);
    }
    if shape.is_some_and(|p| p.without_text) {
        resource = carevault_domain::subset::without_text(resource);
    }
    Ok(json!({
        "fullUrl": format!("{base}/{}/{}", r.rtype, r.id),
        "resource": resource,
        "search": {"mode": "match"}
    }))
}

/// The searchset Bundle of one page of a search of `rtype`, or of a search across types
/// (`None`).
pub(crate) fn searchset(base: &str, rtype: Option<ResourceType>, page: &SearchPage) -> Result<Value, ApiError> {
    let searched = match rtype {
        Some(t) => format!("{base}/{t}"),
        None => base.to_owned(),
    };
    let link = |rel: &str, cursor: &str| json!({"relation": rel, "url": format!("{searched}?_cursor={cursor}")});
    let mut links = Vec::new();
    if let Some(c) = page.this.as_ref().or(page.first.as_ref()) {
        links.push(link("self", c));
    }
    for (rel, c) in [
        ("first", &page.first),
        ("previous", &page.previous),
        ("next", &page.next),
    ] {
        if let Some(c) = c {
            links.push(link(rel, c));
        }
    }
    let mut entries = Vec::with_capacity(page.resources.len() + 1);
    for r in &page.resources {
        entries.push(entry(base, r, Some(page))?);
    }
    for r in &page.included {
        let mut e = entry(base, r, None)?;
        e["search"]["mode"] = json!("include");
        entries.push(e);
    }
    if !page.ignored.is_empty() {
        let text = format!("ignored unknown search parameters: {}", page.ignored.join(", "));
        entries.push(json!({
            "resource": operation_outcome("warning", "not-supported", &text),
            "search": {"mode": "outcome"}
        }));
    }
    let mut b = json!({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries});
    if let Some(t) = page.total {
        b["total"] = json!(t);
    }
    Ok(b)
}

pub(crate) async fn run(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    rtype: Option<ResourceType>,
    query: &str,
) -> Result<Response, ApiError> {
    let session = state.vault.session(caller);
    let opts = SearchOptions {
        strict: strict(headers),
    };
    let page = match rtype {
        Some(t) => session.search(t, query, opts).await?,
        None => session.search_system(query, opts).await?,
    };
    let base = base_url(state, headers);
    let body = searchset(&base, rtype, &page)?;
    let mut response = fhir_json_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default());
    crate::audit::note_patients(&mut response, page.resources.iter());
    Ok(response)
}
