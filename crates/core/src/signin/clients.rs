//! Registered client applications: SMART apps that send users through `/authorize`, and
//! backend services that authenticate with a signed assertion (`private_key_jwt`).

use super::OAuthError;
use crate::access::{Level, ScopeSet};
use crate::{CoreError, Vault};
use carevault_domain::ResourceId;
use carevault_storage::{Store, StoredClient};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// The most a token for this client may hold.
    pub scopes: ScopeSet,
    /// The public keys of a confidential client (JWK Set); `None` for a public app.
    pub jwks: Option<Value>,
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: ScopeSet,
    pub jwks: Option<Value>,
    pub disabled: bool,
}

impl ClientInfo {
    /// A client that authenticates with a signed assertion.
    pub fn confidential(&self) -> bool {
        self.jwks.is_some()
    }
}

#[derive(Serialize, Deserialize)]
struct ClientDoc {
    name: String,
    redirect_uris: Vec<String>,
    scopes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks: Option<Value>,
}

/// A redirect URI must be absolute HTTPS, or HTTP on the loopback interface (native apps,
/// RFC 8252), and carry no fragment.
fn redirect_ok(uri: &str) -> bool {
    let https = uri.starts_with("https://") && uri.len() > "https://".len();
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            uri.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    (https || loopback) && !uri.contains('#') && !uri.chars().any(char::is_whitespace)
}

impl<S: Store> Vault<S> {
    /// Registers a client and returns its id.
    pub async fn add_client(&self, c: NewClient) -> Result<String, CoreError> {
        let name = c.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(CoreError::Invalid(
                "a client name is 1 to 100 printable characters".into(),
            ));
        }
        if let Some(bad) = c.redirect_uris.iter().find(|u| !redirect_ok(u)) {
            return Err(CoreError::Invalid(format!(
                "redirect URI {bad:?} must be https://…, or http:// on 127.0.0.1, [::1] or localhost, without a fragment"
            )));
        }
        if c.scopes.is_empty() {
            return Err(CoreError::Invalid("a client needs at least one scope".into()));
        }
        match &c.jwks {
            Some(jwks) if !carevault_crypto::jwks_usable(jwks) => {
                return Err(CoreError::Invalid(
                    "the JWK Set holds no usable key (RSA, EC P-384 or Ed25519 public keys)".into(),
                ));
            }
            None if c.redirect_uris.is_empty() => {
                return Err(CoreError::Invalid(
                    "a client needs a redirect URI, or a JWK Set for a backend service".into(),
                ));
            }
            None if c.scopes.clinical(Level::System).next().is_some() => {
                return Err(CoreError::Invalid(
                    "system/ scopes need a confidential client (--jwks-file)".into(),
                ));
            }
            _ => {}
        }
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw)?;
        let id = ResourceId::from_random(raw).as_str().to_owned();
        let doc = ClientDoc {
            name: name.to_owned(),
            redirect_uris: c.redirect_uris,
            scopes: c.scopes.to_string(),
            jwks: c.jwks,
        };
        let entry = self.change_entry(|_| {});
        self.store
            .insert_client(
                StoredClient {
                    id: id.clone(),
                    tenant: self.tenant.as_str().to_owned(),
                    doc: serde_json::to_string(&doc).map_err(|_| CoreError::Integrity)?,
                    created: self.clock.now().millis(),
                    disabled: false,
                },
                crate::audit::ChangeEntry::maker(&entry),
            )
            .await?;
        crate::audit::ChangeEntry::done_if(entry, true);
        Ok(id)
    }

    fn client_info(c: StoredClient) -> Result<ClientInfo, CoreError> {
        let doc: ClientDoc = serde_json::from_str(&c.doc).map_err(|_| CoreError::Integrity)?;
        Ok(ClientInfo {
            id: c.id,
            name: doc.name,
            redirect_uris: doc.redirect_uris,
            scopes: ScopeSet::parse(&doc.scopes).map_err(|_| CoreError::Integrity)?,
            jwks: doc.jwks,
            disabled: c.disabled,
        })
    }

    /// Every registered client, oldest first.
    pub async fn clients(&self) -> Result<Vec<ClientInfo>, CoreError> {
        self.store
            .clients(self.tenant.as_str())
            .await?
            .into_iter()
            .map(Self::client_info)
            .collect()
    }

    /// An enabled client by id.
    pub async fn client(&self, id: &str) -> Result<Option<ClientInfo>, CoreError> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        match self.store.client_by_id(self.tenant.as_str(), id).await? {
            Some(c) if !c.disabled => Ok(Some(Self::client_info(c)?)),
            _ => Ok(None),
        }
    }

    /// Checks a confidential client's signed assertion (RFC 7523): signature by a registered
    /// key, issuer and subject the client, audience `token_url`, a near expiry, and an id
    /// never seen before (returned, to be recorded).
    pub(crate) fn check_assertion(
        &self,
        client: &ClientInfo,
        assertion: &str,
        token_url: &str,
    ) -> Result<(String, i64), OAuthError> {
        let bad = |why: &str| OAuthError::InvalidClient(format!("client assertion refused: {why}"));
        let jwks = client.jwks.as_ref().ok_or_else(|| bad("the client has no keys"))?;
        let claims = carevault_crypto::verify_assertion(assertion, jwks).map_err(|_| bad("bad signature"))?;
        let claims: Value = serde_json::from_slice(&claims).map_err(|_| bad("claims are not JSON"))?;
        if claims["iss"] != client.id.as_str() || claims["sub"] != client.id.as_str() {
            return Err(bad("iss and sub must be the client id"));
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == token_url,
            Value::Array(list) => list.iter().any(|a| a == token_url),
            _ => false,
        };
        if !aud_ok {
            return Err(bad("aud must be the token endpoint"));
        }
        let now = self.clock.now().unix_seconds();
        let exp = claims["exp"].as_i64().ok_or_else(|| bad("exp is missing"))?;
        if exp <= now || exp > now + 5 * 60 {
            return Err(bad("exp must be in the next five minutes"));
        }
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| bad("jti is missing"))?;
        Ok((jti.to_owned(), exp))
    }
}
