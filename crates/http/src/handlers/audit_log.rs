//! The audit log over the API: `GET [base]/$audit` (the privacy officer's search, a Bundle of
//! AuditEvents or NDJSON), `GET [base]/$access-report` (a patient's "who looked at my
//! record"), `GET|POST [base]/$audit-head` (the latest signed tree head; POST signs one now),
//! `GET [base]/$audit-proof?index=&size=` and `$audit-consistency?first=&second=`.

use crate::auth::Caller;
use crate::error::fhir_json_response;
use crate::respond::base_url;
use crate::{ApiError, AppState};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::access::Role;
use carevault_domain::Timestamp;
use carevault_domain::query::parse_query;
use carevault_storage::AuditFilter;
use serde_json::{Value, json};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    parse_query(query.unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A `date` condition as the bounds `[since, until)` of the entries' recorded instants, with
/// FHIR's precision ranges: `le2026-12-01` takes the whole day, `gt2026-12` starts after
/// the month, a bare value (or `eq`) is its range.
fn date_bounds(v: &str) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let refuse =
        || ApiError::BadRequest("date takes eq, ge, gt, le, lt, sa or eb and a date, dateTime or instant".into());
    let (op, rest) = match (v.get(..2), v.get(2..)) {
        (Some(op), Some(rest)) if op.bytes().all(|b| b.is_ascii_lowercase()) => (op, rest),
        _ => ("eq", v),
    };
    let (lo, hi) = carevault_domain::search::ranges::date_range(rest).ok_or_else(refuse)?;
    Ok(match op {
        "eq" => (Some(lo), Some(hi)),
        "ge" => (Some(lo), None),
        "gt" | "sa" => (Some(hi), None),
        "le" => (None, Some(hi)),
        "lt" | "eb" => (None, Some(lo)),
        _ => return Err(refuse()),
    })
}

fn may_audit(caller: &Caller) -> bool {
    caller.is_unrestricted() || caller.role() == Some(Role::Auditor)
}

pub(crate) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut f = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    let mut ndjson = false;
    for (k, v) in pairs(query.as_deref())? {
        match k.as_str() {
            "date" => {
                // Repeated, they all hold: the latest start and the earliest end.
                let (since, until) = date_bounds(&v)?;
                f.since = f.since.max(since);
                f.until = match (f.until, until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            "agent" => f.agent = Some(if v.contains(':') { v } else { format!("user:{v}") }),
            "patient" => f.patient = Some(v.strip_prefix("Patient/").unwrap_or(&v).to_owned()),
            "subtype" => f.subtype = Some(v),
            // Every entry is of type `rest` (audit-event-type): any other type matches none.
            "type" => {
                if v.rsplit('|').next() != Some("rest") {
                    f.limit = 0;
                }
            }
            "outcome" => f.outcome = Some(v),
            "entity" => f.entity = Some(v),
            "_count" => {
                let n = v
                    .parse::<u32>()
                    .map_err(|_| ApiError::BadRequest("_count must be a number".into()))?
                    .clamp(1, 1000);
                if f.limit != 0 {
                    f.limit = n;
                }
            }
            "_before" => {
                f.before = Some(
                    v.parse()
                        .map_err(|_| ApiError::BadRequest("_before must be a number".into()))?,
                )
            }
            "_format" if v == "ndjson" || v == "application/fhir+ndjson" => ndjson = true,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "$audit takes date, agent, patient, type, subtype, outcome, entity, _count, _before, _format; not {other}"
                )));
            }
        }
    }
    if !may_audit(&caller) {
        return Err(ApiError::Forbidden("the audit log is for the privacy officer".into()));
    }
    let bodies = if f.limit == 0 {
        Vec::new()
    } else {
        state.vault.session(&caller).audit_entries(&f).await?
    };
    if ndjson {
        let mut text = Vec::new();
        for b in &bodies {
            text.extend_from_slice(b);
            text.push(b'\n');
        }
        let mut r = (StatusCode::OK, text).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+ndjson"),
        );
        return Ok(r);
    }
    let base = base_url(&state, &headers);
    let entries: Vec<Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .map(|v| json!({"fullUrl": format!("{base}/$audit?entity=AuditEvent/{}", v["id"].as_str().unwrap_or("")), "resource": v}))
        .collect();
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/$audit")})];
    if entries.len() as u32 == f.limit
        && let Some(last) = entries.last().and_then(|e| e["resource"]["id"].as_str())
    {
        links.push(json!({"relation": "next", "url": format!("{base}/$audit?_count={}&_before={last}", f.limit)}));
    }
    let body = json!({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries});
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

