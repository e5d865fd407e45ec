//! History of an instance, a type, or the whole system, newest first, paged by an opaque
//! integrity-protected cursor.

use crate::access::Perms;
use crate::{CoreError, Session, Vault};
use carevault_crypto::IndexKey;
use carevault_domain::{ResourceId, ResourceType, Timestamp};
use carevault_storage::{HistoryQuery, Op, Store};

/// Whose history.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    System,
    Type(ResourceType),
    Instance(ResourceType, ResourceId),
}

/// One version in a history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub rtype: ResourceType,
    pub id: ResourceId,
    pub version: u64,
    pub last_updated: Timestamp,
    pub op: Op,
    /// The body, absent for a deletion.
    pub body: Option<Vec<u8>>,
}

/// A page of history and the cursor of the next page.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next: Option<String>,
    /// How many versions the history holds; `None` when consent or sensitivity labels hide
    /// some rows page by page (a count of all would tell how many are hidden).
    pub total: Option<u64>,
}

pub const MAX_PAGE: u32 = 1000;

fn cursor_key<S: Store>(v: &Vault<S>) -> IndexKey {
    IndexKey::cursor(&v.keys, v.tenant.as_str())
}

impl<S: Store> Session<'_, S> {
    /// An opaque cursor for "entries older than `seq`": the number and a MAC over it.
    fn encode_cursor(&self, seq: i64) -> String {
        let data = seq.to_be_bytes();
        let mac = cursor_key(self).mac(&data);
        let mut raw = data.to_vec();
        raw.extend_from_slice(&mac[..16]);
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn decode_cursor(&self, s: &str) -> Result<i64, CoreError> {
        let bad = || CoreError::Invalid("the paging cursor is not valid".into());
        if s.len() != 48 || !s.is_ascii() {
            return Err(bad());
        }
        let raw: Vec<u8> = (0..24)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let (data, tag) = raw.split_at(8);
        let mac = cursor_key(self).mac(data);
        if !carevault_crypto::constant_time_eq(&mac[..16], tag) {
            return Err(bad());
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(data);
        Ok(i64::from_be_bytes(b))
    }

    /// The caller's limit on a history: the patients whose compartments a type history is
    /// limited to; an instance the caller may not read is absent; a system history needs a
    /// caller limited by nothing.
    async fn history_limit(&self, scope: &HistoryScope) -> Result<Option<Vec<String>>, CoreError> {
        use crate::access::TypeFilter;
        match scope {
            HistoryScope::System if self.access().is_unrestricted() => Ok(None),
            HistoryScope::System => Err(CoreError::Forbidden(
                "the history of the whole server needs a token limited by nothing; ask per type".into(),
            )),
            HistoryScope::Instance(t, id) => {
                self.require(*t, Perms::READ)?;
                if self.visible(*t, id, Perms::READ).await? {
                    Ok(None)
                } else {
                    Err(CoreError::NotFound)
                }
            }
            HistoryScope::Type(t) => match self.access().filter(*t, Perms::SEARCH) {
                None => {
                    self.require(*t, Perms::SEARCH)?;
                    Err(CoreError::Forbidden("not allowed".into()))
                }
                Some(TypeFilter::AnyOf(_)) => Err(CoreError::Forbidden(
                    "a type history is not served under a granular scope; search instead".into(),
                )),
                Some(TypeFilter::Open) => Ok(self
                    .access()
                    .compartment_limit(*t)
                    .map(|p| p.iter().map(|x| x.as_str().to_owned()).collect())),
            },
        }
    }

    pub async fn history(
        &self,
        scope: &HistoryScope,
        since: Option<Timestamp>,
        count: u32,
        cursor: Option<&str>,
    ) -> Result<HistoryPage, CoreError> {
        let (rtype, id) = match scope {
            HistoryScope::System => (None, None),
            HistoryScope::Type(t) => (Some(t.as_str().to_owned()), None),
            HistoryScope::Instance(t, id) => (Some(t.as_str().to_owned()), Some(id.to_string())),
        };
        let patients = self.history_limit(scope).await?;
        let before_seq = cursor.map(|c| self.decode_cursor(c)).transpose()?;
        let limit = count.clamp(1, MAX_PAGE);
        let query = HistoryQuery {
            tenant: self.tenant.as_str().to_owned(),
            rtype,
            id,
            since: since.map(Timestamp::millis),
            before_seq,
            limit: limit + 1,
            patients,
        };
        let mut rows = self.store.history(&query).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|r| self.encode_cursor(r.seq))
        } else {
            None
        };
        // The compartment limit is in the query; a patient's consent and sensitivity labels
        // are decided per resource on its current index rows (as a read would), so a page may
        // come out shorter than asked and the total is not given.
        let filtered = match scope {
            HistoryScope::Type(t) => !self.access().consent_conds(*t).is_empty(),
            _ => false,
        };
        let total = if filtered {
            let t = match scope {
                HistoryScope::Type(t) => *t,
                _ => return Err(CoreError::Integrity),
            };
            let mut ids: Vec<String> = rows.iter().map(|r| r.key.id.clone()).collect();
            ids.sort();
            ids.dedup();
            let seen: std::collections::HashSet<String> =
                self.visible_ids(t, ids, Perms::SEARCH).await?.into_iter().collect();
            rows.retain(|r| seen.contains(&r.key.id));
            None
        } else {
            Some(self.store.history_count(&query).await?)
        };
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let rtype: ResourceType = row.key.rtype.parse().map_err(|_| CoreError::Integrity)?;
            let id = ResourceId::parse(&row.key.id).map_err(|_| CoreError::Integrity)?;
            let body = if row.is_deleted() {
                None
            } else {
                Some(self.masked(self.open_version(rtype, row).await?).body)
            };
            entries.push(HistoryEntry {
                rtype,
                id,
                version: row.version,
                last_updated: Timestamp::from_millis(row.last_updated),
                op: row.op,
                body,
            });
        }
        Ok(HistoryPage { entries, next, total })
    }
}
