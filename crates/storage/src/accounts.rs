//! User accounts at the storage boundary. The store sees a blind tag of the username (for
//! lookup) and the username sealed under the tenant key, never the name itself.

use crate::StoreError;
use std::future::Future;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// Random opaque id (what tokens and the audit log name).
    pub id: String,
    pub tenant: String,
    /// Keyed blind tag of the normalised username: unique per tenant.
    pub username_tag: Vec<u8>,
    /// The username sealed under the tenant data key `username_key_id`.
    pub username_sealed: Vec<u8>,
    pub username_key_id: i64,
    pub role: String,
    /// The Patient id of a patient account.
    pub patient: Option<String>,
    /// The Practitioner id of a staff account.
    pub practitioner: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub disabled: bool,
    pub created: i64,
}

/// One break-the-glass grant: a clinician's time-boxed emergency access to one patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEmergency {
    pub id: String,
    pub tenant: String,
    pub user_id: String,
    pub patient: String,
    pub started: i64,
    pub expires: i64,
    /// The stated reason, sealed under the patient's data key `reason_key_id`.
    pub reason_sealed: Vec<u8>,
    pub reason_key_id: i64,
    /// When a privacy officer reviewed it, who, and the verdict.
    pub reviewed_at: Option<i64>,
    pub reviewer: Option<String>,
    pub verdict: Option<String>,
}

/// See [`AccountStore::access_epoch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessEpoch {
    /// The newest Consent version's seq.
    pub consent: i64,
    /// The highest account change stamp.
    pub accounts: i64,
    /// How many break-the-glass grants exist.
    pub emergencies: i64,
    /// The newest sign-in session revocation's stamp.
    pub sessions: i64,
}

/// Accounts of the people who sign in, and their emergency-access grants.
pub trait AccountStore: Send + Sync {
    /// Adds an account; a username already taken in the tenant is `StoreError::Conflict`.
    /// With `audit`, the entry recording it is appended in the same transaction.
    fn insert_user(
        &self,
        user: StoredUser,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn user_by_tag(
        &self,
        tenant: &str,
        tag: &[u8],
    ) -> impl Future<Output = Result<Option<StoredUser>, StoreError>> + Send;

    fn user_by_id(&self, tenant: &str, id: &str)
    -> impl Future<Output = Result<Option<StoredUser>, StoreError>> + Send;

    /// Every account of a tenant, oldest first.
    fn users(&self, tenant: &str) -> impl Future<Output = Result<Vec<StoredUser>, StoreError>> + Send;

    /// Disables or enables an account; `false` when there is no such account. With `audit`,
    /// the entry recording it is appended in the same transaction (when the account exists).
    fn set_user_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores a grant; with `audit`, the entry recording it is appended in the same
    /// transaction.
    fn insert_emergency(
        &self,
        e: StoredEmergency,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Patients `user_id` has emergency access to at `now`, each with when that ends.
    fn active_emergencies(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;

    /// A value that changes whenever something access decisions depend on changes in the
    /// database — a Consent version, an account, a break-the-glass grant — in one round trip.
    fn access_epoch(&self, tenant: &str) -> impl Future<Output = Result<AccessEpoch, StoreError>> + Send;

    /// Grants, newest first: of one patient, or all; only unreviewed ones if asked.
    fn emergencies(
        &self,
        tenant: &str,
        patient: Option<&str>,
        unreviewed_only: bool,
    ) -> impl Future<Output = Result<Vec<StoredEmergency>, StoreError>> + Send;

    /// Records a review; `false` when there is no such grant or it was reviewed already. With
    /// `audit`, the entry recording it is appended in the same transaction when it was recorded.
    fn review_emergency(
        &self,
        tenant: &str,
        id: &str,
        reviewer: &str,
        verdict: &str,
        at: i64,
        audit: Option<crate::AuditMaker>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The columns every query of `users` selects, in `StoredUser` order.
pub(crate) const USER_COLUMNS: &str = "id, tenant, username_tag, username_sealed, username_key_id, role, patient, \
     practitioner, password_hash, disabled, created";

/// The columns every query of `emergency_access` selects, in `StoredEmergency` order.
pub(crate) const EMERGENCY_COLUMNS: &str = "id, tenant, user_id, patient, started, expires, reason_sealed, \
     reason_key_id, reviewed_at, reviewer, verdict";
