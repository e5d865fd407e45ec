//! Computing the search index again for every live resource: after an upgrade changed what
//! is indexed (a parameter added, a normalisation changed), records written before it are
//! found like new ones once this has run. An operator command (`carevault reindex`); it runs
//! beside a live server, since a resource written meanwhile already carries fresh rows and
//! is left alone (`carevault_storage::Reindex`). No version is made and nothing the client
//! sees changes: not `meta.versionId`, not `meta.lastUpdated`.

use crate::access::Access;
use crate::identifiers::identifier_tags;
use crate::{CoreError, Session, Vault};
use carevault_domain::ResourceType;
use carevault_storage::{ChangeSet, Reindex, SearchQuery, Store};
use futures_util::StreamExt as _;

/// Resources read, indexed and written back together.
const BATCH: u32 = 500;
/// Batches in flight at once: while one is written, others are read and indexed (and on
/// SQLite their writes share a commit).
const IN_FLIGHT: usize = 4;

/// Where the walk over every type's live resources stands.
struct Walk {
    next_type: usize,
    current: Option<(ResourceType, Option<i64>)>,
}

impl<S: Store> Vault<S> {
    /// Indexes every live resource of every type again; `progress` hears each batch done
    /// (its type and size). Returns how many resources were indexed.
    pub async fn reindex(&self, mut progress: impl FnMut(ResourceType, u64)) -> Result<u64, CoreError> {
        let system = Access::unchecked_system();
        let session = self.session(&system);
        let walk = Walk {
            next_type: 0,
            current: None,
        };
        let batches = futures_util::stream::unfold(walk, |walk| self.next_batch(walk))
            .map(|batch| {
                let session = &session;
                async move {
                    let (rtype, ids) = batch?;
                    session.reindex_batch(rtype, &ids).await.map(|n| (rtype, n))
                }
            })
            .buffer_unordered(IN_FLIGHT);
        futures_util::pin_mut!(batches);
        let mut total = 0;
        while let Some(done) = batches.next().await {
            let (rtype, n) = done?;
            total += n;
            progress(rtype, n);
        }
        // Every live resource now has the index rows of this version, its tallies included.
        self.store.tallies_complete().await?;
        Ok(total)
    }

    /// The ids of the next batch of live resources in row-id order, type after type; `None`
    /// when every type is done (an error ends the walk after it is reported).
    async fn next_batch(&self, mut walk: Walk) -> Option<(Result<(ResourceType, Vec<String>), CoreError>, Walk)> {
        loop {
            let (rtype, after) = match walk.current {
                Some(c) => c,
                None => {
                    let t = *ResourceType::ALL.get(walk.next_type)?;
                    walk.next_type += 1;
                    (t, None)
                }
            };
            let query = SearchQuery {
                tenant: self.tenant.as_str().to_owned(),
                rtype: rtype.as_str().to_owned(),
                conds: Vec::new(),
                sort: Vec::new(),
                after: after.map(|rid| (Vec::new(), rid)),
                backwards: false,
                limit: BATCH,
            };
            let hits = match self.store.search(&query).await {
                Ok(hits) => hits,
                Err(e) => {
                    walk.next_type = ResourceType::ALL.len();
                    walk.current = None;
                    return Some((Err(e.into()), walk));
                }
            };
            walk.current = match hits.last() {
                Some(last) if hits.len() == BATCH as usize => Some((rtype, Some(last.rid))),
                _ => None,
            };
            if !hits.is_empty() {
                return Some((Ok((rtype, hits.into_iter().map(|h| h.id).collect())), walk));
            }
        }
    }
}

impl<S: Store> Session<'_, S> {
    /// Reads these resources, computes their index rows and writes them back if each is
    /// still at the version read. Returns how many were read.
    async fn reindex_batch(&self, rtype: ResourceType, ids: &[String]) -> Result<u64, CoreError> {
        let mut changes = ChangeSet::default();
        for r in self.read_many(rtype, ids).await? {
            // The body as stored, not checked again: a record that today's checks would
            // refuse (written under older rules) is still indexed.
            let body: serde_json::Value = serde_json::from_slice(&r.body).map_err(|_| CoreError::Integrity)?;
            changes.reindex.push(Reindex {
                key: self.resource_key(rtype, &r.id),
                version: r.version,
                identifier_tags: identifier_tags(&self.identifier_index, &body),
                search_rows: crate::search::search_rows(&self.search_index, rtype, &r.id, &body),
            });
        }
        let n = changes.reindex.len() as u64;
        self.store.apply(changes).await?;
        Ok(n)
    }
}
