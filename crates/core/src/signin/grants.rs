//! The OAuth 2 grants of SMART App Launch and Backend Services.
//!
//! `/authorize` → [`Vault::check_authorize`] (client, redirect URI, PKCE S256, audience,
//! scopes narrowed to the client's) → the login page → [`Vault::login_ticket`] (a signed,
//! five-minute ticket that carries the checked request to the consent screen) →
//! [`Vault::consent`] (a session holding the code's hash) → `/token` → [`Vault::token`].

use super::{ClientInfo, OAuthError, SignedIn};
use crate::access::{Role, Scope, ScopeSet};
use crate::audit::{AuditDraft, ChangeEntry, Outcome};
use crate::{CoreError, Vault};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carevault_crypto::{hash_token, new_token};
use carevault_domain::ResourceId;
use carevault_storage::{Revoke, SessionMatch, Store, StoredSession};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Client id of tokens minted by `carevault token`.
pub(crate) const CLI_CLIENT: &str = "carevault-cli";

/// The parameters of an authorization request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthorizeRequest {
    #[serde(default)]
    pub response_type: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub redirect_uri: String,
    #[serde(default)]
    pub scope: String,
    pub state: Option<String>,
    #[serde(default)]
    pub code_challenge: String,
    #[serde(default)]
    pub code_challenge_method: String,
    pub aud: Option<String>,
}

/// A request that may proceed to the login page: the client and the scopes it may ask for.
#[derive(Debug, Clone)]
pub struct Consented {
    pub client: ClientInfo,
    pub scopes: ScopeSet,
}

/// A refused authorization request: shown on a page when the redirect URI cannot be trusted,
/// otherwise sent back to the client.
#[derive(Debug, Clone)]
pub enum AuthorizeFailure {
    Page(String),
    Redirect(String),
}

/// The parameters of a token request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    #[serde(default)]
    pub grant_type: String,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub client_id: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

/// A successful token response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An introspection answer (RFC 7662).
pub type IntrospectAnswer = Value;

/// What a session holds besides its hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GrantDoc {
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub code_expires: i64,
    #[serde(default)]
    pub code_used: bool,
    /// Whether the idle timeout applies (interactive sign-ins).
    #[serde(default)]
    pub idle: bool,
}

impl GrantDoc {
    pub(crate) fn parse(doc: &str) -> Result<GrantDoc, CoreError> {
        serde_json::from_str(doc).map_err(|_| CoreError::Integrity)
    }

    fn to_json(&self) -> Result<String, CoreError> {
        serde_json::to_string(self).map_err(|_| CoreError::Integrity)
    }
}

fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&carevault_domain::query::percent_encode(v));
        sep = '&';
    }
    out
}

