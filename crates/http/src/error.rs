//! The one error type of the HTTP boundary and its one mapping to status + OperationOutcome.
//! Bodies say little (never content, SQL or paths); the log line, written by `log_errors`,
//! says more, with opaque ids only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::CoreError;
use serde_json::json;

/// Everything a request can fail with.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    /// The caller may not do this kind of thing (a type or interaction outside its grant).
    Forbidden(String),
    NotFound(&'static str),
    Gone,
    MethodNotAllowed,
    /// The client accepts no form this server answers with (it speaks JSON only).
    NotAcceptable,
    UnsupportedMediaType,
    PayloadTooLarge,
    BadRequest(String),
    Unprocessable(String),
    PreconditionFailed(String),
    Conflict(String),
    /// Internal failure; the detail goes to the log only.
    Internal(String),
    Integrity,
}

/// Carried from the response to the logging middleware.
#[derive(Debug, Clone)]
pub(crate) struct ErrorDetail(pub String);

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotFound => ApiError::NotFound("resource not found"),
            CoreError::Gone { .. } => ApiError::Gone,
            CoreError::Invalid(m) => ApiError::BadRequest(m),
            CoreError::Forbidden(m) => ApiError::Forbidden(m),
            CoreError::Unprocessable(m) => ApiError::Unprocessable(m),
            CoreError::PreconditionFailed(m) => ApiError::PreconditionFailed(m),
            CoreError::Conflict(m) => ApiError::Conflict(m),
            CoreError::Integrity => ApiError::Integrity,
            CoreError::Store(s) => ApiError::Internal(format!("store: {s}")),
            CoreError::Crypto(c) => ApiError::Internal(format!("crypto: {c}")),
        }
    }
}

impl ApiError {
    /// Status, OperationOutcome issue code and the text the client sees.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "login",
                "a valid bearer token is required".into(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, "not-found", (*what).into()),
            ApiError::Gone => (StatusCode::GONE, "deleted", "the resource has been deleted".into()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                "this method is not allowed here".into(),
            ),
            ApiError::NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                "not-supported",
                "this server answers in FHIR R4 JSON only (application/fhir+json; NDJSON for bulk files)".into(),
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                "unsupported content type: send application/fhir+json (for PATCH, application/json-patch+json \
                 or a FHIRPath Patch Parameters; application/x-www-form-urlencoded for _search)"
                    .into(),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                "the request body is larger than allowed".into(),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid", m.clone()),
            ApiError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, "processing", m.clone()),
            ApiError::PreconditionFailed(m) => (StatusCode::PRECONDITION_FAILED, "conflict", m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "the server could not complete the request".into(),
            ),
            ApiError::Integrity => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "the stored record failed its integrity check and was not served".into(),
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The OperationOutcome this error answers with, serialised.
    pub(crate) fn outcome_body(&self) -> Vec<u8> {
        let (_, code, text) = self.parts();
        serde_json::to_vec(&operation_outcome("error", code, &text)).unwrap_or_default()
    }
}

/// An OperationOutcome with one issue.
pub fn operation_outcome(severity: &str, code: &str, text: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": severity, "code": code, "diagnostics": text }]
    })
}

pub(crate) fn fhir_json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::respond::FHIR_JSON),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = fhir_json_response(status, self.outcome_body());
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let detail = match &self {
            ApiError::Internal(d) => d.clone(),
            other => format!("{:?}", other.parts().1),
        };
        r.extensions_mut().insert(ErrorDetail(detail));
        r
    }
}

/// Logs every error response once: status, method and the route template (never the URL,
/// whose query may carry search terms), and the internal detail for server errors.
pub(crate) async fn log_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let route = route_shape(req.uri().path());
    let response = next.run(req).await;
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        let status = response.status().as_u16();
        if response.status().is_server_error() {
            tracing::error!(status, %method, route, detail, "request failed");
        } else {
            tracing::info!(status, %method, route, "request refused");
        }
    }
    response
}

/// The path with every id replaced by `{id}`: safe to log.
pub(crate) fn route_shape(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()).take(6) {
        out.push('/');
        let keep = seg == "fhir"
            || seg == "metadata"
            || seg.starts_with('_')
            || seg.starts_with('$')
            || seg.parse::<carevault_domain::ResourceType>().is_ok();
        out.push_str(if keep { seg } else { "{id}" });
    }
    if out.is_empty() { "/".into() } else { out }
}
