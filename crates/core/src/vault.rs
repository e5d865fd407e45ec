use crate::accounts::DecisionCache;
use crate::consent::ConsentBook;
use crate::keys::KeyCache;
use crate::relationships::{AccessPolicy, RelationshipCache};
use carevault_crypto::{CursorKey, IndexKey, KeyFile, RandomSource, TokenSigner};
use carevault_domain::{Clock, ResourceId, TenantId};
use carevault_storage::Store;
use std::sync::Arc;

/// The record store of one tenant: a backend, the keys, a clock and a random source.
pub struct Vault<S: Store> {
    pub(crate) store: S,
    pub(crate) keys: Arc<KeyFile>,
    pub(crate) rng: Arc<dyn RandomSource>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tenant: TenantId,
    pub(crate) identifier_index: IndexKey,
    pub(crate) search_index: IndexKey,
    pub(crate) cursor_key: CursorKey,
    pub(crate) key_cache: KeyCache,
    pub(crate) policy: AccessPolicy,
    pub(crate) relationships: RelationshipCache,
    pub(crate) consent_book: ConsentBook,
    pub(crate) signer: TokenSigner,
    pub(crate) decisions: DecisionCache,
    /// The access epoch last read, and when.
    pub(crate) epoch: std::sync::RwLock<Option<(carevault_storage::AccessEpoch, i64)>>,
    /// The audit log's appender and tree.
    pub(crate) audit_log: crate::audit::AuditLog,
}

impl<S: Store> Vault<S> {
    pub fn new(
        store: S,
        keys: Arc<KeyFile>,
        rng: Arc<dyn RandomSource>,
        clock: Arc<dyn Clock>,
        tenant: TenantId,
    ) -> Result<Self, crate::CoreError> {
        let identifier_index = IndexKey::derive(&keys, tenant.as_str(), "identifier");
        let search_index = IndexKey::derive(&keys, tenant.as_str(), "search");
        let cursor_key = CursorKey::derive(&keys, tenant.as_str())?;
        let signer = TokenSigner::derive(&keys, tenant.as_str())?;
        Ok(Self {
            store,
            keys,
            rng,
            clock,
            tenant,
            identifier_index,
            search_index,
            cursor_key,
            key_cache: KeyCache::default(),
            policy: AccessPolicy::default(),
            relationships: RelationshipCache::default(),
            consent_book: ConsentBook::default(),
            signer,
            decisions: DecisionCache::default(),
            epoch: std::sync::RwLock::new(None),
            audit_log: crate::audit::AuditLog::default(),
        })
    }

    /// Replaces the access policy (relationship windows and caching).
    pub fn with_policy(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The backend itself, for operator tasks that touch no patient data (statistics after a
    /// bulk load, health checks). Records are read through [`Vault::session`].
    pub fn unchecked_store(&self) -> &S {
        &self.store
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn rng(&self) -> &Arc<dyn RandomSource> {
        &self.rng
    }

    pub fn keys(&self) -> &Arc<KeyFile> {
        &self.keys
    }

    pub(crate) fn new_id(&self) -> Result<ResourceId, crate::CoreError> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b)?;
        Ok(ResourceId::from_random(b))
    }
}
