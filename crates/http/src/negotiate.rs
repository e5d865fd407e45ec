//! Content negotiation: this server answers in JSON only (FHIR JSON, and NDJSON for bulk
//! files and the audit export). A request whose `_format` or `Accept` leaves no JSON form
//! acceptable — XML, Turtle, HTML alone, or a FHIR version other than R4 — is answered 406
//! with an OperationOutcome, rather than with JSON the client cannot read.

use crate::ApiError;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carevault_domain::query::parse_query;

/// The media types (parameters aside) this server can answer with.
const SERVED: &[&str] = &[
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
    "application/fhir+ndjson",
    "application/ndjson",
];

/// `_format`'s short forms for them.
const SHORT: &[&str] = &["json", "ndjson"];

/// Whether one media range (`type/subtype;params`) admits a form this server answers with:
/// JSON of FHIR R4 (no `fhirVersion`, or 4.0 / 4.0.1), or any type by wildcard.
fn admits(range: &str) -> bool {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    let mut params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()));
    if params
        .clone()
        .any(|(k, v)| k == "q" && v.parse::<f32>().is_ok_and(|q| q <= 0.0))
    {
        return false;
    }
    let r4 = params.all(|(k, v)| k != "fhirversion" || matches!(v.trim_matches('"'), "4.0" | "4.0.1"));
    r4 && (media == "*/*" || media == "application/*" || SERVED.contains(&media.as_str()))
}

fn format_ok(value: &str) -> bool {
    // `_format=application/fhir+json` with its plus unescaped arrives with a space.
    let v = value.trim().to_ascii_lowercase().replace("/fhir ", "/fhir+");
    SHORT.contains(&v.as_str()) || admits(&v)
}

pub(crate) async fn negotiate(req: Request, next: Next) -> Response {
    let format = req
        .uri()
        .query()
        .and_then(|q| parse_query(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "_format").map(|(_, v)| v));
    let refused = match format {
        Some(f) => !format_ok(&f),
        None => req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .fold(None, |ok: Option<bool>, r| Some(ok.unwrap_or(false) || admits(r)))
            .is_some_and(|ok| !ok),
    };
    if refused {
        return ApiError::NotAcceptable.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for ok in [
            "*/*",
            "application/fhir+json",
            "application/json; charset=utf-8",
            "application/fhir+json;fhirVersion=4.0",
            "application/fhir+json; fhirVersion=\"4.0.1\"",
            "application/*;q=0.5",
            "application/fhir+ndjson",
        ] {
            assert!(admits(ok), "{ok}");
        }
        for no in [
            "application/fhir+xml",
            "application/xml",
            "text/html",
            "text/turtle",
            "application/fhir+json;fhirVersion=3.0",
            "application/fhir+json;q=0",
        ] {
            assert!(!admits(no), "{no}");
        }
        assert!(format_ok("json") && format_ok("application/fhir+json") && format_ok("ndjson"));
        assert!(!format_ok("xml") && !format_ok("ttl") && !format_ok("html"));
        // An unescaped plus arrives as a space.
        assert!(format_ok("application/fhir json") && format_ok("application/fhir json; fhirVersion=4.0"));
        assert!(!format_ok("application/fhir xml") && !format_ok("application/fhir json;fhirVersion=3.0"));
    }
}
