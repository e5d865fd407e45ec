//! The audit log: one entry per interaction, shaped as a FHIR AuditEvent (IHE BALP: type and
//! subtype, action, recorded time, outcome, the agent with its opaque id, role, client and
//! network address, the source, the entities — resource, patient, a keyed hash of the query
//! — and the purpose of use). No PHI: patients and users appear by opaque id, search terms
//! only as keyed hashes.
//!
//! Entries are the leaves of an RFC 6962 Merkle tree. The store numbers them inside its
//! transaction and calls back (`AuditMaker`) to render each entry with its index, hash it and
//! MAC it. A write's entry goes into the write's own change set (`with_pending`); every other
//! entry goes, on a server over SQLite, to the journal (`journal.rs`: durable in a file at
//! once, copied into the log in batches and before the log is read), and otherwise through
//! one appender task per server, which writes every entry waiting at that moment in one store
//! call (group commit). Either way the entry is durable before the response leaves. Signed
//! tree heads (`sign_head`) commit to the tree; `verify` checks the whole log offline.

mod entry;
mod fsync_floor;
mod journal;
mod read;
mod unnumbered;
mod verify;

#[cfg(test)]
mod journal_tests;

#[cfg(test)]
mod retention_tests;

#[cfg(test)]
mod proof_tests;

pub use crate::emergency::StaffMember;
pub use entry::{AuditAgent, AuditDraft, Outcome};
pub use journal::{DamageKind, JournalBacklog, JournalDamage, journal_backlog};
pub use read::AccessLine;
pub use verify::{VerifyReport, WitnessHead, verify_log};

use crate::{CoreError, Vault};
use carevault_crypto::merkle::{self, Frontier, Hash, SubtreeCache};
use carevault_crypto::{HeadSigner, IndexKey};
use carevault_domain::Timestamp;
use carevault_storage::{AuditMaker, Store, StoreError, StoredHead};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// The keyed MAC key of entries (and of search terms in them): one log per database.
pub(crate) fn mac_key(keys: &carevault_crypto::KeyFile) -> IndexKey {
    IndexKey::derive(keys, "*", "audit-log")
}

type Reply = oneshot::Sender<Result<i64, CoreError>>;

/// The agent of an entry whose caller is not known (yet): the HTTP layer's drafts start so.
pub const ANONYMOUS: &str = "anonymous";

/// The running appender, and the tree as far as it has been read: its frontier (for heads)
/// and the roots of its complete subtrees of a block and more (for proofs).
pub(crate) struct AuditLog {
    queue: OnceLock<mpsc::UnboundedSender<(AuditMaker, Reply)>>,
    /// The journal, on a server that keeps one (`open_audit_journal`).
    journal: OnceLock<Arc<journal::Journal>>,
    key: OnceLock<IndexKey>,
    tree: tokio::sync::Mutex<(Frontier, SubtreeCache)>,
    /// Whether the tree has been started from the stored block roots (once per server).
    from_blocks: std::sync::atomic::AtomicBool,
}

/// Proofs read at most a few blocks of this many leaves (2^10) from the store.
const PROOF_BLOCK_LEVEL: u32 = 10;

