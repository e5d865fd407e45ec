//! The audit log at the storage boundary: append-only entries (numbered from 0, the leaves of
//! the Merkle tree) with their leaf hash and a keyed MAC, and the signed tree heads. The
//! store never computes a hash; it keeps what the core gives it, and refuses an append that
//! does not continue the log exactly (another writer appended first: `Conflict`).

use crate::StoreError;
use std::future::Future;

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log (the leaf index).
    pub index: i64,
    pub recorded: i64,
    /// The entry: a FHIR AuditEvent as canonical JSON, carrying its own index.
    pub body: Vec<u8>,
    /// RFC 6962 leaf hash of `body`.
    pub leaf: Vec<u8>,
    /// HMAC of `body` under the audit key: a changed entry is found without a signed head.
    pub mac: Vec<u8>,
    /// Search columns (opaque ids and codes only).
    pub agent: String,
    pub patient: Option<String>,
    pub subtype: String,
    pub outcome: String,
    pub entity: Option<String>,
}

/// Makes an entry once the store has given it its index (the entry's body carries its own
/// position, so it is rendered, hashed and MACed in the core only then). Called inside the
/// store's transaction.
#[derive(Clone)]
pub struct AuditMaker(pub std::sync::Arc<dyn Fn(i64) -> AuditRecord + Send + Sync>);

impl std::fmt::Debug for AuditMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditMaker(..)")
    }
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHead {
    pub size: i64,
    pub root: Vec<u8>,
    pub at: i64,
    pub signature: Vec<u8>,
}

/// How far a server's audit journal (a file beside a SQLite database where a read's entry is
/// made durable before its response; see the core's `audit::journal`) has been copied into
/// the log: the journal's generation, the byte offset just past the last record copied and
/// the sequence number of the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalMark {
    pub generation: i64,
    pub offset: i64,
    pub next_seq: i64,
}

/// What an auditor's search of the log filters on; every field optional, all must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub agent: Option<String>,
    pub patient: Option<String>,
    pub subtype: Option<String>,
    pub outcome: Option<String>,
    pub entity: Option<String>,
    /// Only entries with an index below this (paging, newest first).
    pub before: Option<i64>,
    pub limit: u32,
}

pub trait AuditStore: Send + Sync {
    /// Appends one entry per maker, numbered from the log's current size in one transaction
    /// (two writers never interleave); the first index.
    fn append_audit(&self, makers: Vec<AuditMaker>) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Appends one entry per maker, as `append_audit` does, and in the same transaction
    /// moves the journal's mark to `mark`: a record is copied from the journal exactly once.
    fn ingest_audit(
        &self,
        makers: Vec<AuditMaker>,
        mark: JournalMark,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The journal's mark, if anything was ever copied from a journal.
    fn journal_mark(&self) -> impl Future<Output = Result<Option<JournalMark>, StoreError>> + Send;

    /// How many entries the log holds.
    fn audit_size(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Up to `limit` entries from index `from` on, in index order.
    fn audit_range(&self, from: i64, limit: u32) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;

    /// The leaf hashes of up to `limit` entries from index `from` on, in index order, with
    /// their indexes: all the tree needs, without the bodies.
    fn audit_leaves(
        &self,
        from: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>, StoreError>> + Send;

    /// The stored roots of the tree's complete blocks from block `from` on, in order: up to
    /// `limit` (block number, root).
    fn audit_blocks(
        &self,
        from: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>, StoreError>> + Send;

    /// Stores block roots (replacing a block's earlier root: they are a cache, rebuilt from
    /// the leaves when they do not match).
    fn insert_audit_blocks(&self, blocks: Vec<(i64, Vec<u8>)>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The signed head of the largest size, if any.
    fn latest_head(&self) -> impl Future<Output = Result<Option<StoredHead>, StoreError>> + Send;

    /// Entries matching `filter`, newest first.
    fn audit_search(&self, filter: &AuditFilter) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;

    /// Retention: entries `from..through` lose their content (body and search columns) but
    /// keep their index, time, leaf hash and MAC, so the tree over the log is unchanged; in
    /// the same transaction `record` (the entry saying so) is appended. Its index.
    fn prune_audit(
        &self,
        from: i64,
        through: i64,
        record: AuditMaker,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    fn insert_head(
        &self,
        head: StoredHead,
        audit: Option<AuditMaker>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every signed head, smallest first.
    fn heads(&self) -> impl Future<Output = Result<Vec<StoredHead>, StoreError>> + Send;
}

/// What a pruned entry loses besides its body: only its index, time, leaf hash and MAC stay.
pub(crate) const PRUNE_SET: &str = "agent = '', patient = NULL, subtype = '', outcome = '', entity = NULL";

pub(crate) const AUDIT_COLUMNS: &str = "idx, recorded, body, leaf, mac, agent, patient, subtype, outcome, entity";
