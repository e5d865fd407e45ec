//! Signing in: registered client applications, the password + second-factor check with
//! lockout, and the OAuth 2 / SMART App Launch grants built on them (authorization code with
//! PKCE, rotating refresh tokens, backend client credentials with a signed assertion),
//! introspection and revocation. The HTTP layer only parses forms and renders pages.
//!
//! Every token belongs to a sign-in session stored beside the accounts; revoking the session
//! (logout, `/revoke`, disabling the account) moves the access epoch, so the next request
//! with any of its tokens is refused.

mod clients;
mod grants;
mod login;
mod policy;
#[cfg(test)]
mod tests;

pub use clients::{ClientInfo, NewClient};
pub(crate) use grants::{AccessClaims, CLI_CLIENT, GrantDoc};
pub use grants::{AuthorizeFailure, AuthorizeRequest, Consented, IntrospectAnswer, TokenAnswer, TokenRequest};
pub use login::{LoginError, SignedIn};
pub use policy::SignInPolicy;

/// Why an OAuth request was refused, with the RFC 6749 error code it answers with.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("the grant type is not supported")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error(transparent)]
    Core(#[from] crate::CoreError),
}

impl OAuthError {
    /// The `error` value of the response.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::AccessDenied(_) => "access_denied",
            OAuthError::Core(_) => "server_error",
        }
    }
}

impl From<carevault_storage::StoreError> for OAuthError {
    fn from(e: carevault_storage::StoreError) -> Self {
        OAuthError::Core(e.into())
    }
}

impl From<carevault_crypto::CryptoError> for OAuthError {
    fn from(e: carevault_crypto::CryptoError) -> Self {
        OAuthError::Core(e.into())
    }
}

/// Session documents as the token check and `carevault token` see them.
pub(crate) struct GrantDocLite;

impl GrantDocLite {
    /// The document of a session made by `carevault token`: no idle timeout (automation).
    pub(crate) fn cli(scopes: &crate::access::ScopeSet) -> String {
        serde_json::json!({ "scope": scopes.to_string(), "code_used": true, "idle": false }).to_string()
    }

    /// Whether the idle timeout applies to a session.
    pub(crate) fn idle(doc: &str) -> Result<bool, crate::CoreError> {
        Ok(GrantDoc::parse(doc)?.idle)
    }
}
