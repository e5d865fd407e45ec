//! Until accounts and SMART authorization land, every endpoint but `/metadata` requires an
//! active API bearer token (the bootstrap token written by `carevault init`).

use crate::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub(crate) async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path().ends_with("/metadata") {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(token) if state.token_ok(token) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}
