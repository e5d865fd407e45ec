//! The HTTP face of carevault: the FHIR R4 REST API over HTTPS. Handlers are thin: they turn
//! requests into calls on the core `Vault` and its answers into FHIR responses. Every error
//! leaves as an `OperationOutcome` (see `error.rs` for the one mapping).

mod audit;
mod auth;
mod body;
mod capability;
mod cors;
mod error;
mod handlers;
mod metrics;
mod negotiate;
mod oauth;
mod operator;
mod respond;
mod server;
mod state;
pub mod witness;

pub use error::ApiError;
pub use oauth::Peer;
pub use operator::{OperatorConfig, operator_router};
pub use server::{TlsFiles, serve, tls_config};
pub use state::{AppState, HttpConfig};

use axum::Router;
use axum::middleware;
use axum::routing::get;

/// The complete application router, mounted at `/fhir`.
pub fn router(state: AppState) -> Router {
    let fhir = Router::new()
        .route("/metadata", get(handlers::metadata::capability_statement))
        .route("/.well-known/smart-configuration", get(oauth::smart_configuration))
        .route(
            "/",
            get(handlers::search::search_system).post(handlers::bundle::process),
        )
        .route("/_search", axum::routing::post(handlers::search::search_system_post))
        .route("/_history", get(handlers::history::system))
        .route(
            "/$export",
            get(handlers::export::system).post(handlers::export::system_post),
        )
        .route(
            "/Patient/$export",
            get(handlers::export::patients).post(handlers::export::patients_post),
        )
        .route(
            "/$export-status/{job}",
            get(handlers::export::status).delete(handlers::export::cancel),
        )
        .route("/$export-file/{job}/{n}", get(handlers::export::file))
        .route("/$emergency-access", get(handlers::emergency::list))
        .route("/$audit", get(handlers::audit_log::search))
        .route("/$access-report", get(handlers::audit_log::access_report))
        .route(
            "/$audit-head",
            get(handlers::audit_log::head).post(handlers::audit_log::sign_head),
        )
        .route("/$audit-proof", get(handlers::audit_log::proof))
        .route("/$audit-consistency", get(handlers::audit_log::consistency))
        .route(
            "/{rtype}",
            get(handlers::search::search_type)
                .post(handlers::create::create)
                .put(handlers::conditional::update)
                .patch(handlers::patch::conditional)
                .delete(handlers::conditional::delete),
        )
        .route("/{rtype}/_history", get(handlers::history::of_type))
        .route("/{rtype}/_search", axum::routing::post(handlers::search::search_post))
        .route(
            "/{rtype}/{id}",
            get(handlers::read::read)
                .put(handlers::update::update)
                .delete(handlers::delete::delete)
                .patch(handlers::patch::patch),
        )
        .route("/{rtype}/{id}/_history", get(handlers::history::instance))
        .route(
            "/{rtype}/{id}/{rest}",
            get(handlers::compartment::patient_scoped).post(handlers::emergency::start),
        )
        .route("/{rtype}/{id}/_history/{vid}", get(handlers::read::vread))
        .method_not_allowed_fallback(handlers::fallback::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .route_layer(middleware::from_fn(negotiate::negotiate));
    // `POST [base]` arrives as `/fhir` or `/fhir/`; the nested router answers the first.
    let base_slash = Router::new()
        .route(
            "/fhir/",
            get(handlers::search::search_system).post(handlers::bundle::process),
        )
        .method_not_allowed_fallback(handlers::fallback::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .route_layer(middleware::from_fn(negotiate::negotiate));
    // The authorization server: outside `/fhir`, each endpoint authenticating its own way.
    let auth_server = Router::new()
        .route(
            "/oauth/authorize",
            get(oauth::authorize_page).post(oauth::authorize_login),
        )
        .route("/oauth/consent", axum::routing::post(oauth::consent))
        .route("/oauth/token", axum::routing::post(oauth::token))
        .route("/oauth/introspect", axum::routing::post(oauth::introspect))
        .route("/oauth/revoke", axum::routing::post(oauth::revoke))
        .route("/oauth/jwks", get(oauth::jwks));
    Router::new()
        .nest("/fhir", fhir)
        .merge(base_slash)
        .merge(auth_server)
        .fallback(handlers::fallback::not_found)
        .layer(middleware::from_fn(error::log_errors))
        .layer(middleware::from_fn(respond::security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), cors::cors))
        .layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::count))
        .with_state(state)
}