pub(crate) async fn access_report(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let lines = state.vault.session(&caller).access_report(1000).await?;
    let parts: Vec<Value> = lines
        .iter()
        .map(|l| {
            let mut p = vec![
                json!({"name": "when", "valueInstant": l.when.to_fhir()}),
                json!({"name": "interaction", "valueCode": l.interaction}),
                json!({"name": "outcome", "valueCode": l.outcome}),
                json!({"name": "emergency", "valueBoolean": l.emergency}),
            ];
            match &l.staff {
                Some(s) => {
                    p.push(json!({"name": "role", "valueCode": s.role.as_str()}));
                    if let Some(n) = &s.name {
                        p.push(json!({"name": "who", "valueString": n}));
                    }
                }
                None => p.push(json!({"name": "who", "valueString": if l.agent == "system" { "the hospital's integration system".to_owned() } else { l.agent.clone() }})),
            }
            if let Some(w) = &l.what {
                p.push(json!({"name": "what", "valueCode": w}));
            }
            if let Some(pu) = &l.purpose {
                p.push(json!({"name": "purpose", "valueCode": pu}));
            }
            json!({"name": "access", "part": p})
        })
        .collect();
    let body = json!({"resourceType": "Parameters", "parameter": parts});
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

fn head_parameters(size: i64, root: &[u8], at: i64, signature: &[u8], key: &[u8]) -> Value {
    json!({"resourceType": "Parameters", "parameter": [
        {"name": "size", "valueInteger64": size.to_string()},
        {"name": "root", "valueString": hex(root)},
        {"name": "timestamp", "valueInstant": Timestamp::from_millis(at).to_fhir()},
        {"name": "signature", "valueString": hex(signature)},
        {"name": "key", "valueString": hex(key)},
    ]})
}

fn may_see_heads(caller: &Caller) -> bool {
    may_audit(caller) || caller.role() == Some(Role::Admin)
}

pub(crate) async fn head(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if !may_see_heads(&caller) {
        return Err(ApiError::Forbidden(
            "tree heads are for the privacy officer and operators".into(),
        ));
    }
    let key = state.vault.head_public_key()?;
    let heads = state.vault.heads().await?;
    let h = heads
        .last()
        .ok_or(ApiError::NotFound("no tree head has been signed yet"))?;
    let body = head_parameters(h.size, &h.root, h.at, &h.signature, &key);
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

pub(crate) async fn sign_head(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if !may_see_heads(&caller) {
        return Err(ApiError::Forbidden(
            "tree heads are for the privacy officer and operators".into(),
        ));
    }
    let h = state.vault.sign_head().await?;
    if let Some(path) = &state.config.audit_witness
        && let Err(e) = crate::witness::append(path, &h)
    {
        return Err(ApiError::Internal(format!("witness file: {e}")));
    }
    let body = head_parameters(h.size as i64, &h.root, h.at, &h.signature, &h.public_key);
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

fn number(pairs: &[(String, String)], name: &str) -> Result<u64, ApiError> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{name} is required (a number)")))
}

pub(crate) async fn proof(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !may_see_heads(&caller) {
        return Err(ApiError::Forbidden(
            "proofs are for the privacy officer and operators".into(),
        ));
    }
    let p = pairs(query.as_deref())?;
    let (index, size) = (number(&p, "index")?, number(&p, "size")?);
    let (leaf, path) = state.vault.inclusion_proof(index, size).await?;
    let mut params = vec![
        json!({"name": "index", "valueInteger64": index.to_string()}),
        json!({"name": "size", "valueInteger64": size.to_string()}),
        json!({"name": "leaf", "valueString": hex(&leaf)}),
    ];
    params.extend(path.iter().map(|h| json!({"name": "node", "valueString": hex(h)})));
    let body = json!({"resourceType": "Parameters", "parameter": params});
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

pub(crate) async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !may_see_heads(&caller) {
        return Err(ApiError::Forbidden(
            "proofs are for the privacy officer and operators".into(),
        ));
    }
    let p = pairs(query.as_deref())?;
    let (first, second) = (number(&p, "first")?, number(&p, "second")?);
    let path = state.vault.consistency_proof(first, second).await?;
    let mut params = vec![
        json!({"name": "first", "valueInteger64": first.to_string()}),
        json!({"name": "second", "valueInteger64": second.to_string()}),
    ];
    params.extend(path.iter().map(|h| json!({"name": "node", "valueString": hex(h)})));
    let body = json!({"resourceType": "Parameters", "parameter": params});
    Ok(fhir_json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}
