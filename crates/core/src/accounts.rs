//! Accounts and the access tokens they hold: adding, listing and disabling accounts (operator
//! work that reads no clinical data), minting signed tokens, and turning a presented token
//! into the caller's [`Access`] on every request.

use crate::access::{Access, Role, ScopeSet, Subject};
use crate::audit::ChangeEntry;
use crate::keys::Row;
use crate::{CoreError, Vault};
use carevault_crypto::{IndexKey, Password, TokenSigner, hash_password};
use carevault_domain::{ResourceId, ResourceType};
use carevault_storage::{Store, StoredUser};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// The shortest password an account may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest a minted token may live.
pub const MAX_TOKEN_TTL_SECS: i64 = 24 * 60 * 60;

/// A username: 1–64 characters of `a-z 0-9 . _ @ -`, compared in lower case.
#[derive(Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Username, CoreError> {
        let lower = s.trim().to_ascii_lowercase();
        let ok = !lower.is_empty()
            && lower.len() <= 64
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@-".contains(&b));
        if ok {
            Ok(Username(lower))
        } else {
            Err(CoreError::Invalid(
                "a username is 1 to 64 characters of a-z, 0-9, '.', '_', '@' and '-'".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Usernames can identify people: they are kept out of logs.
impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Username(..)")
    }
}

/// A new account.
#[derive(Debug)]
pub struct NewAccount {
    pub username: Username,
    pub role: Role,
    pub patient: Option<ResourceId>,
    pub practitioner: Option<ResourceId>,
    pub password: Password,
}

/// An account as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub patient: Option<String>,
    pub practitioner: Option<String>,
    pub disabled: bool,
}

fn username_row(id: &str, key_id: i64) -> Row<'_> {
    Row {
        rtype: "User",
        id,
        version: 0,
        patient: "",
        key_id,
    }
}

/// A decision, the epoch it was made at, and until when it may be reused.
type CachedDecision = (Arc<Access>, carevault_storage::AccessEpoch, i64);

/// Decisions reused per token (by its hash) while the access epoch holds.
#[derive(Default)]
pub(crate) struct DecisionCache(RwLock<HashMap<carevault_crypto::TokenHash, CachedDecision>>);

const MAX_CACHED_DECISIONS: usize = 10_000;

impl DecisionCache {
    fn get(
        &self,
        key: &carevault_crypto::TokenHash,
        epoch: carevault_storage::AccessEpoch,
        now: i64,
    ) -> Option<Arc<Access>> {
        let map = self.0.read().ok()?;
        let (access, at, until) = map.get(key)?;
        (*at == epoch && now < *until).then(|| access.clone())
    }

    fn put(
        &self,
        key: carevault_crypto::TokenHash,
        access: Arc<Access>,
        epoch: carevault_storage::AccessEpoch,
        until: i64,
    ) {
        if let Ok(mut map) = self.0.write() {
            if map.len() >= MAX_CACHED_DECISIONS {
                map.clear();
            }
            map.insert(key, (access, epoch, until));
        }
    }
}

/// Why a presented token was not accepted (for the log; the client hears only 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Malformed,
    Expired,
    UnknownAccount,
    Disabled,
    /// Its session was revoked (logout, `/revoke`, the account disabled).
    Revoked,
}

impl<S: Store> Vault<S> {
    pub(crate) fn username_tag(&self, u: &Username) -> Vec<u8> {
        IndexKey::derive(&self.keys, self.tenant.as_str(), "username")
            .tag(u.as_str().as_bytes())
            .0
            .to_vec()
    }

    fn signer(&self) -> Result<&TokenSigner, CoreError> {
        Ok(&self.signer)
    }

