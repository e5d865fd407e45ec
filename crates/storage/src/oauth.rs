//! Sign-in state at the storage boundary: registered OAuth clients, sign-in sessions (the
//! authorization code and the refresh-token chain of one sign-in) and each account's second
//! factor and failed-attempt counter. Codes and refresh tokens are kept only as hashes; the
//! TOTP secret only sealed.

use crate::StoreError;
use std::future::Future;

/// A registered client application. `doc` is the core's JSON description of it (name,
/// redirect URIs, allowed scopes, public keys): nothing in it identifies a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClient {
    pub id: String,
    pub tenant: String,
    pub doc: String,
    pub created: i64,
    pub disabled: bool,
}

/// One sign-in: created when a user approves a client (holding the authorization code until
/// it is exchanged) or when a backend client authenticates; then the chain of refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub id: String,
    pub tenant: String,
    /// The account signed in; `None` for a backend client acting for itself.
    pub user_id: Option<String>,
    pub client_id: String,
    /// Hash of the authorization code until it is exchanged.
    pub code_hash: Option<Vec<u8>>,
    /// Hash of the current refresh token, and of the one it replaced (a replayed old refresh
    /// token reveals a stolen chain: the session is revoked).
    pub refresh_hash: Option<Vec<u8>>,
    pub prev_refresh_hash: Option<Vec<u8>>,
    /// The core's JSON of the grant (scopes, patient context, PKCE challenge, redirect URI,
    /// code expiry).
    pub doc: String,
    pub created: i64,
    /// Last time a token was issued in this session (idle timeout counts from here).
    pub last_active: i64,
    /// Absolute end of the session.
    pub expires: i64,
    /// Raised on every change, for compare-and-swap.
    pub generation: i64,
    pub revoked: bool,
}

/// Which hash of a session a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMatch {
    Code,
    Refresh,
    /// A refresh token already rotated away.
    PreviousRefresh,
}

/// An account's second factor and failed sign-in attempts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredSecurity {
    pub user_id: String,
    pub tenant: String,
    /// The TOTP secret sealed under the tenant data key `totp_key_id`.
    pub totp_sealed: Option<Vec<u8>>,
    pub totp_key_id: i64,
    /// The last TOTP time step accepted (a code is good once).
    pub totp_last_step: i64,
    /// Failed attempts since the last success.
    pub failed: i64,
    /// No sign-in before this time (milliseconds).
    pub locked_until: i64,
}

/// Which sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum Revoke<'a> {
    Session(&'a str),
    User(&'a str),
}

pub trait OAuthStore: Send + Sync {
    /// Adds a client; with `audit`, the entry recording it is appended in the same transaction.
    fn insert_client(
        &self,
        c: StoredClient,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn client_by_id(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredClient>, StoreError>> + Send;

    /// Every client of a tenant, oldest first.
    fn clients(&self, tenant: &str) -> impl Future<Output = Result<Vec<StoredClient>, StoreError>> + Send;

    /// Adds a session; an id already used is `StoreError::Conflict` (backend clients' assertion
    /// ids become session ids, so a replayed assertion is refused here). With `audit`, the
    /// entry recording it is appended in the same transaction.
    fn insert_session(
        &self,
        s: StoredSession,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn session_by_id(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredSession>, StoreError>> + Send;

    /// The session whose code, refresh token or previous refresh token hashes to `hash`.
    fn session_by_hash(
        &self,
        tenant: &str,
        hash: &[u8],
    ) -> impl Future<Output = Result<Option<(StoredSession, SessionMatch)>, StoreError>> + Send;

    /// Writes `s` if the stored session still has generation `s.generation - 1`; `false` when
    /// another request changed it first. With `audit`, the entry recording it is appended in
    /// the same transaction when it was written.
    fn update_session(
        &self,
        s: StoredSession,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes sessions and moves the access epoch; how many were revoked. With `audit`, the
    /// entry recording it is appended in the same transaction when any was.
    fn revoke_sessions(
        &self,
        tenant: &str,
        which: Revoke<'_>,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn security(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<StoredSecurity>, StoreError>> + Send;

    /// Inserts or replaces an account's security row; with `audit`, the entry recording it is
    /// appended in the same transaction.
    fn put_security(
        &self,
        s: StoredSecurity,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes sessions that ended before `now`; how many. `audit`, when given, is appended
    /// in the same transaction if any was removed.
    fn delete_ended_sessions(
        &self,
        tenant: &str,
        now: i64,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

pub(crate) const CLIENT_COLUMNS: &str = "id, tenant, doc, created, disabled";
pub(crate) const SESSION_COLUMNS: &str = "id, tenant, user_id, client_id, code_hash, refresh_hash, \
     prev_refresh_hash, doc, created, last_active, expires, generation, revoked";
pub(crate) const SECURITY_COLUMNS: &str =
    "user_id, tenant, totp_sealed, totp_key_id, totp_last_step, failed, locked_until";

/// Which hash of `s` is `hash`.
pub(crate) fn which_hash(s: &StoredSession, hash: &[u8]) -> SessionMatch {
    if s.code_hash.as_deref() == Some(hash) {
        SessionMatch::Code
    } else if s.refresh_hash.as_deref() == Some(hash) {
        SessionMatch::Refresh
    } else {
        SessionMatch::PreviousRefresh
    }
}
