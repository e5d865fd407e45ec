//! Data keys in use: unwrapped once, cached by key id (and scope), sealed and opened here.

use crate::{CoreError, Vault};
use carevault_crypto::{DataKey, KeyVersion, RowBinding, WrappedKey};
use carevault_storage::{NewKey, Store, StoredKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const MAX_CACHED: usize = 200_000;

#[derive(Default)]
pub(crate) struct KeyCache {
    by_id: RwLock<HashMap<i64, Arc<DataKey>>>,
    by_scope: RwLock<HashMap<String, i64>>,
}

impl KeyCache {
    fn get(&self, key_id: i64) -> Option<Arc<DataKey>> {
        self.by_id.read().ok()?.get(&key_id).cloned()
    }

    fn scope(&self, scope: &str) -> Option<i64> {
        self.by_scope.read().ok()?.get(scope).copied()
    }

    fn put(&self, key_id: i64, scope: &str, key: Arc<DataKey>) {
        if let Ok(mut m) = self.by_id.write() {
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(key_id, key);
        }
        if let Ok(mut m) = self.by_scope.write() {
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(scope.to_owned(), key_id);
        }
    }
}

/// Where a body lives, for sealing and opening.
pub(crate) struct Row<'a> {
    pub rtype: &'a str,
    pub id: &'a str,
    pub version: u64,
    pub patient: &'a str,
    pub key_id: i64,
}

impl<S: Store> Vault<S> {
    fn unwrap_stored(&self, stored: &StoredKey) -> Result<Arc<DataKey>, CoreError> {
        let wrapped = WrappedKey {
            kek_version: KeyVersion(stored.kek_version),
            bytes: stored.wrapped.clone(),
        };
        let key = Arc::new(DataKey::unwrap(&self.keys, &stored.tenant, &stored.scope, &wrapped)?);
        self.key_cache.put(stored.key_id, &stored.scope, Arc::clone(&key));
        Ok(key)
    }

    /// The data key of a scope (a patient id, or "" for the tenant), created on first use.
    pub(crate) async fn key_for_scope(&self, scope: &str) -> Result<(i64, Arc<DataKey>), CoreError> {
        if let Some(id) = self.key_cache.scope(scope)
            && let Some(k) = self.key_cache.get(id)
        {
            return Ok((id, k));
        }
        let tenant = self.tenant.as_str();
        let stored = match self.store.data_key(tenant, scope).await? {
            Some(s) => s,
            None => {
                let (_, wrapped) = DataKey::generate(&self.keys, self.rng.as_ref(), tenant, scope)?;
                let new = NewKey {
                    tenant: tenant.to_owned(),
                    scope: scope.to_owned(),
                    kek_version: wrapped.kek_version.0,
                    wrapped: wrapped.bytes,
                    created: self.clock.now().millis(),
                };
                // Whichever writer stored first, everyone uses the stored key.
                self.store.insert_data_key(new).await?
            }
        };
        let key = self.unwrap_stored(&stored)?;
        Ok((stored.key_id, key))
    }

    async fn key_by_id(&self, key_id: i64) -> Result<Arc<DataKey>, CoreError> {
        if let Some(k) = self.key_cache.get(key_id) {
            return Ok(k);
        }
        let stored = self.store.data_key_by_id(key_id).await?.ok_or(CoreError::Integrity)?;
        if stored.tenant != self.tenant.as_str() {
            return Err(CoreError::Integrity);
        }
        self.unwrap_stored(&stored)
    }

    pub(crate) fn seal_with(&self, key: &DataKey, row: &Row<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CoreError> {
        let binding = RowBinding {
            tenant: self.tenant.as_str(),
            rtype: row.rtype,
            id: row.id,
            version: row.version,
            patient: row.patient,
            key_id: row.key_id,
        };
        Ok(key.seal(self.rng.as_ref(), &binding, plaintext)?)
    }

    /// Opens a stored body. Any mismatch (bits, row, key) is `CoreError::Integrity`, logged
    /// with opaque ids only.
    pub(crate) async fn open(&self, row: &Row<'_>, sealed: &[u8]) -> Result<Vec<u8>, CoreError> {
        let result = async {
            let key = self.key_by_id(row.key_id).await?;
            let binding = RowBinding {
                tenant: self.tenant.as_str(),
                rtype: row.rtype,
                id: row.id,
                version: row.version,
                patient: row.patient,
                key_id: row.key_id,
            };
            Ok::<_, CoreError>(key.open(&binding, sealed)?)
        }
        .await;
        if let Err(CoreError::Integrity) = &result {
            tracing::error!(
                rtype = row.rtype,
                id = row.id,
                version = row.version,
                key_id = row.key_id,
                "stored resource failed its integrity check; refusing to serve it"
            );
        }
        result
    }
}
