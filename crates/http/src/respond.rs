//! Building FHIR responses: resource bodies with their version headers, `Prefer: return=…`,
//! and the headers every response carries.

use crate::AppState;
use crate::error::{fhir_json_response, operation_outcome};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use carevault_core::StoredResource;
use carevault_domain::Timestamp;
use std::time::{Duration, UNIX_EPOCH};

pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// What the client asked to get back from a write (`Prefer: return=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReturnPref {
    Minimal,
    Representation,
    OperationOutcome,
}

/// The preferences of every `Prefer` header, each trimmed and lowercased
/// (`respond-async`, `handling=strict`, `return=minimal`…).
fn preferences(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .map(|p| p.trim().to_ascii_lowercase())
}

/// Whether a `Prefer` header states `preference` (`respond-async`, `handling=lenient`…).
pub(crate) fn prefers(headers: &HeaderMap, preference: &str) -> bool {
    preferences(headers).any(|p| p == preference)
}

pub(crate) fn return_pref(headers: &HeaderMap) -> ReturnPref {
    for part in preferences(headers) {
        match part.as_str() {
            "return=minimal" => return ReturnPref::Minimal,
            "return=operationoutcome" => return ReturnPref::OperationOutcome,
            "return=representation" => return ReturnPref::Representation,
            _ => {}
        }
    }
    ReturnPref::Representation
}

/// The service base URL for `Location` and `fullUrl`: configured, or from the Host header.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(b) = &state.config.public_base {
        return b.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
        .unwrap_or("localhost");
    let scheme = if state.config.public_base.is_none() && state.tls {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}/fhir")
}

pub(crate) fn http_date(t: Timestamp) -> String {
    let secs = u64::try_from(t.unix_seconds()).unwrap_or(0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

pub(crate) fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A resource (read, or written with `Prefer` honoured) with ETag and Last-Modified, and a
/// Location when `location_base` is given.
pub(crate) fn resource_response(
    status: StatusCode,
    r: &StoredResource,
    pref: ReturnPref,
    location_base: Option<&str>,
) -> Response {
    let body = match pref {
        ReturnPref::Representation => r.body.clone(),
        ReturnPref::Minimal => Vec::new(),
        ReturnPref::OperationOutcome => {
            let text = format!("{} {}/{} version {}", status.as_u16(), r.rtype, r.id, r.version);
            serde_json::to_vec(&operation_outcome("information", "informational", &text)).unwrap_or_default()
        }
    };
    let mut resp = fhir_json_response(status, body);
    if pref == ReturnPref::Minimal {
        resp.headers_mut().remove(header::CONTENT_TYPE);
    }
    let h = resp.headers_mut();
    set(h, header::ETAG, &etag(r.version));
    set(h, header::LAST_MODIFIED, &http_date(r.last_updated));
    if let Some(base) = location_base {
        let loc = format!("{base}/{}/{}/_history/{}", r.rtype, r.id, r.version);
        set(h, header::LOCATION, &loc);
        set(h, header::CONTENT_LOCATION, &loc);
    }
    crate::audit::note_patients(&mut resp, std::iter::once(r));
    resp
}

/// Headers on every response: no caching of PHI, no MIME sniffing, HTTPS only, never framed,
/// no referrer, and a Content-Security-Policy that allows nothing unless a page set its own.
pub(crate) async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

/// `201 Created`, `404 Not Found`, … as bundle responses spell them.
pub(crate) fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}")
}
