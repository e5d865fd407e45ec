//! The backend chosen at start-up, as one type the upper layers can hold.

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{
    AccessEpoch, AccountStore, AuditFilter, AuditMaker, AuditRecord, AuditStore, ChangeSet, HistoryQuery, KeyStore,
    NewKey, OAuthStore, ResourceKey, ResourceStore, Revoke, SearchHit, SearchQuery, SessionMatch, StoreError,
    StoredClient, StoredEmergency, StoredHead, StoredKey, StoredSecurity, StoredSession, StoredUser, StoredVersion,
    TokenStore,
};

/// Either backend. Each method forwards to the one in use.
#[derive(Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens the store a URL names: `postgres://…` / `postgresql://…`, else a SQLite path.
    pub async fn open(url_or_path: &str) -> Result<Self, StoreError> {
        if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
            Ok(AnyStore::Postgres(PgStore::connect(url_or_path, 16).await?))
        } else {
            let path = std::path::PathBuf::from(url_or_path.strip_prefix("sqlite://").unwrap_or(url_or_path));
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|_| StoreError::WorkerGone)??;
            Ok(AnyStore::Sqlite(store))
        }
    }

    /// Brings planner statistics and visibility up to date after a bulk load (PostgreSQL
    /// plans searches badly on freshly filled tables until autovacuum gets to them).
    pub async fn refresh_after_bulk_load(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(_) => Ok(()),
            AnyStore::Postgres(p) => p.refresh_after_bulk_load().await,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }
}

macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call.await,
            AnyStore::Postgres($s) => $call.await,
        }
    };
}

impl ResourceStore for AnyStore {
    async fn apply(&self, changes: ChangeSet) -> Result<(), StoreError> {
        forward!(self, s => s.apply(changes))
    }
    async fn facts(&self, key: &ResourceKey) -> Result<Option<crate::ResourceFacts>, StoreError> {
        forward!(self, s => s.facts(key))
    }

    async fn current_with_facts(
        &self,
        key: &ResourceKey,
    ) -> Result<Option<(StoredVersion, crate::ResourceFacts)>, StoreError> {
        forward!(self, s => s.current_with_facts(key))
    }

    async fn current_many(&self, tenant: &str, rtype: &str, ids: &[String]) -> Result<Vec<StoredVersion>, StoreError> {
        forward!(self, s => s.current_many(tenant, rtype, ids))
    }

    async fn current_by_rid(&self, tenant: &str, rtype: &str, rids: &[i64]) -> Result<Vec<StoredVersion>, StoreError> {
        forward!(self, s => s.current_by_rid(tenant, rtype, rids))
    }

    async fn current(&self, key: &ResourceKey) -> Result<Option<StoredVersion>, StoreError> {
        forward!(self, s => s.current(key))
    }
    async fn version(&self, key: &ResourceKey, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        forward!(self, s => s.version(key, version))
    }
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredVersion>, StoreError> {
        forward!(self, s => s.history(query))
    }
    async fn history_count(&self, query: &HistoryQuery) -> Result<u64, StoreError> {
        forward!(self, s => s.history_count(query))
    }
    async fn find_by_identifier(&self, tenant: &str, rtype: &str, tag: &[u8]) -> Result<Vec<String>, StoreError> {
        forward!(self, s => s.find_by_identifier(tenant, rtype, tag))
    }
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        forward!(self, s => s.search(query))
    }
    async fn search_count(&self, query: &SearchQuery) -> Result<u64, StoreError> {
        forward!(self, s => s.search_count(query))
    }
    async fn referenced_types(
        &self,
        tenant: &str,
        patient: &str,
        compartment_types: &[String],
    ) -> Result<Vec<String>, StoreError> {
        forward!(self, s => s.referenced_types(tenant, patient, compartment_types))
    }
    async fn purge_claims(&self, before: i64) -> Result<u64, StoreError> {
        forward!(self, s => s.purge_claims(before))
    }
    async fn tallies_complete(&self) -> Result<(), StoreError> {
        forward!(self, s => s.tallies_complete())
    }
}

