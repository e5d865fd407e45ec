//! Bulk Data export: kick-off (`GET [base]/$export`, `[base]/Patient/$export`,
//! `[base]/Group/[id]/$export`, with `Prefer: respond-async`), status polling and
//! cancellation (`GET`/`DELETE [base]/$export-status/[job]`) and the output files
//! (`GET [base]/$export-file/[job]/[n]`, NDJSON). Every call needs the bearer token, and the
//! manifest says so (`requiresAccessToken`).

use crate::auth::Caller;
use crate::error::{fhir_json_response, operation_outcome};
use crate::respond::{base_url, http_date};
use crate::{ApiError, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::{ExportJobId, ExportLevel, ExportStatus};
use serde_json::json;
use std::sync::Arc;

pub(crate) async fn system(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    kick_off(
        &state,
        &caller,
        &headers,
        ExportLevel::System,
        query.as_deref().unwrap_or(""),
    )
    .await
}

pub(crate) async fn patients(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    kick_off(
        &state,
        &caller,
        &headers,
        ExportLevel::Patient,
        query.as_deref().unwrap_or(""),
    )
    .await
}

/// `Group/[id]/$export`, reached through the `[type]/[id]/[operation]` route.
pub(crate) async fn group(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    id: carevault_domain::ResourceId,
    query: &str,
) -> Result<Response, ApiError> {
    kick_off(state, caller, headers, ExportLevel::Group(id), query).await
}

async fn kick_off(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    level: ExportLevel,
    query: &str,
) -> Result<Response, ApiError> {
    let prefer_async = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
    if !prefer_async {
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
    let lenient = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=lenient"));
    let (job, plan) = state
        .vault
        .session(caller)
        .start_export(level, query, ttl_ms, !lenient)
        .await?;
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
