//! OAuth 2 / SMART App Launch over HTTP: discovery, the login and consent pages, the token,
//! introspection, revocation and JWKS endpoints. Decisions live in `carevault_core::signin`;
//! this module parses forms, applies attempt limits and renders answers.

mod limits;
mod pages;

pub(crate) use limits::Limiter;

use crate::AppState;
use crate::respond::base_url;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_core::signin::{AuthorizeFailure, AuthorizeRequest, LoginError, OAuthError, TokenRequest};
use carevault_crypto::Password;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::metrics::Metrics;

/// The client's address, put on every request by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The server root (the FHIR base without `/fhir`): where the OAuth endpoints live.
fn root(state: &AppState, headers: &HeaderMap) -> String {
    let base = base_url(state, headers);
    base.strip_suffix("/fhir").unwrap_or(&base).to_owned()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Form or query pairs (`+` is a space here, as in every OAuth client); the first of a
/// repeated name wins.
fn pairs(text: &str) -> Option<HashMap<String, String>> {
    let decoded = carevault_domain::query::parse_query(&text.replace('+', "%20")).ok()?;
    let mut out = HashMap::new();
    for (k, v) in decoded {
        out.entry(k).or_insert(v);
    }
    Some(out)
}

async fn form(state: &AppState, req: Request) -> Option<HashMap<String, String>> {
    let (parts, body) = req.into_parts();
    let text = crate::body::read_form(state, &parts.headers, body).await.ok()?;
    pairs(&text)
}

fn authorize_request(p: &HashMap<String, String>) -> AuthorizeRequest {
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    AuthorizeRequest {
        response_type: get("response_type"),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        scope: get("scope"),
        state: p.get("state").cloned(),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
        aud: p.get("aud").cloned(),
    }
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn peer_key(req: &Request) -> String {
    req.extensions()
        .get::<Peer>()
        .map_or_else(|| "ip:unknown".to_owned(), |p| format!("ip:{}", p.0.ip()))
}

/// `Some(response)` when `key` is over its attempt limit.
fn limited(state: &AppState, key: &str) -> Option<i64> {
    let over = state.limiter.attempt(key, state.vault.clock().now().millis());
    if over.is_some() {
        Metrics::bump(&state.metrics.rate_limited);
    }
    over
}

fn too_many(wait: i64, html: bool) -> Response {
    let mut r = if html {
        pages::error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts. Wait a minute and try again.",
        )
    } else {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": "slow_down", "error_description": "too many requests; wait and retry"}),
        )
    };
    if let Ok(v) = HeaderValue::from_str(&wait.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// `GET [base]/.well-known/smart-configuration`.
pub(crate) async fn smart_configuration(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let root = root(&state, &headers);
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": root,
            "jwks_uri": format!("{root}/oauth/jwks"),
            "authorization_endpoint": format!("{root}/oauth/authorize"),
            "token_endpoint": format!("{root}/oauth/token"),
            "introspection_endpoint": format!("{root}/oauth/introspect"),
            "revocation_endpoint": format!("{root}/oauth/revoke"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "EdDSA"],
            "scopes_supported": ["launch/patient", "offline_access", "online_access", "patient/*.rs", "user/*.rs",
                                 "user/*.cruds", "system/*.rs", "patient/*.read", "user/*.read"],
            "capabilities": ["launch-standalone", "client-public", "client-confidential-asymmetric",
                             "context-standalone-patient", "permission-offline", "permission-online",
                             "permission-patient", "permission-user", "permission-v1", "permission-v2"]
        }),
    )
}

/// `GET /oauth/jwks`: the keys that verify access tokens.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    match state.vault.jwks() {
        Ok(keys) => json_response(StatusCode::OK, &keys),
        Err(_) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "server_error"})),
    }
}

fn fhir_base(state: &AppState, headers: &HeaderMap) -> String {
    base_url(state, headers)
}