impl KeyStore for AnyStore {
    async fn data_key(&self, tenant: &str, scope: &str) -> Result<Option<StoredKey>, StoreError> {
        forward!(self, s => s.data_key(tenant, scope))
    }
    async fn data_key_by_id(&self, key_id: i64) -> Result<Option<StoredKey>, StoreError> {
        forward!(self, s => s.data_key_by_id(key_id))
    }
    async fn insert_data_key(&self, key: NewKey) -> Result<StoredKey, StoreError> {
        forward!(self, s => s.insert_data_key(key))
    }
}

impl TokenStore for AnyStore {
    async fn insert_token(&self, hash: &[u8], label: &str, created: i64) -> Result<(), StoreError> {
        forward!(self, s => s.insert_token(hash, label, created))
    }
    async fn active_tokens(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        forward!(self, s => s.active_tokens())
    }
    async fn replace_tokens(
        &self,
        hash: &[u8],
        label: &str,
        created: i64,
        audit: Option<AuditMaker>,
    ) -> Result<u64, StoreError> {
        forward!(self, s => s.replace_tokens(hash, label, created, audit))
    }
}

impl crate::ExportStore for AnyStore {
    async fn insert_export(&self, job: crate::ExportJob, audit: Option<AuditMaker>) -> Result<(), StoreError> {
        forward!(self, s => s.insert_export(job, audit))
    }

    async fn export(&self, tenant: &str, id: &str) -> Result<Option<crate::ExportJob>, StoreError> {
        forward!(self, s => s.export(tenant, id))
    }

    async fn export_files(&self, tenant: &str, id: &str) -> Result<Vec<crate::ExportFileInfo>, StoreError> {
        forward!(self, s => s.export_files(tenant, id))
    }

    async fn add_export_file(
        &self,
        tenant: &str,
        id: &str,
        file: crate::ExportFile,
        now: i64,
    ) -> Result<bool, StoreError> {
        forward!(self, s => s.add_export_file(tenant, id, file, now))
    }

    async fn finish_export(
        &self,
        tenant: &str,
        id: &str,
        state: crate::ExportState,
        error: Option<String>,
        now: i64,
    ) -> Result<bool, StoreError> {
        forward!(self, s => s.finish_export(tenant, id, state, error, now))
    }

    async fn export_file(&self, tenant: &str, id: &str, n: i64) -> Result<Option<crate::ExportFile>, StoreError> {
        forward!(self, s => s.export_file(tenant, id, n))
    }

    async fn delete_export(&self, tenant: &str, id: &str, audit: Option<AuditMaker>) -> Result<bool, StoreError> {
        forward!(self, s => s.delete_export(tenant, id, audit))
    }

    async fn expired_exports(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        forward!(self, s => s.expired_exports(now))
    }
}

impl AccountStore for AnyStore {
    async fn insert_user(&self, user: StoredUser, audit: Option<crate::AuditMaker>) -> Result<(), StoreError> {
        forward!(self, s => s.insert_user(user, audit))
    }

    async fn user_by_tag(&self, tenant: &str, tag: &[u8]) -> Result<Option<StoredUser>, StoreError> {
        forward!(self, s => s.user_by_tag(tenant, tag))
    }

    async fn user_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredUser>, StoreError> {
        forward!(self, s => s.user_by_id(tenant, id))
    }

    async fn users(&self, tenant: &str) -> Result<Vec<StoredUser>, StoreError> {
        forward!(self, s => s.users(tenant))
    }

    async fn set_user_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
        audit: Option<crate::AuditMaker>,
    ) -> Result<bool, StoreError> {
        forward!(self, s => s.set_user_disabled(tenant, id, disabled, audit))
    }

    async fn insert_emergency(&self, e: StoredEmergency, audit: Option<AuditMaker>) -> Result<(), StoreError> {
        forward!(self, s => s.insert_emergency(e, audit))
    }

    async fn active_emergencies(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        forward!(self, s => s.active_emergencies(tenant, user_id, now))
    }

    async fn access_epoch(&self, tenant: &str) -> Result<AccessEpoch, StoreError> {
        forward!(self, s => s.access_epoch(tenant))
    }

    async fn emergencies(
        &self,
        tenant: &str,
        patient: Option<&str>,
        unreviewed_only: bool,
    ) -> Result<Vec<StoredEmergency>, StoreError> {
        forward!(self, s => s.emergencies(tenant, patient, unreviewed_only))
    }

    async fn review_emergency(
        &self,
        tenant: &str,
        id: &str,
        reviewer: &str,
        verdict: &str,
        at: i64,
        audit: Option<AuditMaker>,
    ) -> Result<bool, StoreError> {
        forward!(self, s => s.review_emergency(tenant, id, reviewer, verdict, at, audit))
    }
}

