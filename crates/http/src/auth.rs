//! Authentication: every endpoint but `/metadata` (and the SMART discovery document) needs a
//! bearer token. The middleware turns the token into the caller's access decision and puts it
//! in the request; handlers take it as a [`Caller`] and reach the records only through
//! `vault.session(&caller)`.

use crate::{ApiError, AppState};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carevault_core::access::Access;
use std::ops::Deref;
use std::sync::Arc;

/// The access decision for the request's caller.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub Arc<Access>);

impl Deref for Caller {
    type Target = Access;
    fn deref(&self) -> &Access {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Unauthorized)
    }
}

pub(crate) fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Names the authenticated caller in the request's pending audit entry, if it has one (a
/// request that may change state): actor, role, client and purpose of use.
pub(crate) fn name_pending_caller(a: &carevault_core::access::Access) {
    carevault_core::audit::update_pending(|d| carevault_core::audit::name_caller(d, a));
}

pub(crate) async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.ends_with("/metadata") || path.ends_with("/.well-known/smart-configuration") {
        // Discovery documents: public by design.
        return next.run(req).await;
    }
    let decided = match bearer(&req) {
        Some(token) => state.authenticate(token).await,
        None => None,
    };
    match decided {
        Some(access) => {
            // A change this request commits carries its entry: it names the caller.
            name_pending_caller(&access);
            let caller = Caller(access);
            req.extensions_mut().insert(caller.clone());
            let mut response = next.run(req).await;
            // For the audit entry, written by the outer layer.
            response.extensions_mut().insert(caller);
            response
        }
        None => ApiError::Unauthorized.into_response(),
    }
}
