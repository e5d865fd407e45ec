//! The operator listener: account and client management, health and metrics, on a listener
//! of its own (loopback by default) that answers only addresses on its allow-list and only
//! the operator's integration token or an admin account's token. Nothing here reads
//! clinical data.

use crate::oauth::Peer;
use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use carevault_core::access::{Role, ScopeSet};
use carevault_core::{CoreError, Username};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;

/// Who may reach the operator listener.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Client addresses allowed; anything else gets 403 before its token is looked at.
    pub allow: Vec<IpAddr>,
}

#[derive(Clone)]
struct OperatorState {
    app: AppState,
    config: Arc<OperatorConfig>,
}

fn json_ok(v: &Value) -> Response {
    let mut r = (StatusCode::OK, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn guard(State(s): State<OperatorState>, req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<Peer>()
        .is_some_and(|p| s.config.allow.contains(&p.0.ip()));
    if !allowed {
        tracing::warn!("operator request from an address not on the allow-list refused");
        return ApiError::Forbidden("this address may not use the operator endpoints".into()).into_response();
    }
    let token = crate::auth::bearer(&req).map(str::to_owned);
    let access = match token {
        Some(t) => s.app.authenticate(&t).await,
        None => None,
    };
    match access {
        Some(a) if a.is_unrestricted() || a.role() == Some(Role::Admin) => {
            // A change made here commits the request's entry: it names the operator.
            crate::auth::name_pending_caller(&a);
            let mut response = next.run(req).await;
            response.extensions_mut().insert(crate::auth::Caller(a));
            response
        }
        Some(_) => ApiError::Forbidden("operator endpoints need the integration token or an admin account".into())
            .into_response(),
        None => ApiError::Unauthorized.into_response(),
    }
}

fn core(e: CoreError) -> Response {
    ApiError::from(e).into_response()
}

async fn health(State(s): State<OperatorState>) -> Response {
    json_ok(&json!({"status": "ok", "backend": s.app.vault.unchecked_store().backend_name()}))
}

async fn metrics(State(s): State<OperatorState>) -> Response {
    let mut r = (StatusCode::OK, s.app.metrics.render()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn users(State(s): State<OperatorState>) -> Response {
    match s.app.vault.users().await {
        Ok(list) => json_ok(&Value::Array(
            list.into_iter()
                .map(|u| {
                    json!({"id": u.id, "username": u.username, "role": u.role.as_str(),
                           "patient": u.patient, "practitioner": u.practitioner, "disabled": u.disabled})
                })
                .collect(),
        )),
        Err(e) => core(e),
    }
}

async fn user_action(State(s): State<OperatorState>, Path((name, action)): Path<(String, String)>) -> Response {
    let Ok(name) = Username::parse(&name) else {
        return ApiError::NotFound("no such account").into_response();
    };
    let done = match action.as_str() {
        "disable" => s.app.vault.set_user_disabled(&name, true).await,
        "enable" => s.app.vault.set_user_disabled(&name, false).await,
        "unlock" => s.app.vault.unlock_user(&name).await,
        _ => return ApiError::NotFound("unknown action: disable, enable or unlock").into_response(),
    };
    match done {
        Ok(()) => json_ok(&json!({"done": action})),
        Err(CoreError::NotFound) => ApiError::NotFound("no such account").into_response(),
        Err(e) => core(e),
    }
}

async fn clients(State(s): State<OperatorState>) -> Response {
    match s.app.vault.clients().await {
        Ok(list) => json_ok(&Value::Array(
            list.into_iter()
                .map(|c| {
                    json!({"id": c.id, "name": c.name, "redirect_uris": c.redirect_uris,
                           "scopes": c.scopes.to_string(), "confidential": c.confidential()})
                })
                .collect(),
        )),
        Err(e) => core(e),
    }
}

async fn add_client(State(s): State<OperatorState>, body: axum::body::Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return ApiError::BadRequest("send a JSON object".into()).into_response();
    };
    let Ok(scopes) = ScopeSet::parse(v["scopes"].as_str().unwrap_or_default()) else {
        return ApiError::BadRequest("scopes: a malformed scope".into()).into_response();
    };
    let texts = std::iter::once(&v["name"]).chain(v["redirect_uris"].as_array().into_iter().flatten());
    if texts
        .filter_map(Value::as_str)
        .any(carevault_domain::validate::has_control)
    {
        return ApiError::BadRequest("a name or redirect URI holds a control character".into()).into_response();
    }
    let new = carevault_core::signin::NewClient {
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        redirect_uris: v["redirect_uris"]
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        scopes,
        jwks: v.get("jwks").cloned().filter(|j| !j.is_null()),
    };
    match s.app.vault.add_client(new).await {
        Ok(id) => {
            let mut r = json_ok(&json!({"id": id}));
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(e) => core(e),
    }
}

/// The operator router.
pub fn operator_router(app: AppState, config: OperatorConfig) -> Router {
    let state = OperatorState {
        app,
        config: Arc::new(config),
    };
    Router::new()
        .route("/operator/health", get(health))
        .route("/operator/metrics", get(metrics))
        .route("/operator/users", get(users))
        .route("/operator/users/{name}/{action}", post(user_action))
        .route("/operator/clients", get(clients).post(add_client))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .fallback(crate::handlers::fallback::not_found)
        .layer(middleware::from_fn_with_state(state.app.clone(), crate::audit::record))
        .layer(middleware::from_fn(crate::respond::security_headers))
        .with_state(state)
}