impl Default for AuditLog {
    fn default() -> Self {
        Self {
            queue: OnceLock::new(),
            journal: OnceLock::new(),
            key: OnceLock::new(),
            tree: tokio::sync::Mutex::new((Frontier::new(), SubtreeCache::new(PROOF_BLOCK_LEVEL))),
            from_blocks: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A signed tree head as served and witnessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub size: u64,
    pub root: Hash,
    pub at: i64,
    pub signature: Vec<u8>,
    pub public_key: [u8; 32],
}

/// Most entries written in one store call.
const BATCH: usize = 512;

/// A maker the store calls with the entry's index, inside its transaction: the entry is
/// rendered now, so that only the index, a hash and a MAC are left for the store's writer.
pub(crate) fn maker(key: IndexKey, draft: AuditDraft) -> AuditMaker {
    unnumbered::Unnumbered::of(&draft).maker(key)
}

async fn appender<S: Store>(store: S, mut rx: mpsc::UnboundedReceiver<(AuditMaker, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (makers, replies): (Vec<AuditMaker>, Vec<Reply>) = jobs.into_iter().unzip();
        let result = store.append_audit(makers).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit entries could not be written; their requests fail");
        }
        for (i, reply) in replies.into_iter().enumerate() {
            let _ = reply.send(match &result {
                Ok(first) => Ok(first + i as i64),
                Err(_) => Err(CoreError::Store(StoreError::backend(
                    "audit",
                    "the audit log could not be written",
                ))),
            });
        }
    }
}

tokio::task_local! {
    /// The entry of the request being served, when it may be committed with a write.
    static PENDING: std::cell::RefCell<Option<(AuditDraft, bool)>>;
}

/// Runs `f` (a request's handler) with `draft` as its pending audit entry: the first change
/// set the request commits carries it (with the caller and patient filled in), in the same
/// transaction. Returns whether it was so committed — if not, the caller appends it itself.
pub async fn with_pending<F: std::future::Future>(draft: AuditDraft, f: F) -> (F::Output, Option<AuditDraft>) {
    PENDING
        .scope(std::cell::RefCell::new(Some((draft, false))), async move {
            let out = f.await;
            let committed = PENDING.with(|p| p.borrow().as_ref().filter(|(_, done)| *done).map(|(d, _)| d.clone()));
            (out, committed)
        })
        .await
}

/// Runs `f` with no pending entry: for a step that changes state on the way to the change
/// the entry records (so that the entry does not commit with that step instead).
pub async fn apart<F: std::future::Future>(f: F) -> F::Output {
    PENDING.scope(std::cell::RefCell::new(None), f).await
}

/// The pending entry, if the request has one not yet committed.
pub(crate) fn pending() -> Option<AuditDraft> {
    PENDING
        .try_with(|p| p.borrow().as_ref().filter(|(_, done)| !*done).map(|(d, _)| d.clone()))
        .ok()
        .flatten()
}

/// Completes the pending entry, if the request has one not yet committed: for a layer that
/// learns who the caller is after the entry was drafted.
pub fn update_pending(fill: impl FnOnce(&mut AuditDraft)) {
    let _ = PENDING.try_with(|p| {
        if let Some((d, false)) = p.borrow_mut().as_mut() {
            fill(d);
        }
    });
}

/// Names the caller in an entry: actor, role, client and purpose of use.
pub fn name_caller(d: &mut AuditDraft, a: &crate::access::Access) {
    d.agent.who = a.actor_key();
    d.agent.role = a.role().map(|r| r.as_str().to_owned());
    if let crate::access::Actor::Client { client_id } = a.actor() {
        d.agent.client = Some(client_id.clone());
    }
    d.purpose = Some(a.purpose().to_owned());
}

/// Marks the pending entry committed (with what it became).
pub(crate) fn committed(draft: AuditDraft) {
    let _ = PENDING.try_with(|p| *p.borrow_mut() = Some((draft, true)));
}

/// The pending entry of the request or operator command being served, completed for a
/// change about to commit: the store appends it (`maker`) in the change's transaction, and
/// `done_if` marks it committed so that nothing appends it again.
pub(crate) struct ChangeEntry {
    draft: AuditDraft,
    maker: AuditMaker,
}

impl ChangeEntry {
    /// The maker to hand the store with the change.
    pub(crate) fn maker(entry: &Option<ChangeEntry>) -> Option<AuditMaker> {
        entry.as_ref().map(|e| e.maker.clone())
    }