/// `GET /oauth/authorize`: checks the request, then shows the login page.
pub(crate) async fn authorize_page(State(state): State<AppState>, req: Request) -> Response {
    let Some(p) = pairs(req.uri().query().unwrap_or_default()) else {
        return pages::error_page(StatusCode::BAD_REQUEST, "The request is malformed.");
    };
    let ar = authorize_request(&p);
    match state
        .vault
        .check_authorize(&ar, &fhir_base(&state, req.headers()))
        .await
    {
        Ok(ok) => pages::login(StatusCode::OK, &ok.client.name, &ar, None),
        Err(AuthorizeFailure::Page(m)) => pages::error_page(StatusCode::BAD_REQUEST, &m),
        Err(AuthorizeFailure::Redirect(to)) => redirect(&to),
    }
}

/// `POST /oauth/authorize`: the login form. Success shows the consent screen.
pub(crate) async fn authorize_login(State(state): State<AppState>, req: Request) -> Response {
    if let Some(wait) = limited(&state, &peer_key(&req)) {
        return too_many(wait, true);
    }
    let headers = req.headers().clone();
    let Some(p) = form(&state, req).await else {
        return pages::error_page(StatusCode::BAD_REQUEST, "The form is malformed.");
    };
    let ar = authorize_request(&p);
    let ok = match state.vault.check_authorize(&ar, &fhir_base(&state, &headers)).await {
        Ok(ok) => ok,
        Err(AuthorizeFailure::Page(m)) => return pages::error_page(StatusCode::BAD_REQUEST, &m),
        Err(AuthorizeFailure::Redirect(to)) => return redirect(&to),
    };
    let username = p.get("username").map(String::as_str).unwrap_or_default();
    if let Some(wait) = limited(&state, &format!("user:{}", username.trim().to_ascii_lowercase())) {
        return too_many(wait, true);
    }
    let password = Password::new(p.get("password").cloned().unwrap_or_default());
    let code = p.get("totp").map(String::as_str).filter(|c| !c.is_empty());
    let refused = |m: &str| {
        Metrics::bump(&state.metrics.sign_ins_refused);
        pages::login(StatusCode::UNAUTHORIZED, &ok.client.name, &ar, Some(m))
    };
    let outcome = state.vault.sign_in(username, &password, code).await;
    if matches!(outcome, Ok(Ok(_))) {
        Metrics::bump(&state.metrics.sign_ins_ok);
    }
    match outcome {
        Ok(Ok(who)) => {
            // A clinician opening an app with `launch/patient` picks one of their patients.
            let candidates =
                if who.role.needs_relationship() && ok.scopes.contains(&carevault_core::access::Scope::LaunchPatient) {
                    state.vault.launch_candidates(&who.user_id).await.unwrap_or_default()
                } else {
                    Vec::new()
                };
            match state.vault.login_ticket(&who, &ar, &ok.scopes) {
                Ok(ticket) => pages::consent(&ok.client.name, &ar.redirect_uri, &ticket, &ok.scopes, &candidates),
                Err(_) => pages::error_page(StatusCode::INTERNAL_SERVER_ERROR, "The sign-in could not be completed."),
            }
        }
        Ok(Err(LoginError::Refused)) => refused("Sign-in failed: check the username, password and code."),
        Ok(Err(LoginError::Locked { .. })) => refused("Too many failed attempts: this account is locked for a while."),
        Ok(Err(LoginError::SecondFactorMissing)) => {
            refused("This account needs a second factor that is not set up yet; ask an administrator.")
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed");
            pages::error_page(StatusCode::INTERNAL_SERVER_ERROR, "The sign-in could not be completed.")
        }
    }
}

/// `POST /oauth/consent`: the user's answer; redirects back to the application.
pub(crate) async fn consent(State(state): State<AppState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let Some(p) = form(&state, req).await else {
        return pages::error_page(StatusCode::BAD_REQUEST, "The form is malformed.");
    };
    let ticket = p.get("ticket").map(String::as_str).unwrap_or_default();
    let approve = p.get("decision").map(String::as_str) == Some("approve");
    let patient = p.get("patient").map(String::as_str).filter(|p| !p.is_empty());
    match state
        .vault
        .consent(ticket, approve, patient, &fhir_base(&state, &headers))
        .await
    {
        Ok(to) | Err(AuthorizeFailure::Redirect(to)) => redirect(&to),
        Err(AuthorizeFailure::Page(m)) => pages::error_page(StatusCode::BAD_REQUEST, &m),
    }
}

