//! Storage of carevault: a small family of traits and one module per backend (SQLite,
//! PostgreSQL). The store only ever sees ciphertext, random ids, blind tags and clinical
//! metadata; it never sees a key or a plaintext body.

mod accounts;
mod any;
mod audit;
mod error;
mod export;
mod oauth;
pub mod postgres;
mod search;
mod sql;
pub mod sqlite;
mod tally;
mod types;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tally_tests;

pub use accounts::{AccessEpoch, AccountStore, StoredEmergency, StoredUser};
pub use any::AnyStore;
pub use audit::{AuditFilter, AuditMaker, AuditRecord, AuditStore, JournalMark, StoredHead};
pub use error::StoreError;
pub use export::*;
pub use oauth::{OAuthStore, Revoke, SessionMatch, StoredClient, StoredSecurity, StoredSession};
pub use search::*;
pub use types::*;

use std::future::Future;

/// Versioned resources: atomic change sets, current and past versions, history.
pub trait ResourceStore: Send + Sync {
    /// Applies every version in `changes` or none. A version whose expectation about the
    /// current version does not hold fails the whole set with `StoreError::Conflict`.
    fn apply(&self, changes: ChangeSet) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The current version of a resource, deleted or not.
    fn current(&self, key: &ResourceKey) -> impl Future<Output = Result<Option<StoredVersion>, StoreError>> + Send;

    /// The current versions (deleted or not) of the resources of one tenant and type with
    /// these row ids (`SearchHit::rid`), in any order. A search's hits are read this way:
    /// row ids are written in order, so one patient's resources are a few pages of the row-id
    /// index, where their random ids are as many pages of the id index as they are many.
    fn current_by_rid(
        &self,
        tenant: &str,
        rtype: &str,
        rids: &[i64],
    ) -> impl Future<Output = Result<Vec<StoredVersion>, StoreError>> + Send;

    /// The current versions (deleted or not) of those of `ids` that exist, in any order: one
    /// round trip for a page of search results.
    fn current_many(
        &self,
        tenant: &str,
        rtype: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<StoredVersion>, StoreError>> + Send;

    /// One version of a resource.
    fn version(
        &self,
        key: &ResourceKey,
        version: u64,
    ) -> impl Future<Output = Result<Option<StoredVersion>, StoreError>> + Send;

    /// What access decisions need to know of a live resource, from its index rows alone:
    /// the patients whose compartments hold it and its security labels. `None` when there is
    /// no live resource.
    fn facts(&self, key: &ResourceKey) -> impl Future<Output = Result<Option<ResourceFacts>, StoreError>> + Send;

    /// The current version with the same facts, in one round trip (reads by id, where the
    /// facts decide whether the version may be opened at all).
    fn current_with_facts(
        &self,
        key: &ResourceKey,
    ) -> impl Future<Output = Result<Option<(StoredVersion, ResourceFacts)>, StoreError>> + Send;

    /// Versions newest first, as selected by `query`.
    fn history(&self, query: &HistoryQuery) -> impl Future<Output = Result<Vec<StoredVersion>, StoreError>> + Send;

    /// How many versions `query` selects, ignoring its cursor and limit.
    fn history_count(&self, query: &HistoryQuery) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Ids of live (not deleted) resources of a type whose identifier index holds `tag`.
    fn find_by_identifier(
        &self,
        tenant: &str,
        rtype: &str,
        tag: &[u8],
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// One page of a search.
    fn search(&self, query: &SearchQuery) -> impl Future<Output = Result<Vec<SearchHit>, StoreError>> + Send;

    /// How many resources a search matches (its cursor and limit ignored).
    fn search_count(&self, query: &SearchQuery) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The types that the resources in `patient`'s compartment (read from the compartment rows
    /// of `compartment_types`) refer to through an indexed reference, each once: where
    /// `$everything`'s supporting resources come from.
    fn referenced_types(
        &self,
        tenant: &str,
        patient: &str,
        compartment_types: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Deletes the conditional-create claims made before `before` (ms); how many.
    fn purge_claims(&self, before: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records that every live resource's index has been written by this version (a
    /// reindex finished): the tallies now count every resource, so counts may use them.
    fn tallies_complete(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Wrapped data keys, one per (tenant, scope).
pub trait KeyStore: Send + Sync {
    fn data_key(&self, tenant: &str, scope: &str)
    -> impl Future<Output = Result<Option<StoredKey>, StoreError>> + Send;

    fn data_key_by_id(&self, key_id: i64) -> impl Future<Output = Result<Option<StoredKey>, StoreError>> + Send;

    /// Stores `key` unless the scope already has one; returns whichever key the scope has now,
    /// so two racing writers end up using the same key.
    fn insert_data_key(&self, key: NewKey) -> impl Future<Output = Result<StoredKey, StoreError>> + Send;
}

/// Hashes of API bearer tokens (never the tokens).
pub trait TokenStore: Send + Sync {
    fn insert_token(
        &self,
        hash: &[u8],
        label: &str,
        created: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Hashes of tokens that are not revoked.
    fn active_tokens(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// Stores a new integration token and revokes every other one, in one transaction (with
    /// `audit`'s entry, when given); how many were revoked.
    fn replace_tokens(
        &self,
        hash: &[u8],
        label: &str,
        created: i64,
        audit: Option<AuditMaker>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Everything a backend provides.
pub trait Store:
    ResourceStore + KeyStore + TokenStore + ExportStore + AccountStore + OAuthStore + AuditStore + Clone + 'static
{
}

impl<T> Store for T where
    T: ResourceStore + KeyStore + TokenStore + ExportStore + AccountStore + OAuthStore + AuditStore + Clone + 'static
{
}