    /// After the store call: when the change happened, its entry went in with it.
    pub(crate) fn done_if(entry: Option<ChangeEntry>, changed: bool) {
        if changed && let Some(e) = entry {
            committed(e.draft);
        }
    }
}

impl<S: Store> Vault<S> {
    /// The pending entry (if the caller set one: `with_pending`), completed by `fill`, for a
    /// change about to commit. `None` in the benchmark build whose log is a no-op.
    pub(crate) fn change_entry(&self, fill: impl FnOnce(&mut AuditDraft)) -> Option<ChangeEntry> {
        if cfg!(feature = "bench-audit-noop") {
            return None;
        }
        let mut draft = pending()?;
        fill(&mut draft);
        let maker = maker(mac_key(&self.keys), draft.clone());
        Some(ChangeEntry { draft, maker })
    }

    /// An entry for the server's own housekeeping (a deletion on a timer, no caller): the
    /// agent is `system`, the purpose operations.
    fn system_draft(&self, subtype: &str, detail: Vec<(String, String)>) -> AuditDraft {
        AuditDraft {
            recorded: self.clock.now().millis(),
            subtype: subtype.into(),
            action: 'D',
            outcome: Outcome::Success,
            agent: AuditAgent {
                who: "system".into(),
                ..AuditAgent::default()
            },
            entity: None,
            patient: None,
            query_tag: None,
            purpose: Some("HOPERAT".into()),
            detail,
        }
    }

    /// The maker of a housekeeping deletion's entry, for the store to append in the
    /// deletion's transaction when something was deleted. `None` in the benchmark build
    /// whose log is a no-op.
    pub(crate) fn housekeeping_entry(&self, subtype: &str, detail: Vec<(String, String)>) -> Option<AuditMaker> {
        if cfg!(feature = "bench-audit-noop") {
            return None;
        }
        Some(maker(mac_key(&self.keys), self.system_draft(subtype, detail)))
    }

    /// Keeps the audit journal at `path` (a server over SQLite): entries not committed with
    /// a write become durable there and are copied into the log behind, at once when the
    /// journal was idle and then at most every `every` (and whenever the log is read).
    /// Copies whatever an earlier run left in it first; how many entries that was. Once per
    /// vault.
    pub async fn open_audit_journal(
        &self,
        path: &std::path::Path,
        every: std::time::Duration,
    ) -> Result<usize, CoreError> {
        if cfg!(any(feature = "bench-audit-noop", feature = "bench-audit-fsync-floor")) {
            return Ok(0);
        }
        let log_key = self.audit_log.key.get_or_init(|| mac_key(&self.keys)).clone();
        let record_damage = |d: journal::JournalDamage, copied: usize| {
            let kind = d.kind.code();
            tracing::error!(
                offset = d.offset,
                kind,
                "the audit journal is damaged: nothing from there on was copied into the log"
            );
            let mut draft = self.system_draft(
                "audit-journal-damaged",
                vec![
                    ("offset".into(), d.offset.to_string()),
                    ("kind".into(), kind.into()),
                    ("copied".into(), copied.to_string()),
                ],
            );
            draft.action = 'E';
            maker(log_key.clone(), draft)
        };
        let (j, replayed) = journal::Journal::open(
            path,
            &self.store,
            journal::journal_key(&self.keys),
            &log_key,
            record_damage,
        )
        .await?;
        let j = Arc::new(j);
        if self.audit_log.journal.set(Arc::clone(&j)).is_err() {
            return Err(CoreError::Invalid("the audit journal is already open".into()));
        }
        j.spawn_copier(self.store.clone(), log_key, every);
        Ok(replayed)
    }

    /// Copies every entry waiting in the journal into the log: before the log is read, and
    /// when the server stops.
    pub async fn flush_audit_journal(&self) -> Result<(), CoreError> {
        if let Some(j) = self.audit_log.journal.get() {
            let key = self.audit_log.key.get_or_init(|| mac_key(&self.keys));
            j.ingest(&self.store, key).await?;
        }
        Ok(())
    }