fn pkce_ok(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn same_base(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl<S: Store> Vault<S> {
    /// Checks an authorization request before anyone is asked to sign in.
    pub async fn check_authorize(
        &self,
        req: &AuthorizeRequest,
        fhir_base: &str,
    ) -> Result<Consented, AuthorizeFailure> {
        let page = |m: &str| AuthorizeFailure::Page(m.to_owned());
        let client = match self.client(&req.client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(page("This application is not registered with this server.")),
            Err(_) => return Err(page("The request could not be checked; try again later.")),
        };
        if !client.redirect_uris.contains(&req.redirect_uri) {
            return Err(page("The redirect URI is not one registered for this application."));
        }
        let fail = |error: &str, description: &str| {
            let mut params = vec![("error", error), ("error_description", description)];
            if let Some(state) = &req.state {
                params.push(("state", state));
            }
            AuthorizeFailure::Redirect(redirect_with(&req.redirect_uri, &params))
        };
        if req.response_type != "code" {
            return Err(fail(
                "unsupported_response_type",
                "only the authorization code flow is offered",
            ));
        }
        if req.code_challenge_method != "S256" || !pkce_ok(&req.code_challenge) {
            return Err(fail(
                "invalid_request",
                "PKCE with code_challenge_method S256 is required",
            ));
        }
        if req.state.as_ref().is_some_and(|s| s.len() > 512) {
            return Err(fail("invalid_request", "state is too long"));
        }
        match &req.aud {
            Some(aud) if same_base(aud, fhir_base) => {}
            _ => return Err(fail("invalid_request", "aud must be this server's FHIR base URL")),
        }
        let Ok(asked) = ScopeSet::parse(&req.scope) else {
            return Err(fail("invalid_scope", "a requested scope is malformed"));
        };
        let scopes = asked.narrowed_to(&client.scopes);
        if scopes.is_empty() {
            return Err(fail(
                "invalid_scope",
                "none of the requested scopes is allowed for this application",
            ));
        }
        Ok(Consented { client, scopes })
    }

    /// A signed ticket carrying a checked request and the signed-in account from the login
    /// page to the consent screen. It opens nothing by itself.
    pub fn login_ticket(&self, who: &SignedIn, req: &AuthorizeRequest, scopes: &ScopeSet) -> Result<String, CoreError> {
        let now = self.clock.now().unix_seconds();
        let claims = json!({
            "use": "login-ticket",
            "ten": self.tenant.as_str(),
            "sub": who.user_id,
            "exp": now + self.policy.signin.ticket_secs,
            "req": req,
            "granted": scopes.to_string(),
        });
        let bytes = serde_json::to_vec(&claims).map_err(|_| CoreError::Integrity)?;
        Ok(self.signer.sign(&bytes))
    }

    /// The request and scopes a ticket carries, if it is this server's, current, and its
    /// account still enabled.
    pub async fn open_ticket(&self, ticket: &str) -> Result<Option<(String, AuthorizeRequest, ScopeSet)>, CoreError> {
        let Ok(bytes) = self.signer.verify(ticket) else {
            return Ok(None);
        };
        let Ok(claims) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(None);
        };
        let now = self.clock.now().unix_seconds();
        if claims["use"] != "login-ticket"
            || claims["ten"] != self.tenant.as_str()
            || claims["exp"].as_i64().is_none_or(|e| e <= now)
        {
            return Ok(None);
        }
        let (Some(sub), Ok(req), Some(Ok(scopes))) = (
            claims["sub"].as_str(),
            serde_json::from_value::<AuthorizeRequest>(claims["req"].clone()),
            claims["granted"].as_str().map(ScopeSet::parse),
        ) else {
            return Ok(None);
        };
        match self.store.user_by_id(self.tenant.as_str(), sub).await? {
            Some(u) if !u.disabled => Ok(Some((sub.to_owned(), req, scopes))),
            _ => Ok(None),
        }
    }

    /// The user's answer on the consent screen: the redirect to send the browser to, with a
    /// code (approved) or `access_denied`.
    /// `patient` is the patient a clinician chose on the consent screen for `launch/patient`
    /// (it must be one of [`Vault::launch_candidates`]).
    pub async fn consent(
        &self,
        ticket: &str,
        approve: bool,
        patient: Option<&str>,
        fhir_base: &str,
    ) -> Result<String, AuthorizeFailure> {
        let expired = || AuthorizeFailure::Page("This sign-in has expired; start again from the application.".into());
        let Ok(Some((user_id, req, scopes))) = self.open_ticket(ticket).await else {
            return Err(expired());
        };
        // The client and its registration are checked again: either may have changed.
        let checked = self.check_authorize(&req, fhir_base).await?;
        let scopes = scopes.narrowed_to(&checked.client.scopes);
        let mut state: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = &req.state {
            state.push(("state", s));
        }
        if !approve {
            let mut params = vec![("error", "access_denied"), ("error_description", "the user declined")];
            params.extend(state);
            return Ok(redirect_with(&req.redirect_uri, &params));
        }
        let issued = self.issue_code(&user_id, &req, &scopes, patient).await;
        let Ok(code) = issued else {
            return Err(AuthorizeFailure::Page(
                "The sign-in could not be completed; try again later.".into(),
            ));
        };
        let mut params = vec![("code", code.as_str())];
        params.extend(state);
        Ok(redirect_with(&req.redirect_uri, &params))
    }

    async fn issue_code(
        &self,
        user_id: &str,
        req: &AuthorizeRequest,
        scopes: &ScopeSet,
        chosen: Option<&str>,
    ) -> Result<String, CoreError> {
        let user = self
            .store
            .user_by_id(self.tenant.as_str(), user_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        // The patient in context: a patient account's own record; for a clinician, the
        // patient chosen on the consent screen, if it is one they reach. Otherwise
        // `launch/patient` is dropped.
        let patient = match (Role::parse(&user.role), chosen) {
            (_, _) if !scopes.contains(&Scope::LaunchPatient) => None,
            (Some(Role::Patient), _) => user.patient.clone(),
            (Some(_), Some(c)) => {
                let reached = self.launch_candidates(user_id).await?;
                reached
                    .iter()
                    .find(|(id, _)| id.as_str() == c)
                    .map(|(id, _)| id.as_str().to_owned())
            }
            _ => None,
        };
        let scopes = if patient.is_none() {
            ScopeSet::parse(
                &scopes
                    .iter()
                    .filter(|s| **s != Scope::LaunchPatient)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .map_err(|_| CoreError::Integrity)?
        } else {
            scopes.clone()
        };
        let code = new_token(self.rng.as_ref())?;
        let now = self.clock.now().millis();
        let p = &self.policy.signin;
        let doc = GrantDoc {
            scope: scopes.to_string(),
            patient,
            challenge: Some(req.code_challenge.clone()),
            redirect_uri: Some(req.redirect_uri.clone()),
            code_expires: now + p.code_secs * 1000,
            code_used: false,
            idle: true,
        };
        let entry = self.change_entry(|d| acting(d, Some(&user.id), &req.client_id));
        self.store
            .insert_session(
                StoredSession {
                    code_hash: Some(hash_token(&code).0.to_vec()),
                    ..self.new_session(
                        self.random_id()?,
                        Some(user.id.clone()),
                        &req.client_id,
                        doc.to_json()?,
                        now + p.session_lifetime_secs * 1000,
                    )
                },
                ChangeEntry::maker(&entry),
            )
            .await?;
        ChangeEntry::done_if(entry, true);
        Ok(code)
    }

    /// The patients a clinician may open an app on (`launch/patient`): those they have a
    /// care relationship or an emergency grant with, each with a display name for the
    /// consent screen. Empty for other roles.
    pub async fn launch_candidates(&self, user_id: &str) -> Result<Vec<(ResourceId, String)>, CoreError> {
        let Some(user) = self.store.user_by_id(self.tenant.as_str(), user_id).await? else {
            return Ok(Vec::new());
        };
        let (Some(role), Some(practitioner)) = (
            Role::parse(&user.role),
            user.practitioner.as_deref().and_then(|p| ResourceId::parse(p).ok()),
        ) else {
            return Ok(Vec::new());
        };
        if !role.needs_relationship() || user.disabled {
            return Ok(Vec::new());
        }
        let now = self.clock.now().millis();
        let mut ids = self.related_patients(&practitioner).await?;
        for (p, _) in self
            .store
            .active_emergencies(self.tenant.as_str(), &user.id, now)
            .await?
        {
            if let Ok(p) = ResourceId::parse(&p)
                && !ids.contains(&p)
            {
                ids.push(p);
            }
        }
        let system = crate::access::Access::unchecked_system();
        let names: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let mut out = Vec::new();
        for r in self
            .session(&system)
            .read_visible(carevault_domain::ResourceType::Patient, &names)
            .await?
        {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let name = &body["name"][0];
            let given = name["given"]
                .as_array()
                .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let family = name["family"].as_str().unwrap_or_default();
            let born = body["birthDate"]
                .as_str()
                .map(|b| format!(", born {b}"))
                .unwrap_or_default();
            let display = format!("{given} {family}").trim().to_owned();
            let display = if display.is_empty() {
                "(no name)".to_owned()
            } else {
                display
            };
            out.push((r.id.clone(), format!("{display}{born}")));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// A new, active session row starting now.
    pub(crate) fn new_session(
        &self,
        id: String,
        user_id: Option<String>,
        client_id: &str,
        doc: String,
        expires: i64,
    ) -> StoredSession {
        let now = self.clock.now().millis();
        StoredSession {
            id,
            tenant: self.tenant.as_str().to_owned(),
            user_id,
            client_id: client_id.to_owned(),
            code_hash: None,
            refresh_hash: None,
            prev_refresh_hash: None,
            doc,
            created: now,
            last_active: now,
            expires,
            generation: 0,
            revoked: false,
        }
    }

    pub(crate) fn random_id(&self) -> Result<String, CoreError> {
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw)?;
        Ok(ResourceId::from_random(raw).as_str().to_owned())
    }

    /// Authenticates the client of a token request: a confidential client by its signed
    /// assertion (recorded so it cannot be replayed), a public one by its id.
    async fn token_client(&self, req: &TokenRequest, token_url: &str) -> Result<ClientInfo, OAuthError> {
        let unknown = || OAuthError::InvalidClient("unknown client".into());
        match (&req.client_assertion_type, &req.client_assertion) {
            (Some(t), Some(assertion)) => {
                if t != ASSERTION_TYPE {
                    return Err(OAuthError::InvalidClient(format!(
                        "client_assertion_type must be {ASSERTION_TYPE}"
                    )));
                }
                // The client is named by the assertion's issuer; its signature is checked next.
                let iss = assertion
                    .split('.')
                    .nth(1)
                    .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
                    .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
                    .and_then(|c| c["iss"].as_str().map(str::to_owned))
                    .ok_or_else(unknown)?;
                if req.client_id.as_ref().is_some_and(|id| *id != iss) {
                    return Err(OAuthError::InvalidClient("client_id and the assertion disagree".into()));
                }
                let client = self.client(&iss).await?.ok_or_else(unknown)?;
                let (jti, exp) = self.check_assertion(&client, assertion, token_url)?;
                // The assertion's id becomes a session id: a replay collides with it.
                let digest = hash_token(&format!("{}|{jti}", client.id));
                let id = format!("assertion-{}", URL_SAFE_NO_PAD.encode(&digest.0[..18]));
                let noted = self
                    .store
                    .insert_session(
                        StoredSession {
                            revoked: true,
                            ..self.new_session(
                                id,
                                None,
                                &client.id,
                                GrantDoc {
                                    scope: String::new(),
                                    patient: None,
                                    challenge: None,
                                    redirect_uri: None,
                                    code_expires: 0,
                                    code_used: true,
                                    idle: false,
                                }
                                .to_json()?,
                                exp * 1000,
                            )
                        },
                        None,
                    )
                    .await;
                match noted {
                    Err(carevault_storage::StoreError::Conflict) => Err(OAuthError::InvalidClient(
                        "client assertion refused: jti already used".into(),
                    )),
                    other => other.map(|()| client).map_err(Into::into),
                }
            }
            (None, None) => {
                let id = req.client_id.as_deref().ok_or_else(unknown)?;
                let client = self.client(id).await?.ok_or_else(unknown)?;
                if client.confidential() {
                    return Err(OAuthError::InvalidClient(
                        "this client authenticates with a signed assertion".into(),
                    ));
                }
                Ok(client)
            }
            _ => Err(OAuthError::InvalidRequest(
                "client_assertion_type and client_assertion go together".into(),
            )),
        }
    }

    /// The token endpoint: `authorization_code`, `refresh_token` and `client_credentials`.
    pub async fn token(&self, req: &TokenRequest, token_url: &str) -> Result<TokenAnswer, OAuthError> {
        let client = self.token_client(req, token_url).await?;
        match req.grant_type.as_str() {
            "authorization_code" => self.exchange_code(&client, req).await,
            "refresh_token" => self.refresh(&client, req).await,
            "client_credentials" => self.client_credentials(&client, req).await,
            _ => Err(OAuthError::UnsupportedGrantType),
        }
    }

    async fn exchange_code(&self, client: &ClientInfo, req: &TokenRequest) -> Result<TokenAnswer, OAuthError> {
        let bad = |m: &str| OAuthError::InvalidGrant(m.to_owned());
        let code = req
            .code
            .as_deref()
            .ok_or_else(|| OAuthError::InvalidRequest("code is missing".into()))?;
        let found = self
            .store
            .session_by_hash(self.tenant.as_str(), &hash_token(code).0)
            .await?;
        let Some((mut session, SessionMatch::Code)) = found else {
            return Err(bad("the code is not valid"));
        };
        let mut doc = GrantDoc::parse(&session.doc)?;
        if doc.code_used {
            // A code presented twice: whoever has it, the session it made is no longer trusted.
            self.revoke_session(
                &session.id,
                session.user_id.as_deref(),
                &session.client_id,
                Outcome::MinorFailure,
            )
            .await?;
            return Err(bad("the code was already used"));
        }
        let now = self.clock.now().millis();
        if session.client_id != client.id || session.revoked || now >= doc.code_expires {
            return Err(bad("the code is not valid"));
        }
        if req.redirect_uri.as_deref() != doc.redirect_uri.as_deref() {
            return Err(bad("redirect_uri differs from the authorization request"));
        }
        let verifier = req.code_verifier.as_deref().unwrap_or_default();
        let challenge = URL_SAFE_NO_PAD.encode(hash_token(verifier).0);
        if !pkce_ok(verifier) || doc.challenge.as_deref() != Some(challenge.as_str()) {
            return Err(bad("code_verifier does not match the code_challenge"));
        }
        let scopes = ScopeSet::parse(&doc.scope).map_err(|_| CoreError::Integrity)?;
        let refresh = if scopes.contains(&Scope::OfflineAccess) || scopes.contains(&Scope::OnlineAccess) {
            Some(new_token(self.rng.as_ref())?)
        } else {
            None
        };
        doc.code_used = true;
        session.refresh_hash = refresh.as_deref().map(|r| hash_token(r).0.to_vec());
        session.doc = doc.to_json()?;
        session.last_active = now;
        session.generation += 1;
        if !self.save_session(&session).await? {
            return Err(bad("the code is not valid"));
        }
        self.answer(&session, &doc, scopes, refresh)
    }

    async fn refresh(&self, client: &ClientInfo, req: &TokenRequest) -> Result<TokenAnswer, OAuthError> {
        let bad = |m: &str| OAuthError::InvalidGrant(m.to_owned());
        let presented = req
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is missing".into()))?;
        let found = self
            .store
            .session_by_hash(self.tenant.as_str(), &hash_token(presented).0)
            .await?;
        let mut session = match found {
            Some((s, SessionMatch::Refresh)) if s.client_id == client.id => s,
            Some((s, SessionMatch::PreviousRefresh)) if s.client_id == client.id => {
                // A rotated-away refresh token came back: the chain was copied; end it.
                self.revoke_session(&s.id, s.user_id.as_deref(), &s.client_id, Outcome::MinorFailure)
                    .await?;
                return Err(bad("the refresh token was already used"));
            }
            _ => return Err(bad("the refresh token is not valid")),
        };
        let doc = GrantDoc::parse(&session.doc)?;
        let now = self.clock.now().millis();
        if session.revoked || now >= session.expires {
            return Err(bad("the session has ended; sign in again"));
        }
        if doc.idle && now >= session.last_active + self.policy.signin.idle_timeout_secs * 1000 {
            return Err(bad("the session was idle too long; sign in again"));
        }
        if let Some(user) = &session.user_id {
            match self.store.user_by_id(self.tenant.as_str(), user).await? {
                Some(u) if !u.disabled => {}
                _ => return Err(bad("the account is disabled")),
            }
        }
        let granted = ScopeSet::parse(&doc.scope).map_err(|_| CoreError::Integrity)?;
        let scopes = match &req.scope {
            Some(s) => {
                let asked = ScopeSet::parse(s).map_err(|_| OAuthError::InvalidScope("a scope is malformed".into()))?;
                let narrowed = asked.narrowed_to(&granted);
                if narrowed != asked {
                    return Err(OAuthError::InvalidScope("a refresh cannot widen the scopes".into()));
                }
                narrowed
            }
            None => granted,
        };
        let next = new_token(self.rng.as_ref())?;
        session.prev_refresh_hash = session.refresh_hash.take();
        session.refresh_hash = Some(hash_token(&next).0.to_vec());
        session.last_active = now;
        session.generation += 1;
        if !self.save_session(&session).await? {
            return Err(bad("the refresh token is not valid"));
        }
        self.answer(&session, &doc, scopes, Some(next))
    }

    async fn client_credentials(&self, client: &ClientInfo, req: &TokenRequest) -> Result<TokenAnswer, OAuthError> {
        if !client.confidential() {
            return Err(OAuthError::UnauthorizedClient(
                "client_credentials is for clients with a signed assertion".into(),
            ));
        }
        let asked = ScopeSet::parse(req.scope.as_deref().unwrap_or_default())
            .map_err(|_| OAuthError::InvalidScope("a scope is malformed".into()))?;
        if asked.has_clinical_outside(crate::access::Level::System) {
            return Err(OAuthError::InvalidScope(
                "a backend service asks for system/ scopes".into(),
            ));
        }
        let scopes = asked.narrowed_to(&client.scopes);
        if scopes.is_empty() {
            return Err(OAuthError::InvalidScope(
                "none of the requested scopes is allowed for this client".into(),
            ));
        }
        let now = self.clock.now().millis();
        let p = &self.policy.signin;
        let doc = GrantDoc {
            scope: scopes.to_string(),
            patient: None,
            challenge: None,
            redirect_uri: None,
            code_expires: 0,
            code_used: true,
            idle: false,
        };
        let session = self.new_session(
            self.random_id()?,
            None,
            &client.id,
            doc.to_json()?,
            now + p.access_token_secs * 1000,
        );
        let entry = self.change_entry(|d| acting(d, None, &client.id));
        self.store
            .insert_session(session.clone(), ChangeEntry::maker(&entry))
            .await?;
        ChangeEntry::done_if(entry, true);
        self.answer(&session, &doc, scopes, None)
    }

    fn answer(
        &self,
        session: &StoredSession,
        doc: &GrantDoc,
        scopes: ScopeSet,
        refresh: Option<String>,
    ) -> Result<TokenAnswer, OAuthError> {
        let now = self.clock.now().unix_seconds();
        let exp = (now + self.policy.signin.access_token_secs).min(session.expires.div_euclid(1000));
        let access = self.sign_access(&AccessClaims {
            sub: session.user_id.as_deref().unwrap_or(&session.client_id),
            client: session.user_id.is_none(),
            scopes: &scopes,
            patient: doc.patient.as_deref(),
            sid: &session.id,
            cid: &session.client_id,
            iat: now,
            exp,
        })?;
        Ok(TokenAnswer {
            access_token: access,
            token_type: "Bearer",
            expires_in: exp - now,
            scope: scopes.to_string(),
            patient: doc.patient.clone(),
            refresh_token: refresh,
        })
    }

    /// Signs an access token.
    pub(crate) fn sign_access(&self, c: &AccessClaims<'_>) -> Result<String, CoreError> {
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti)?;
        let mut claims = json!({
            "iss": "carevault",
            "sub": c.sub,
            "tid": self.tenant.as_str(),
            "iat": c.iat,
            "exp": c.exp,
            "jti": ResourceId::from_random(jti).as_str(),
            "scope": c.scopes.to_string(),
            "sid": c.sid,
            "cid": c.cid,
        });
        if c.client {
            claims["kind"] = json!("client");
        }
        if let Some(p) = c.patient {
            claims["patient"] = json!(p);
        }
        let bytes = serde_json::to_vec(&claims).map_err(|_| CoreError::Integrity)?;
        Ok(self.signer.sign(&bytes))
    }

    /// Deletes the sign-in sessions that ended (their lifetime or last token past) before
    /// now; how many. Their tokens were refused already; the newest revocation stays so the
    /// access epoch never steps back. A purge that deletes any commits with one entry.
    pub async fn purge_ended_sessions(&self) -> Result<u64, CoreError> {
        let entry = self.housekeeping_entry("sessions-ended", Vec::new());
        Ok(self
            .store
            .delete_ended_sessions(self.tenant.as_str(), self.clock.now().millis(), entry)
            .await?)
    }

    /// Writes a session's next generation (`false` when another request changed it first);
    /// the token request's entry, naming the account and the client, commits with it.
    async fn save_session(&self, session: &StoredSession) -> Result<bool, CoreError> {
        let entry = self.change_entry(|d| acting(d, session.user_id.as_deref(), &session.client_id));
        let saved = self
            .store
            .update_session(session.clone(), ChangeEntry::maker(&entry))
            .await?;
        ChangeEntry::done_if(entry, saved);
        Ok(saved)
    }

    /// Ends one session; its tokens fail on the next request. The request's pending entry
    /// commits with it, naming the session's account and client, with `outcome`: a success
    /// for a revocation asked for, a failure when a replayed code or refresh token ends the
    /// session and the request is refused.
    pub(crate) async fn revoke_session(
        &self,
        id: &str,
        user_id: Option<&str>,
        client_id: &str,
        outcome: Outcome,
    ) -> Result<(), CoreError> {
        let entry = self.change_entry(|d| {
            acting(d, user_id, client_id);
            d.outcome = outcome;
        });
        let n = self
            .store
            .revoke_sessions(self.tenant.as_str(), Revoke::Session(id), ChangeEntry::maker(&entry))
            .await?;
        ChangeEntry::done_if(entry, n > 0);
        self.access_changed();
        Ok(())
    }

    /// RFC 7009: ends the session of an access or refresh token. Holding an access token is
    /// enough to end its own session (logout); a refresh token is ended only by its client.
    /// Unknown tokens are not an error.
    pub async fn revoke_token(&self, token: &str, client_id: Option<&str>) -> Result<(), CoreError> {
        if let Some(claims) = self.verified_claims(token) {
            if let Some(sid) = claims["sid"].as_str() {
                let user = claims["sub"].as_str().filter(|_| claims["kind"] != "client");
                let client = claims["cid"].as_str().unwrap_or_default();
                self.revoke_session(sid, user, client, Outcome::Success).await?;
            }
            return Ok(());
        }
        if let Some((s, _)) = self
            .store
            .session_by_hash(self.tenant.as_str(), &hash_token(token).0)
            .await?
            && client_id == Some(s.client_id.as_str())
        {
            self.revoke_session(&s.id, s.user_id.as_deref(), &s.client_id, Outcome::Success)
                .await?;
        }
        Ok(())
    }

    /// The claims of an access token this server signed, unchecked otherwise.
    pub(crate) fn verified_claims(&self, token: &str) -> Option<Value> {
        let bytes = self.signer.verify(token).ok()?;
        let claims: Value = serde_json::from_slice(&bytes).ok()?;
        (claims["tid"] == self.tenant.as_str() && claims.get("use").is_none()).then_some(claims)
    }

    /// RFC 7662: whether a token is active now, and what it holds.
    pub async fn introspect(&self, token: &str) -> Result<IntrospectAnswer, CoreError> {
        let inactive = json!({ "active": false });
        if let Some(claims) = self.verified_claims(token) {
            return Ok(match self.authenticate(token).await? {
                Ok(_) => {
                    let mut out = json!({
                        "active": true,
                        "token_type": "Bearer",
                        "scope": claims["scope"],
                        "sub": claims["sub"],
                        "client_id": claims["cid"],
                        "exp": claims["exp"],
                        "iat": claims["iat"],
                        "iss": claims["iss"],
                    });
                    if let Some(p) = claims["patient"].as_str() {
                        out["patient"] = json!(p);
                    }
                    out
                }
                Err(_) => inactive,
            });
        }
        let now = self.clock.now().millis();
        match self
            .store
            .session_by_hash(self.tenant.as_str(), &hash_token(token).0)
            .await?
        {
            Some((s, SessionMatch::Refresh)) if !s.revoked && now < s.expires => {
                let doc = GrantDoc::parse(&s.doc)?;
                let idle_over = doc.idle && now >= s.last_active + self.policy.signin.idle_timeout_secs * 1000;
                Ok(if idle_over {
                    inactive
                } else {
                    json!({
                        "active": true,
                        "token_type": "refresh_token",
                        "scope": doc.scope,
                        "client_id": s.client_id,
                        "exp": s.expires.div_euclid(1000),
                    })
                })
            }
            _ => Ok(inactive),
        }
    }
}

/// What an access token says.
pub(crate) struct AccessClaims<'a> {
    pub sub: &'a str,
    /// A backend client acting for itself (no user).
    pub client: bool,
    pub scopes: &'a ScopeSet,
    pub patient: Option<&'a str>,
    pub sid: &'a str,
    pub cid: &'a str,
    pub iat: i64,
    pub exp: i64,
}

/// A token interaction's entry names who it acts for: the account (when a user signed in)
/// and the client.
fn acting(d: &mut AuditDraft, user_id: Option<&str>, client_id: &str) {
    d.agent.who = match user_id {
        Some(u) => format!("user:{u}"),
        None => format!("client:{client_id}"),
    };
    d.agent.client = Some(client_id.to_owned());
}