    /// Adds an account and returns its opaque id. The pending audit entry (an operator
    /// command's or request's) commits with it; if the account cannot be added, nothing is
    /// written.
    pub async fn add_user(&self, a: NewAccount) -> Result<String, CoreError> {
        if a.password.len() < MIN_PASSWORD_CHARS {
            return Err(CoreError::Invalid(format!(
                "a password needs at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        match (a.role, &a.patient, &a.practitioner) {
            (Role::Patient, None, _) => {
                return Err(CoreError::Invalid(
                    "a patient account needs --patient Patient/ID".into(),
                ));
            }
            (Role::Patient, _, Some(_)) => {
                return Err(CoreError::Invalid("a patient account is not a practitioner".into()));
            }
            (r, Some(_), _) if r != Role::Patient => {
                return Err(CoreError::Invalid("only patient accounts link to a Patient".into()));
            }
            (r, _, None) if r.needs_relationship() => {
                return Err(CoreError::Invalid(format!(
                    "a {r} account needs --practitioner Practitioner/ID (care relationships are found through it)"
                )));
            }
            _ => {}
        }
        let system = Access::unchecked_system();
        for (t, id) in [
            (ResourceType::Patient, &a.patient),
            (ResourceType::Practitioner, &a.practitioner),
        ] {
            if let Some(id) = id
                && !matches!(self.session(&system).read(t, id).await?, crate::ReadOutcome::Found(_))
            {
                return Err(CoreError::Invalid(format!("{} {id} does not exist", t.as_str())));
            }
        }
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw)?;
        let id = ResourceId::from_random(raw).as_str().to_owned();
        let (key_id, dek) = self.key_for_scope("").await?;
        let sealed = self.seal_with(&dek, &username_row(&id, key_id), a.username.as_str().as_bytes())?;
        let user = StoredUser {
            id: id.clone(),
            tenant: self.tenant.as_str().to_owned(),
            username_tag: self.username_tag(&a.username),
            username_sealed: sealed,
            username_key_id: key_id,
            role: a.role.as_str().to_owned(),
            patient: a.patient.map(|p| p.as_str().to_owned()),
            practitioner: a.practitioner.map(|p| p.as_str().to_owned()),
            password_hash: hash_password(self.rng.as_ref(), &a.password)?,
            disabled: false,
            created: self.clock.now().millis(),
        };
        let entry = self.change_entry(|_| {});
        let inserted = self.store.insert_user(user, ChangeEntry::maker(&entry)).await;
        ChangeEntry::done_if(entry, inserted.is_ok());
        self.access_changed();
        match inserted {
            Err(carevault_storage::StoreError::Conflict) => {
                Err(CoreError::Conflict("that username is already taken".into()))
            }
            other => Ok(other.map(|()| id)?),
        }
    }

    async fn summary(&self, u: StoredUser) -> Result<AccountSummary, CoreError> {
        let name = self
            .open(&username_row(&u.id, u.username_key_id), &u.username_sealed)
            .await?;
        Ok(AccountSummary {
            username: String::from_utf8(name).map_err(|_| CoreError::Integrity)?,
            role: Role::parse(&u.role).ok_or(CoreError::Integrity)?,
            id: u.id,
            patient: u.patient,
            practitioner: u.practitioner,
            disabled: u.disabled,
        })
    }

    /// Every account, oldest first.
    pub async fn users(&self) -> Result<Vec<AccountSummary>, CoreError> {
        let mut out = Vec::new();
        for u in self.store.users(self.tenant.as_str()).await? {
            out.push(self.summary(u).await?);
        }
        Ok(out)
    }

    /// Disables (or re-enables) an account; its tokens stop working on the next request. The
    /// pending audit entry commits with the change.
    pub async fn set_user_disabled(&self, username: &Username, disabled: bool) -> Result<(), CoreError> {
        let tag = self.username_tag(username);
        let user = self
            .store
            .user_by_tag(self.tenant.as_str(), &tag)
            .await?
            .ok_or(CoreError::NotFound)?;
        let entry = self.change_entry(|_| {});
        let changed = self
            .store
            .set_user_disabled(self.tenant.as_str(), &user.id, disabled, ChangeEntry::maker(&entry))
            .await?;
        ChangeEntry::done_if(entry, changed);
        if disabled {
            self.revoke_user_sessions(&user.id).await?;
        }
        self.access_changed();
        Ok(())
    }

    /// Stores a new integration token (by its hash) and revokes every other one, in one
    /// transaction with the pending audit entry; how many were revoked.
    pub async fn replace_integration_tokens(&self, hash: &[u8]) -> Result<u64, CoreError> {
        let entry = self.change_entry(|_| {});
        let revoked = self
            .store
            .replace_tokens(hash, "rotated", self.clock.now().millis(), ChangeEntry::maker(&entry))
            .await?;
        ChangeEntry::done_if(entry, true);
        Ok(revoked)
    }

    /// A signed access token for an account, holding `scopes` for `ttl_secs`.
    pub async fn mint_token(&self, username: &Username, scopes: &ScopeSet, ttl_secs: i64) -> Result<String, CoreError> {
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(CoreError::Invalid(format!(
                "a token lives between 1 second and {MAX_TOKEN_TTL_SECS} seconds"
            )));
        }
        let tag = self.username_tag(username);
        let user = self
            .store
            .user_by_tag(self.tenant.as_str(), &tag)
            .await?
            .ok_or(CoreError::NotFound)?;
        if user.disabled {
            return Err(CoreError::Forbidden("the account is disabled".into()));
        }
        // A session of its own, so the token can be revoked like any other.
        let now = self.clock.now();
        let exp = now.unix_seconds() + ttl_secs;
        let sid = self.random_id()?;
        let doc = crate::signin::GrantDocLite::cli(scopes);
        let entry = self.change_entry(|_| {});
        self.store
            .insert_session(
                self.new_session(
                    sid.clone(),
                    Some(user.id.clone()),
                    crate::signin::CLI_CLIENT,
                    doc,
                    exp * 1000,
                ),
                ChangeEntry::maker(&entry),
            )
            .await?;
        ChangeEntry::done_if(entry, true);
        self.sign_access(&crate::signin::AccessClaims {
            sub: &user.id,
            client: false,
            scopes,
            patient: user.patient.as_deref(),
            sid: &sid,
            cid: crate::signin::CLI_CLIENT,
            iat: now.unix_seconds(),
            exp,
        })
    }

    /// The access decision for a presented access token: signature, expiry and tenant
    /// checked, the account looked up (so disabling it holds on the next request), the
    /// care relationships found, the scopes intersected with the role.
    ///
    /// A decision is reused for the same token while nothing it depends on has changed: the
    /// database's access epoch (consents, accounts, break-the-glass grants) is read on every
    /// call, and a reused decision lives at most until the token expires, a grant in it ends,
    /// or the relationship cache period passes.
    pub async fn authenticate(&self, token: &str) -> Result<Result<Arc<Access>, TokenRejection>, CoreError> {
        let now = self.clock.now().millis();
        let epoch = self.access_epoch(now).await?;
        let key = carevault_crypto::hash_token(token);
        if let Some(hit) = self.decisions.get(&key, epoch, now) {
            return Ok(Ok(hit));
        }
        let decided = self.decide_token(token, epoch, now).await?;
        Ok(decided.map(|(access, valid_until)| {
            let access = Arc::new(access);
            self.decisions.put(key, Arc::clone(&access), epoch, valid_until);
            access
        }))
    }

    /// The full decision for a token, and until when it may be reused.
    async fn decide_token(
        &self,
        token: &str,
        epoch: carevault_storage::AccessEpoch,
        now: i64,
    ) -> Result<Result<(Access, i64), TokenRejection>, CoreError> {
        let Some(claims) = self.verified_claims(token) else {
            return Ok(Err(TokenRejection::Malformed));
        };
        let (Some(sub), Some(exp), Some(scope), Some(sid)) = (
            claims["sub"].as_str(),
            claims["exp"].as_i64(),
            claims["scope"].as_str(),
            claims["sid"].as_str(),
        ) else {
            return Ok(Err(TokenRejection::Malformed));
        };
        if exp <= now.div_euclid(1000) {
            return Ok(Err(TokenRejection::Expired));
        }
        let Ok(scopes) = ScopeSet::parse(scope) else {
            return Ok(Err(TokenRejection::Malformed));
        };
        // The session: revoked, ended or idle sessions end their tokens too.
        let Some(session) = self.store.session_by_id(self.tenant.as_str(), sid).await? else {
            return Ok(Err(TokenRejection::Revoked));
        };
        if session.revoked {
            return Ok(Err(TokenRejection::Revoked));
        }
        let idle = crate::signin::GrantDocLite::idle(&session.doc)?;
        let mut session_end = session.expires;
        if idle {
            session_end = session_end.min(session.last_active + self.policy.signin.idle_timeout_secs * 1000);
        }
        if now >= session_end {
            return Ok(Err(TokenRejection::Expired));
        }
        if claims["kind"] == "client" {
            // A backend service acting for itself: its client must still be registered.
            if session.user_id.is_some() || session.client_id != sub || self.client(sub).await?.is_none() {
                return Ok(Err(TokenRejection::UnknownAccount));
            }
            let until = exp.saturating_mul(1000).min(session_end);
            return Ok(Ok((Access::for_backend(sub, &scopes), until)));
        }
        if session.user_id.as_deref() != Some(sub) {
            return Ok(Err(TokenRejection::Malformed));
        }
        let Some(user) = self.store.user_by_id(self.tenant.as_str(), sub).await? else {
            return Ok(Err(TokenRejection::UnknownAccount));
        };
        if user.disabled {
            return Ok(Err(TokenRejection::Disabled));
        }
        let role = Role::parse(&user.role).ok_or(CoreError::Integrity)?;
        let parse = |s: &Option<String>| s.as_deref().and_then(|x| ResourceId::parse(x).ok());
        let subject = Subject {
            user_id: user.id.clone(),
            role,
            patient: parse(&user.patient),
            practitioner: parse(&user.practitioner),
        };
        let links = match (&subject.practitioner, &subject.patient, role) {
            (Some(p), _, r) if r.needs_relationship() => self.care_links(p).await?,
            (_, Some(own), Role::Patient) => crate::relationships::CareLinks {
                patients: self.dependents(own).await?,
                organizations: Vec::new(),
            },
            _ => crate::relationships::CareLinks::default(),
        };
        let mut related = links.patients;
        let grants = if role.needs_relationship() {
            self.store
                .active_emergencies(self.tenant.as_str(), &user.id, now)
                .await?
        } else {
            Vec::new()
        };
        let mut valid_until = (exp.saturating_mul(1000))
            .min(now + self.policy.relationship_cache_millis)
            .min(session_end);
        let mut emergency = Vec::new();
        for (p, ends) in grants {
            valid_until = valid_until.min(ends);
            if let Ok(p) = ResourceId::parse(&p) {
                if !related.contains(&p) {
                    related.push(p.clone());
                }
                emergency.push(p);
            }
        }
        let context = claims["patient"].as_str().and_then(|p| ResourceId::parse(p).ok());
        let consents = self.consents_at(epoch.consent).await?;
        let access = Access::decide(&subject, &scopes, related, context.as_ref()).with_consent(
            consents,
            subject.practitioner.clone(),
            links.organizations,
            emergency,
            now,
        );
        Ok(Ok((access, valid_until)))
    }

    /// The database's access epoch, read again when the poll period has passed or this
    /// server changed something decisions depend on.
    async fn access_epoch(&self, now: i64) -> Result<carevault_storage::AccessEpoch, CoreError> {
        if let Ok(cached) = self.epoch.read()
            && let Some((epoch, at)) = *cached
            && now - at < self.policy.epoch_poll_millis
            && now >= at
        {
            return Ok(epoch);
        }
        let epoch = self.store.access_epoch(self.tenant.as_str()).await?;
        if let Ok(mut cached) = self.epoch.write() {
            *cached = Some((epoch, now));
        }
        Ok(epoch)
    }

    /// Something access decisions depend on changed through this server: the next decision
    /// reads the epoch again.
    pub(crate) fn access_changed(&self) {
        if let Ok(mut cached) = self.epoch.write() {
            *cached = None;
        }
    }

    /// The public keys that verify access tokens, as a JWK Set.
    pub fn jwks(&self) -> Result<Value, CoreError> {
        Ok(json!({ "keys": [self.signer()?.public_jwk()] }))
    }
}
