//! Bulk Data export: kick-off (`GET` or `POST` with a `Parameters` body, at `[base]/$export`,
//! `[base]/Patient/$export`, `[base]/Group/[id]/$export`, with `Prefer: respond-async`), status polling and
//! cancellation (`GET`/`DELETE [base]/$export-status/[job]`) and the output files
//! (`GET [base]/$export-file/[job]/[n]`, NDJSON). Every call needs the bearer token, and the
//! manifest says so (`requiresAccessToken`).

use crate::auth::Caller;
use crate::body::read_body;
use crate::error::{fhir_json_response, operation_outcome};
use crate::respond::{base_url, http_date, prefers};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::{ExportJobId, ExportKickOff, ExportLevel, ExportStatus};
use carevault_domain::query::parse_query;
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) async fn system(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let k = by_get(ExportLevel::System, query.as_deref())?;
    kick_off(&state, &caller, &headers, k).await
}

pub(crate) async fn patients(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let k = by_get(ExportLevel::Patient, query.as_deref())?;
    kick_off(&state, &caller, &headers, k).await
}

/// `POST [base]/$export` with a `Parameters` body.
pub(crate) async fn system_post(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let k = by_post(&state, &headers, ExportLevel::System, body).await?;
    kick_off(&state, &caller, &headers, k).await
}

/// `POST [base]/Patient/$export` with a `Parameters` body.
pub(crate) async fn patients_post(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let k = by_post(&state, &headers, ExportLevel::Patient, body).await?;
    kick_off(&state, &caller, &headers, k).await
}

/// `GET [base]/Group/[id]/$export`, reached through the `[type]/[id]/[operation]` route.
pub(crate) async fn group(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: carevault_domain::ResourceId,
    query: &str,
) -> Result<Response, ApiError> {
    let k = by_get(ExportLevel::Group(id), Some(query))?;
    kick_off(state, caller, headers, k).await
}

/// `POST [base]/Group/[id]/$export`, reached through the `[type]/[id]/[operation]` route.
pub(crate) async fn group_post(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: carevault_domain::ResourceId,
    body: Body,
) -> Result<Response, ApiError> {
    let k = by_post(state, headers, ExportLevel::Group(id), body).await?;
    kick_off(state, caller, headers, k).await
}

fn by_get(level: ExportLevel, query: Option<&str>) -> Result<ExportKickOff, ApiError> {
    let params = parse_query(query.unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(ExportKickOff {
        level,
        params,
        by_post: false,
    })
}

/// A POST kick-off's `Parameters` body as the same (name, value) pairs a query string gives:
/// strings, codes, instants and uris as they are, a reference as its `reference`.
async fn by_post(
    state: &AppState,
    headers: &HeaderMap,
    level: ExportLevel,
    body: Body,
) -> Result<ExportKickOff, ApiError> {
    let bytes = read_body(state, headers, body).await?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest("the body is not JSON".into()))?;
    if v["resourceType"] != "Parameters" {
        return Err(ApiError::BadRequest(
            "a POST kick-off takes a Parameters resource".into(),
        ));
    }
    let mut params = Vec::new();
    for p in v["parameter"].as_array().into_iter().flatten() {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| ApiError::BadRequest("each parameter needs a name".into()))?;
        let value = [
            "valueString",
            "valueCode",
            "valueInstant",
            "valueDateTime",
            "valueUri",
            "valueUrl",
        ]
        .iter()
        .find_map(|k| p[*k].as_str())
        .or_else(|| p["valueReference"]["reference"].as_str())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "each parameter needs a valueString, valueCode, valueInstant, valueUri or valueReference".into(),
            )
        })?;
        if carevault_domain::validate::has_control(value) || carevault_domain::validate::has_control(name) {
            return Err(ApiError::BadRequest("a parameter holds a control character".into()));
        }
        params.push((name.to_owned(), value.to_owned()));
    }
    Ok(ExportKickOff {
        level,
        params,
        by_post: true,
    })
}

async fn kick_off(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    k: ExportKickOff,
) -> Result<Response, ApiError> {
    if !prefers(headers, "respond-async") {
        return Err(ApiError::BadRequest(
            "$export runs asynchronously: send Prefer: respond-async".into(),
        ));
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
        && !(accept.contains("json") || accept.contains("*/*"))
    {
        return Err(ApiError::BadRequest("$export answers in application/fhir+json".into()));
    }
    let ttl_ms = i64::try_from(state.config.export_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    // Bulk Data: an unknown `_typeFilter` parameter is an error unless the client asked for
    // leniency.
    let strict = !prefers(headers, "handling=lenient");
    let (job, plan) = state.vault.session(caller).start_export(k, ttl_ms, strict).await?;
    // The worker exports with the decision of the caller who started it.
    let vault = Arc::clone(&state.vault);
    let access = Arc::clone(&caller.0);
    let worker_job = job.clone();
    tokio::spawn(async move { vault.session(&access).run_export(&worker_job, plan).await });
    let location = format!("{}/$export-status/{}", base_url(state, headers), job.as_str());
    let body = operation_outcome(
        "information",
        "informational",
        "the export has started; poll Content-Location",
    );
    let mut response = fhir_json_response(StatusCode::ACCEPTED, serde_json::to_vec(&body).unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(response)
}

fn parse_job(job: &str) -> Result<ExportJobId, ApiError> {
    ExportJobId::parse(job).ok_or(ApiError::NotFound("no such export"))
}

pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = parse_job(&job)?;
    match state.vault.session(&caller).export_status(&job).await? {
        ExportStatus::Running { written } => {
            let mut r = StatusCode::ACCEPTED.into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("{written} resources written")) {
                h.insert("x-progress", v);
            }
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            Ok(r)
        }
        ExportStatus::Failed { reason } => {
            let body = operation_outcome("error", "exception", &reason);
            Ok(fhir_json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::to_vec(&body).unwrap_or_default(),
            ))
        }
        ExportStatus::Done {
            transaction_time,
            request,
            files,
            expires,
        } => {
            let base = base_url(&state, &headers);
            let output: Vec<_> = files
                .iter()
                .map(|f| {
                    json!({"type": f.rtype, "url": format!("{base}/$export-file/{}/{}", job.as_str(), f.n), "count": f.count})
                })
                .collect();
            let manifest = json!({
                "transactionTime": transaction_time.to_fhir(),
                "request": format!("{base}/{request}"),
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&manifest).unwrap_or_default(),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&http_date(expires)) {
                r.headers_mut().insert(header::EXPIRES, v);
            }
            Ok(r)
        }
    }
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    let job = parse_job(&job)?;
    state.vault.session(&caller).cancel_export(&job).await?;
    let body = operation_outcome(
        "information",
        "informational",
        "the export was cancelled and its files deleted",
    );
    Ok(fhir_json_response(
        StatusCode::ACCEPTED,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

pub(crate) async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path((job, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = parse_job(&job)?;
    let n: i64 = n.parse().map_err(|_| ApiError::NotFound("no such export file"))?;
    let body = state.vault.session(&caller).export_file(&job, n).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/fhir+ndjson")],
        body,
    )
        .into_response())
}
