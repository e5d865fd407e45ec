//! `GET [base]/metadata`: the CapabilityStatement (no token needed).

use crate::AppState;
use crate::error::fhir_json_response;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

pub(crate) async fn capability_statement(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let date = state.vault.clock().now().to_fhir();
    let base = crate::respond::base_url(&state, &headers);
    let root = base.strip_suffix("/fhir").unwrap_or(&base);
    let body = crate::capability::capability_statement(&date[..10], root, !state.config.cors_origins.is_empty());
    fhir_json_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
}
