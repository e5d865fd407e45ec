use carevault_core::Vault;
use carevault_core::access::Access;
use carevault_crypto::{TokenHash, hash_token};
use carevault_storage::AnyStore;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Settings the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The externally visible base (e.g. `https://fhir.example.org/fhir`); when absent it is
    /// derived from the request's Host header.
    pub public_base: Option<String>,
    /// How long a bulk export's status and files stay available, in seconds.
    pub export_ttl_secs: u64,
    /// Attempts per minute per client address (and per account name) at the sign-in,
    /// token and revocation endpoints.
    pub auth_attempts_per_minute: u32,
    /// Browser origins allowed to call the API (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// The witness file heads signed on demand are appended to.
    pub audit_witness: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            public_base: None,
            export_ttl_secs: 24 * 60 * 60,
            auth_attempts_per_minute: 30,
            cors_origins: Vec::new(),
            audit_witness: None,
        }
    }
}

/// How often the integration tokens are read again.
const TOKEN_REFRESH_MILLIS: i64 = 250;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub vault: Arc<Vault<AnyStore>>,
    pub config: Arc<HttpConfig>,
    /// Whether the listener speaks TLS (for URLs the server builds).
    pub tls: bool,
    /// Hashes of the active integration tokens, and when they were read (milliseconds):
    /// read again at most every `TOKEN_REFRESH_MILLIS`, so a rotation or revocation by the CLI
    /// holds within that time.
    tokens: Arc<RwLock<(HashSet<TokenHash>, i64)>>,
    /// The decision of the bootstrap token, made once.
    system: Arc<Access>,
    /// Attempt limits of the sign-in and token endpoints.
    pub(crate) limiter: Arc<crate::oauth::Limiter>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    pub fn new(vault: Arc<Vault<AnyStore>>, config: HttpConfig, tls: bool, token_hashes: Vec<Vec<u8>>) -> Self {
        let tokens = token_hashes
            .into_iter()
            .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok().map(TokenHash))
            .collect();
        let limiter = Arc::new(crate::oauth::Limiter::new(config.auth_attempts_per_minute));
        Self {
            limiter,
            metrics: Arc::default(),
            vault,
            config: Arc::new(config),
            tls,
            tokens: Arc::new(RwLock::new((tokens, i64::MIN))),
            system: Arc::new(Access::unchecked_system()),
        }
    }

    /// Is this bearer token one of the active integration tokens?
    async fn token_ok(&self, presented: &str) -> bool {
        let now = self.vault.clock().now().millis();
        let stale = self
            .tokens
            .read()
            .map(|t| now.saturating_sub(t.1) >= TOKEN_REFRESH_MILLIS)
            .unwrap_or(true);
        if stale {
            use carevault_storage::TokenStore;
            match self.vault.unchecked_store().active_tokens().await {
                Ok(hashes) => {
                    let set = hashes
                        .into_iter()
                        .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok().map(TokenHash))
                        .collect();
                    if let Ok(mut t) = self.tokens.write() {
                        *t = (set, now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "integration tokens could not be read again"),
            }
        }
        let h = hash_token(presented);
        self.tokens.read().map(|t| t.0.contains(&h)).unwrap_or(false)
    }

    /// The access decision for a bearer token, or `None` when it is not valid.
    pub(crate) async fn authenticate(&self, presented: &str) -> Option<Arc<Access>> {
        // A signed access token has three dot-separated parts; an integration token none.
        if presented.bytes().filter(|b| *b == b'.').count() != 2 {
            // The bootstrap integration token: documented as `system/*.cruds`.
            return self.token_ok(presented).await.then(|| Arc::clone(&self.system));
        }
        match self.vault.authenticate(presented).await {
            Ok(Ok(access)) => Some(access),
            Ok(Err(why)) => {
                tracing::debug!(reason = ?why, "access token refused");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "access token could not be checked");
                None
            }
        }
    }
}