impl OAuthStore for AnyStore {
    async fn insert_client(&self, c: StoredClient, audit: Option<AuditMaker>) -> Result<(), StoreError> {
        forward!(self, s => s.insert_client(c, audit))
    }

    async fn client_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredClient>, StoreError> {
        forward!(self, s => s.client_by_id(tenant, id))
    }

    async fn clients(&self, tenant: &str) -> Result<Vec<StoredClient>, StoreError> {
        forward!(self, s => s.clients(tenant))
    }

    async fn insert_session(&self, session: StoredSession, audit: Option<AuditMaker>) -> Result<(), StoreError> {
        forward!(self, s => s.insert_session(session, audit))
    }

    async fn session_by_id(&self, tenant: &str, id: &str) -> Result<Option<StoredSession>, StoreError> {
        forward!(self, s => s.session_by_id(tenant, id))
    }

    async fn session_by_hash(
        &self,
        tenant: &str,
        hash: &[u8],
    ) -> Result<Option<(StoredSession, SessionMatch)>, StoreError> {
        forward!(self, s => s.session_by_hash(tenant, hash))
    }

    async fn update_session(&self, session: StoredSession, audit: Option<AuditMaker>) -> Result<bool, StoreError> {
        forward!(self, s => s.update_session(session, audit))
    }

    async fn revoke_sessions(
        &self,
        tenant: &str,
        which: Revoke<'_>,
        audit: Option<AuditMaker>,
    ) -> Result<u64, StoreError> {
        forward!(self, s => s.revoke_sessions(tenant, which, audit))
    }

    async fn security(&self, tenant: &str, user_id: &str) -> Result<Option<StoredSecurity>, StoreError> {
        forward!(self, s => s.security(tenant, user_id))
    }

    async fn put_security(&self, sec: StoredSecurity, audit: Option<AuditMaker>) -> Result<(), StoreError> {
        forward!(self, s => s.put_security(sec, audit))
    }

    async fn delete_ended_sessions(
        &self,
        tenant: &str,
        now: i64,
        audit: Option<AuditMaker>,
    ) -> Result<u64, StoreError> {
        forward!(self, s => s.delete_ended_sessions(tenant, now, audit))
    }
}

impl AuditStore for AnyStore {
    async fn append_audit(&self, makers: Vec<AuditMaker>) -> Result<i64, StoreError> {
        forward!(self, s => s.append_audit(makers))
    }

    async fn prune_audit(&self, from: i64, through: i64, record: AuditMaker) -> Result<i64, StoreError> {
        forward!(self, s => s.prune_audit(from, through, record))
    }

    async fn ingest_audit(&self, makers: Vec<AuditMaker>, mark: crate::JournalMark) -> Result<i64, StoreError> {
        forward!(self, s => s.ingest_audit(makers, mark))
    }

    async fn journal_mark(&self) -> Result<Option<crate::JournalMark>, StoreError> {
        forward!(self, s => s.journal_mark())
    }

    async fn audit_leaves(&self, from: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        forward!(self, s => s.audit_leaves(from, limit))
    }

    async fn audit_blocks(&self, from: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        forward!(self, s => s.audit_blocks(from, limit))
    }

    async fn insert_audit_blocks(&self, blocks: Vec<(i64, Vec<u8>)>) -> Result<(), StoreError> {
        forward!(self, s => s.insert_audit_blocks(blocks))
    }

    async fn latest_head(&self) -> Result<Option<StoredHead>, StoreError> {
        forward!(self, s => s.latest_head())
    }

    async fn audit_size(&self) -> Result<i64, StoreError> {
        forward!(self, s => s.audit_size())
    }

    async fn audit_range(&self, from: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        forward!(self, s => s.audit_range(from, limit))
    }

    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        forward!(self, s => s.audit_search(filter))
    }

    async fn insert_head(&self, head: StoredHead, audit: Option<AuditMaker>) -> Result<bool, StoreError> {
        forward!(self, s => s.insert_head(head, audit))
    }

    async fn heads(&self) -> Result<Vec<StoredHead>, StoreError> {
        forward!(self, s => s.heads())
    }
}
