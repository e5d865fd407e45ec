//! The password and second-factor check, with lockout and back-off.

use crate::access::Role;
use crate::accounts::Username;
use crate::audit::{AuditDraft, ChangeEntry, Outcome};
use crate::keys::Row;
use crate::{CoreError, Vault};
use carevault_crypto::{Password, TotpSecret, verify_password};
use carevault_domain::ResourceId;
use carevault_storage::{Revoke, Store, StoredSecurity, StoredUser};

/// Who signed in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user_id: String,
    pub role: Role,
    pub patient: Option<ResourceId>,
}

/// Why a sign-in was refused. The page says as little as it can: a wrong username, a wrong
/// password and a wrong code all read the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Username, password or code wrong (or the account disabled).
    Refused,
    /// Too many failed attempts: no sign-in until `until` (milliseconds).
    Locked { until: i64 },
    /// The role needs a second factor the account does not have yet.
    SecondFactorMissing,
}

/// A sign-in's entry names the account tried (by opaque id and role) and the outcome.
fn signed_in_as(d: &mut AuditDraft, user: &StoredUser, outcome: Outcome) {
    d.agent.who = format!("user:{}", user.id);
    d.agent.role = Some(user.role.clone());
    d.outcome = outcome;
}

/// A hash to verify against when the username is unknown, so the answer takes as long.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn totp_row(user_id: &str, key_id: i64) -> Row<'_> {
    Row {
        rtype: "UserTotp",
        id: user_id,
        version: 0,
        patient: "",
        key_id,
    }
}

impl<S: Store> Vault<S> {
    async fn user_named(&self, username: &Username) -> Result<Option<StoredUser>, CoreError> {
        let tag = self.username_tag(username);
        Ok(self.store.user_by_tag(self.tenant.as_str(), &tag).await?)
    }

    /// Gives an account a new TOTP secret (replacing any earlier one) and returns it, for the
    /// operator to hand over as an `otpauth://` URI.
    pub async fn enroll_totp(&self, username: &Username) -> Result<TotpSecret, CoreError> {
        let user = self.user_named(username).await?.ok_or(CoreError::NotFound)?;
        let secret = TotpSecret::generate(self.rng.as_ref())?;
        let (key_id, dek) = self.key_for_scope("").await?;
        let sealed = self.seal_with(&dek, &totp_row(&user.id, key_id), secret.as_bytes())?;
        let mut sec = self.security_of(&user.id).await?;
        sec.totp_sealed = Some(sealed);
        sec.totp_key_id = key_id;
        sec.totp_last_step = 0;
        let entry = self.change_entry(|_| {});
        self.store.put_security(sec, ChangeEntry::maker(&entry)).await?;
        ChangeEntry::done_if(entry, true);
        Ok(secret)
    }

    async fn security_of(&self, user_id: &str) -> Result<StoredSecurity, CoreError> {
        Ok(self
            .store
            .security(self.tenant.as_str(), user_id)
            .await?
            .unwrap_or_else(|| StoredSecurity {
                user_id: user_id.to_owned(),
                tenant: self.tenant.as_str().to_owned(),
                ..StoredSecurity::default()
            }))
    }

    /// Whether an account has a second factor.
    pub async fn has_totp(&self, username: &Username) -> Result<bool, CoreError> {
        let Some(user) = self.user_named(username).await? else {
            return Ok(false);
        };
        Ok(self.security_of(&user.id).await?.totp_sealed.is_some())
    }

    /// Checks a username, password and (for the roles that need it) TOTP code. Failures
    /// count towards a lock that doubles with each further failure; a success resets it.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &Password,
        code: Option<&str>,
    ) -> Result<Result<SignedIn, LoginError>, CoreError> {
        let now = self.clock.now();
        let user = match Username::parse(username) {
            Ok(u) => self.user_named(&u).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            let dummy = DUMMY_HASH.get_or_init(|| {
                carevault_crypto::hash_password(self.rng.as_ref(), &Password::new("not-an-account".into()))
                    .unwrap_or_default()
            });
            let _ = verify_password(dummy, password);
            return Ok(Err(LoginError::Refused));
        };
        let mut sec = self.security_of(&user.id).await?;
        if sec.locked_until > now.millis() {
            return Ok(Err(LoginError::Locked {
                until: sec.locked_until,
            }));
        }
        let role = Role::parse(&user.role).ok_or(CoreError::Integrity)?;
        let password_ok = verify_password(&user.password_hash, password) && !user.disabled;
        let needs_code = self.policy.signin.mfa_roles.contains(&role);
        let step = match (&sec.totp_sealed, needs_code) {
            (Some(sealed), true) => {
                let secret = TotpSecret::from_bytes(self.open(&totp_row(&user.id, sec.totp_key_id), sealed).await?);
                code.and_then(|c| secret.verify(c, now.unix_seconds(), sec.totp_last_step))
            }
            (None, true) if password_ok => return Ok(Err(LoginError::SecondFactorMissing)),
            _ => Some(sec.totp_last_step),
        };
        match (password_ok, step) {
            (true, Some(step)) => {
                sec.failed = 0;
                sec.locked_until = 0;
                sec.totp_last_step = step;
                // The sign-in's entry, naming the account, commits with its reset counters.
                let entry = self.change_entry(|d| signed_in_as(d, &user, Outcome::Success));
                self.store.put_security(sec, ChangeEntry::maker(&entry)).await?;
                ChangeEntry::done_if(entry, true);
                Ok(Ok(SignedIn {
                    user_id: user.id,
                    role,
                    patient: user.patient.as_deref().and_then(|p| ResourceId::parse(p).ok()),
                }))
            }
            _ => {
                sec.failed += 1;
                let lock = self.policy.signin.lock_secs(sec.failed);
                if lock > 0 {
                    sec.locked_until = now.millis() + lock * 1000;
                    tracing::warn!(user = %user.id, failed = sec.failed, lock_secs = lock, "account locked after failed sign-ins");
                }
                // The refusal's entry commits with the failure it counts.
                let entry = self.change_entry(|d| signed_in_as(d, &user, Outcome::MinorFailure));
                self.store.put_security(sec, ChangeEntry::maker(&entry)).await?;
                ChangeEntry::done_if(entry, true);
                Ok(Err(LoginError::Refused))
            }
        }
    }

    /// Lifts a lock (operator work).
    pub async fn unlock_user(&self, username: &Username) -> Result<(), CoreError> {
        let user = self.user_named(username).await?.ok_or(CoreError::NotFound)?;
        let mut sec = self.security_of(&user.id).await?;
        sec.failed = 0;
        sec.locked_until = 0;
        let entry = self.change_entry(|_| {});
        self.store.put_security(sec, ChangeEntry::maker(&entry)).await?;
        ChangeEntry::done_if(entry, true);
        Ok(())
    }

    /// Ends every session of an account (its tokens fail on the next request).
    pub async fn revoke_user_sessions(&self, user_id: &str) -> Result<u64, CoreError> {
        let entry = self.change_entry(|_| {});
        let n = self
            .store
            .revoke_sessions(self.tenant.as_str(), Revoke::User(user_id), ChangeEntry::maker(&entry))
            .await?;
        ChangeEntry::done_if(entry, n > 0);
        self.access_changed();
        Ok(n)
    }
}