fn oauth_error(e: &OAuthError) -> Response {
    if let OAuthError::Core(inner) = e {
        tracing::error!(error = %inner, "token request failed");
    }
    let status = match e {
        OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
        OAuthError::Core(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let description = match e {
        OAuthError::Core(_) => "the server could not complete the request".to_owned(),
        other => other.to_string(),
    };
    json_response(status, &json!({"error": e.code(), "error_description": description}))
}

/// `POST /oauth/token`.
pub(crate) async fn token(State(state): State<AppState>, req: Request) -> Response {
    if let Some(wait) = limited(&state, &peer_key(&req)) {
        return too_many(wait, false);
    }
    let token_url = format!("{}/oauth/token", root(&state, req.headers()));
    let Some(p) = form(&state, req).await else {
        return oauth_error(&OAuthError::InvalidRequest(
            "send the parameters as application/x-www-form-urlencoded".into(),
        ));
    };
    // Per client as well as per address: a client id (or, for a backend, its assertion's
    // issuer is checked later) names whose attempts these are.
    if let Some(client) = p.get("client_id")
        && let Some(wait) = limited(&state, &format!("client:{client}"))
    {
        return too_many(wait, false);
    }
    let tr = TokenRequest {
        grant_type: p.get("grant_type").cloned().unwrap_or_default(),
        code: p.get("code").cloned(),
        redirect_uri: p.get("redirect_uri").cloned(),
        code_verifier: p.get("code_verifier").cloned(),
        client_id: p.get("client_id").cloned(),
        refresh_token: p.get("refresh_token").cloned(),
        scope: p.get("scope").cloned(),
        client_assertion_type: p.get("client_assertion_type").cloned(),
        client_assertion: p.get("client_assertion").cloned(),
    };
    match state.vault.token(&tr, &token_url).await {
        Ok(answer) => {
            Metrics::bump(&state.metrics.tokens_issued);
            json_response(StatusCode::OK, &serde_json::to_value(answer).unwrap_or_default())
        }
        Err(e) => {
            Metrics::bump(&state.metrics.token_requests_refused);
            oauth_error(&e)
        }
    }
}

/// `POST /oauth/introspect` (RFC 7662): for resource servers — the integration token, a
/// backend service's token or an admin account's.
pub(crate) async fn introspect(State(state): State<AppState>, req: Request) -> Response {
    use carevault_core::access::{Actor, Role};
    let bearer = crate::auth::bearer(&req).map(str::to_owned);
    let caller = match bearer {
        Some(t) => state.authenticate(&t).await,
        None => None,
    };
    match caller {
        None => return crate::ApiError::Unauthorized.into_response(),
        Some(a)
            if !(a.is_unrestricted() || a.role() == Some(Role::Admin) || matches!(a.actor(), Actor::Client { .. })) =>
        {
            return crate::ApiError::Forbidden("introspection is for resource servers".into()).into_response();
        }
        Some(_) => {}
    }
    let Some(p) = form(&state, req).await else {
        return oauth_error(&OAuthError::InvalidRequest("send token as a form parameter".into()));
    };
    let token = p.get("token").map(String::as_str).unwrap_or_default();
    match state.vault.introspect(token).await {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(e) => oauth_error(&OAuthError::Core(e)),
    }
}

/// `POST /oauth/revoke` (RFC 7009): always 200 unless the request is malformed.
pub(crate) async fn revoke(State(state): State<AppState>, req: Request) -> Response {
    if let Some(wait) = limited(&state, &peer_key(&req)) {
        return too_many(wait, false);
    }
    let Some(p) = form(&state, req).await else {
        return oauth_error(&OAuthError::InvalidRequest("send token as a form parameter".into()));
    };
    let token = p.get("token").map(String::as_str).unwrap_or_default();
    match state
        .vault
        .revoke_token(token, p.get("client_id").map(String::as_str))
        .await
    {
        Ok(()) => json_response(StatusCode::OK, &json!({})),
        Err(e) => oauth_error(&OAuthError::Core(e)),
    }
}