    /// Appends one entry and waits until it is durable (in the log, or in the journal
    /// that is copied into it).
    pub async fn audit(&self, draft: AuditDraft) -> Result<(), CoreError> {
        if cfg!(feature = "bench-audit-noop") {
            // The benchmark's baseline build: nothing is recorded.
            let _ = draft;
            return Ok(());
        }
        if cfg!(feature = "bench-audit-fsync-floor") {
            // The benchmark's floor: the entry made as usual, then only a durable write.
            let key = self.audit_log.key.get_or_init(|| mac_key(&self.keys));
            let body = draft.rendered().with_index(0);
            let mut record = key.mac(&body);
            record.extend_from_slice(&merkle::leaf_hash(&body));
            record.extend_from_slice(&body);
            fsync_floor::append(record).await?;
            return Ok(());
        }
        if let Some(j) = self.audit_log.journal.get() {
            return j.append(unnumbered::Unnumbered::of(&draft)).await;
        }
        let tx = self.audit_log.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(appender(self.store.clone(), rx));
            tx
        });
        let key = self.audit_log.key.get_or_init(|| mac_key(&self.keys));
        let (reply, wait) = oneshot::channel();
        tx.send((maker(key.clone(), draft), reply))
            .map_err(|_| CoreError::Store(StoreError::WorkerGone))?;
        wait.await
            .map_err(|_| CoreError::Store(StoreError::WorkerGone))?
            .map(|_| ())
    }

    /// A keyed hash of a search's terms, for the entry's `query` (never the terms).
    pub fn audit_query_tag(&self, query: &str) -> String {
        mac_key(&self.keys).mac(format!("query|{query}").as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The tree over the whole log, kept in memory and caught up with the entries written
    /// since it was last read; held locked while the caller uses it.
    async fn tree(&self) -> Result<tokio::sync::MutexGuard<'_, (Frontier, SubtreeCache)>, CoreError> {
        self.flush_audit_journal().await?;
        let mut t = self.audit_log.tree.lock().await;
        if t.0.size() == 0
            && !self
                .audit_log
                .from_blocks
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            *t = self.tree_from_blocks().await?;
        }
        let stored_blocks = t.1.blocks().len();
        loop {
            let page = self.store.audit_leaves(t.0.size() as i64, 10_000).await?;
            if page.is_empty() {
                break;
            }
            for (index, leaf) in page {
                if index != t.0.size() as i64 {
                    return Err(CoreError::Integrity);
                }
                let leaf: Hash = leaf.as_slice().try_into().map_err(|_| CoreError::Integrity)?;
                t.0.push(leaf);
                t.1.push(leaf);
            }
        }
        // The blocks completed meanwhile, for the next start (a cache: failing to keep them
        // only costs that start a longer read).
        let fresh: Vec<(i64, Vec<u8>)> = (stored_blocks..t.1.blocks().len())
            .zip(&t.1.blocks()[stored_blocks..])
            .map(|(b, root)| (b as i64, root.to_vec()))
            .collect();
        for chunk in fresh.chunks(10_000) {
            if let Err(e) = self.store.insert_audit_blocks(chunk.to_vec()).await {
                tracing::warn!(error = %e, "the audit tree's block roots could not be stored");
                break;
            }
        }
        Ok(t)
    }

    /// The tree as far as the stored block roots and the newest signed head vouch for it: the
    /// blocks below the head's size, accepted only if they and the leaves after them give the
    /// head's root. An empty tree (every leaf is then read) when there is no head or they do
    /// not.
    async fn tree_from_blocks(&self) -> Result<(Frontier, SubtreeCache), CoreError> {
        let empty = || (Frontier::new(), SubtreeCache::new(PROOF_BLOCK_LEVEL));
        let Some(head) = self.store.latest_head().await? else {
            return Ok(empty());
        };
        let public = HeadSigner::derive(&self.keys)?.public_key();
        let (Ok(size), Ok(root)) = (u64::try_from(head.size), Hash::try_from(head.root.as_slice())) else {
            return Ok(empty());
        };
        if !carevault_crypto::verify_head(&public, size, &root, head.at, &head.signature) {
            tracing::error!(
                size,
                "the newest signed audit head does not verify; the tree is rebuilt from every leaf"
            );
            return Ok(empty());
        }
        let (mut tree, block_len) = (empty(), 1u64 << PROOF_BLOCK_LEVEL);
        let wanted = (size / block_len) as i64;
        'blocks: while (tree.1.blocks().len() as i64) < wanted {
            let next = tree.1.blocks().len() as i64;
            let page = self
                .store
                .audit_blocks(next, (wanted - next).min(10_000) as u32)
                .await?;
            if page.is_empty() {
                break;
            }
            for (b, r) in page {
                let expected = tree.1.blocks().len() as i64;
                match Hash::try_from(r.as_slice()) {
                    Ok(r) if b == expected && tree.0.push_subtree(block_len, r) && tree.1.push_block(r) => {}
                    _ => break 'blocks,
                }
            }
        }
        if tree.0.size() != tree.1.size() {
            return Ok(empty());
        }
        let mut check = tree.0.clone();
        while check.size() < size {
            let page = self
                .store
                .audit_leaves(check.size() as i64, (size - check.size()).min(10_000) as u32)
                .await?;
            if page.is_empty() {
                break;
            }
            for (index, leaf) in page {
                let leaf: Hash = leaf.as_slice().try_into().map_err(|_| CoreError::Integrity)?;
                if index as u64 != check.size() {
                    return Err(CoreError::Integrity);
                }
                check.push(leaf);
            }
        }
        if check.size() != size || check.root() != root {
            tracing::error!(
                size,
                "the stored roots of the audit tree's blocks do not give the newest signed head's root; the tree is rebuilt from every leaf"
            );
            return Ok(empty());
        }
        Ok(tree)
    }

    /// Signs a head over the whole log as it stands and stores it.
    pub async fn sign_head(&self) -> Result<SignedHead, CoreError> {
        let f = self.tree().await?.0.clone();
        let signer = HeadSigner::derive(&self.keys)?;
        let root = f.root();
        let at = self.clock.now().millis();
        let signature = signer.sign(f.size(), &root, at);
        // An operator's or auditor's request for a head commits its entry with the head.
        let entry = self.change_entry(|_| {});
        let stored = self
            .store
            .insert_head(
                StoredHead {
                    size: f.size() as i64,
                    root: root.to_vec(),
                    at,
                    signature: signature.clone(),
                },
                ChangeEntry::maker(&entry),
            )
            .await?;
        ChangeEntry::done_if(entry, stored);
        Ok(SignedHead {
            size: f.size(),
            root,
            at,
            signature,
            public_key: signer.public_key(),
        })
    }

    /// The public key that verifies tree heads.
    pub fn head_public_key(&self) -> Result<[u8; 32], CoreError> {
        Ok(HeadSigner::derive(&self.keys)?.public_key())
    }

    /// A proof over the tree of `size` entries, made by `make` from subtree hashes: cached
    /// ones, and below a block from the leaves it asks for (read from the store, then asked
    /// again).
    async fn proof(
        &self,
        size: u64,
        make: impl Fn(&merkle::CachedRanges<'_>) -> Option<Vec<Hash>>,
    ) -> Result<Vec<Hash>, CoreError> {
        let t = self.tree().await?;
        if size > t.1.size() {
            return Err(CoreError::NotFound);
        }
        let mut leaves = BTreeMap::new();
        for _ in 0..2 {
            let h = merkle::CachedRanges {
                cache: &t.1,
                leaves: &leaves,
                missing: Default::default(),
            };
            let proof = make(&h).ok_or(CoreError::NotFound)?;
            let missing = h.missing.into_inner();
            if missing.is_empty() {
                return Ok(proof);
            }
            // Each missing leaf's block, read whole (a few blocks at most).
            let blocks: std::collections::BTreeSet<u64> = missing.iter().map(|i| i / t.1.block_len()).collect();
            for b in blocks {
                let from = b * t.1.block_len();
                for (index, leaf) in self.store.audit_leaves(from as i64, t.1.block_len() as u32).await? {
                    let leaf: Hash = leaf.as_slice().try_into().map_err(|_| CoreError::Integrity)?;
                    leaves.insert(index as u64, leaf);
                }
            }
        }
        Err(CoreError::Integrity)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries, with the entry's
    /// leaf hash.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), CoreError> {
        if index >= size {
            return Err(CoreError::Invalid("index must be below size".into()));
        }
        let proof = self
            .proof(size, |h| merkle::inclusion_proof_from(index, size, h))
            .await?;
        let leaf = match self.store.audit_range(index as i64, 1).await?.first() {
            Some(r) if r.index == index as i64 => r.leaf.as_slice().try_into().map_err(|_| CoreError::Integrity)?,
            _ => return Err(CoreError::NotFound),
        };
        Ok((leaf, proof))
    }

    /// The consistency proof between the trees of `first` and `second` entries.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, CoreError> {
        if first == 0 || first > second {
            return Err(CoreError::Invalid("0 < first ≤ second".into()));
        }
        self.proof(second, |h| merkle::consistency_proof_from(first, second, h))
            .await
    }

    /// The patient whose compartment a resource is in, for an audit entry about a request
    /// that did not return it (refused, not found, deleted): read from its index row, never
    /// shown to the caller. `None` when it is in none or in several.
    pub async fn audit_patient_of(&self, rtype: carevault_domain::ResourceType, id: &str) -> Option<String> {
        let id = carevault_domain::ResourceId::parse(id).ok()?;
        let key = carevault_storage::ResourceKey {
            tenant: self.tenant.as_str().to_owned(),
            rtype: rtype.as_str().to_owned(),
            id: id.to_string(),
        };
        let facts = self.store.facts(&key).await.ok()??;
        match facts.patients.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// How many entries, from the first, retention has emptied (they form a prefix: found by
    /// bisection).
    pub async fn audit_pruned(&self) -> Result<i64, CoreError> {
        let (mut lo, mut hi) = (0i64, self.store.audit_size().await?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let pruned = self
                .store
                .audit_range(mid, 1)
                .await?
                .first()
                .is_some_and(|r| r.body.is_empty());
            if pruned {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Retention: empties the entries recorded more than `keep_millis` ago (the oldest, up to
    /// the first younger one), keeping their leaf hashes so the tree and every signed head
    /// still verify. Each chunk emptied is itself recorded, in the same transaction, with the
    /// range it covers. How many entries were emptied.
    pub async fn prune_audit(&self, keep_millis: i64) -> Result<u64, CoreError> {
        const CHUNK: i64 = 10_000;
        let cutoff = self.clock.now().millis().saturating_sub(keep_millis);
        self.flush_audit_journal().await?;
        let from = self.audit_pruned().await?;
        let mut through = from;
        'scan: loop {
            let page = self.store.audit_range(through, 1_000).await?;
            if page.is_empty() {
                break;
            }
            for r in page {
                if r.recorded >= cutoff {
                    break 'scan;
                }
                through = r.index + 1;
            }
        }
        let mut at = from;
        while at < through {
            let end = (at + CHUNK).min(through);
            let draft = self.system_draft(
                "audit-retention",
                vec![
                    ("pruned-from".into(), at.to_string()),
                    ("pruned-until".into(), end.to_string()),
                    ("recorded-before".into(), Timestamp::from_millis(cutoff).to_fhir()),
                ],
            );
            self.store
                .prune_audit(at, end, maker(mac_key(&self.keys), draft))
                .await?;
            at = end;
        }
        if through > from {
            tracing::info!(entries = through - from, "audit entries past their retention emptied");
        }
        Ok((through - from) as u64)
    }

    /// The signed heads stored, smallest first.
    pub async fn heads(&self) -> Result<Vec<StoredHead>, CoreError> {
        Ok(self.store.heads().await?)
    }
}
