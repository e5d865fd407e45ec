//! Break-the-glass over HTTP: `POST [base]/Patient/[id]/$break-the-glass` with a Parameters
//! body holding `reason`, and `GET [base]/$emergency-access` — the grants on the caller's own
//! record (patients) or all of them, optionally `?patient=` and `?unreviewed=true` (the
//! privacy officer).

use super::parse_id_for_read;
use crate::auth::Caller;
use crate::body::read_body;
use crate::error::fhir_json_response;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use carevault_core::EmergencyGrant;
use carevault_domain::query::parse_query;
use serde_json::{Value, json};

fn grant_parameters(g: &EmergencyGrant) -> Value {
    let mut parts = vec![
        json!({"name": "id", "valueString": g.id}),
        json!({"name": "user", "valueString": g.user_id}),
        json!({"name": "patient", "valueReference": {"reference": format!("Patient/{}", g.patient)}}),
        json!({"name": "start", "valueInstant": g.started.to_fhir()}),
        json!({"name": "end", "valueInstant": g.expires.to_fhir()}),
        json!({"name": "reason", "valueString": g.reason}),
    ];
    if let Some(s) = &g.staff {
        let mut staff = vec![json!({"name": "role", "valueCode": s.role.as_str()})];
        if let Some(p) = &s.practitioner {
            staff.push(json!({"name": "practitioner", "valueReference": {"reference": format!("Practitioner/{p}")}}));
        }
        if let Some(n) = &s.name {
            staff.push(json!({"name": "name", "valueString": n}));
        }
        parts.push(json!({"name": "staff", "part": staff}));
    }
    if let Some((who, verdict, at)) = &g.review {
        parts.push(json!({"name": "review", "part": [
            {"name": "reviewer", "valueString": who},
            {"name": "verdict", "valueCode": verdict},
            {"name": "date", "valueInstant": at.to_fhir()}
        ]}));
    }
    json!({"name": "grant", "part": parts})
}

/// `POST [base]/[type]/[id]/[operation]`: `Patient/[id]/$break-the-glass`, and the door to
/// `Group/[id]/$export` by POST (see `export.rs`).
pub(crate) async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path((rtype, id, op)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if rtype == "Group" && op == "$export" {
        let id = parse_id_for_read(&id)?;
        return super::export::group_post(&state, &caller, &headers, id, body).await;
    }
    if rtype != "Patient" || op != "$break-the-glass" {
        return Err(ApiError::NotFound("no such operation"));
    }
    let id = parse_id_for_read(&id)?;
    let bytes = read_body(&state, &headers, body).await?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest("the body is not JSON".into()))?;
    if v["resourceType"] != "Parameters" {
        return Err(ApiError::BadRequest("send a Parameters resource with a reason".into()));
    }
    let reason = v["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "reason")
        .and_then(|p| p["valueString"].as_str())
        .ok_or_else(|| ApiError::BadRequest("the reason parameter (valueString) is required".into()))?;
    if carevault_domain::validate::has_control(reason) {
        return Err(ApiError::BadRequest("the reason holds a control character".into()));
    }
    let grant = state.vault.session(&caller).break_the_glass(&id, reason).await?;
    let body = json!({"resourceType": "Parameters", "parameter": [grant_parameters(&grant)]});
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = parse_query(query.as_deref().unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut patient = None;
    let mut unreviewed = false;
    for (k, v) in &pairs {
        match k.as_str() {
            "patient" => {
                let id = v.strip_prefix("Patient/").unwrap_or(v);
                patient = Some(parse_id_for_read(id)?);
            }
            "unreviewed" => unreviewed = v == "true",
            _ => {
                return Err(ApiError::BadRequest(
                    "$emergency-access takes patient and unreviewed".into(),
                ));
            }
        }
    }
    let grants = state
        .vault
        .session(&caller)
        .emergency_grants(patient.as_ref(), unreviewed)
        .await?;
    let body =
        json!({"resourceType": "Parameters", "parameter": grants.iter().map(grant_parameters).collect::<Vec<_>>()});
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}
