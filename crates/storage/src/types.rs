//! Plain data crossing the storage boundary.

/// Which resource: tenant, type name and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    pub tenant: String,
    pub rtype: String,
    pub id: String,
}

/// What produced a version; history bundles report it as the request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create = 0,
    Update = 1,
    Delete = 2,
}

impl Op {
    pub fn from_i64(n: i64) -> Option<Op> {
        match n {
            0 => Some(Op::Create),
            1 => Some(Op::Update),
            2 => Some(Op::Delete),
            _ => None,
        }
    }
}

/// A version as stored. `body` is the sealed body (empty for a deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub key: ResourceKey,
    pub version: u64,
    pub seq: i64,
    pub last_updated: i64,
    pub op: Op,
    pub key_id: i64,
    /// The patient whose data key sealed the body; empty for the tenant key.
    pub patient: String,
    pub body: Vec<u8>,
}

impl StoredVersion {
    pub fn is_deleted(&self) -> bool {
        self.op == Op::Delete
    }
}

/// What the writer expects the current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The resource must not exist yet.
    Absent,
    /// The current version must be this one.
    Version(u64),
}

/// A version to write, with the blind identifier tags of the new content (replacing the old).
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub key: ResourceKey,
    pub version: u64,
    pub expect: Expect,
    pub last_updated: i64,
    pub op: Op,
    pub key_id: i64,
    pub patient: String,
    pub body: Vec<u8>,
    pub identifier_tags: Vec<Vec<u8>>,
    /// The search index rows of the new content (replacing the old ones).
    pub search_rows: Vec<crate::SearchRow>,
}

/// See [`crate::ResourceStore::facts`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceFacts {
    /// Patient ids of its `_compartment` rows.
    pub patients: Vec<String>,
    /// `(system, code)` of its `_security` rows.
    pub labels: Vec<(String, String)>,
}

/// The index parameter of security labels (`meta.security`).
pub const SECURITY_PARAM: &str = "_security";

/// A version's facts as kept on its `resources` row (column `facts`), so a read by id gets
/// them with the row: entries joined by 0x1F, `p<patient id>` or `l<system>0x1E<code>`.
/// Neither separator occurs in ids, systems or codes.
pub(crate) fn encode_facts(rows: &[crate::SearchRow]) -> String {
    let mut parts = Vec::new();
    for row in rows {
        match row {
            crate::SearchRow::Reference {
                param,
                target_type,
                target_id,
            } if param == COMPARTMENT_PARAM && target_type == "Patient" => parts.push(format!("p{target_id}")),
            crate::SearchRow::Token { param, system, code } if param == SECURITY_PARAM => {
                parts.push(format!("l{system}\u{1e}{code}"));
            }
            _ => {}
        }
    }
    parts.join("\u{1f}")
}

pub(crate) fn decode_facts(s: &str) -> ResourceFacts {
    let mut facts = ResourceFacts::default();
    for part in s.split('\u{1f}') {
        if let Some(p) = part.strip_prefix('p') {
            facts.patients.push(p.to_owned());
        } else if let Some((system, code)) = part.strip_prefix('l').and_then(|l| l.split_once('\u{1e}')) {
            facts.labels.push((system.to_owned(), code.to_owned()));
        }
    }
    facts
}

/// Versions written together or not at all.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub versions: Vec<NewVersion>,
    /// The audit entry of the request making this change, committed with it.
    pub audit: Option<crate::AuditMaker>,
    /// Conditional creates' claims on their conditions (see [`Claim`]).
    pub claims: Vec<Claim>,
    /// Index rows computed again for current versions (see [`Reindex`]).
    pub reindex: Vec<Reindex>,
}

/// The index of a resource's current version computed again, after the index definitions
/// changed (a parameter added, a normalisation changed): replaces its index rows, identifier
/// tags and facts if `version` is still its live current version. A resource written or
/// deleted since is left alone (its rows are already those of its new version); that is not
/// a conflict.
#[derive(Debug, Clone)]
pub struct Reindex {
    pub key: ResourceKey,
    pub version: u64,
    pub identifier_tags: Vec<Vec<u8>>,
    pub search_rows: Vec<crate::SearchRow>,
}

/// A conditional create's claim on its condition: `tag` (a keyed hash of tenant, type and
/// the condition) names the condition, `version` the change set's version that creates the
/// resource. While an earlier claim's resource still stands as it was created, another
/// claim of the same tag fails the whole set with `StoreError::Claimed`: of two concurrent
/// conditional creates, one creates and the other searches again and finds it. A claim
/// whose resource was since changed or deleted is simply taken over. Claims are purged
/// after a while (`purge_claims`); by then any racing create has long finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub tag: Vec<u8>,
    pub version: usize,
}

/// Selects versions for a history: all, one type, or one resource; `since` bounds the
/// update time; `before_seq` is the paging cursor (exclusive).
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub tenant: String,
    pub rtype: Option<String>,
    pub id: Option<String>,
    pub since: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: u32,
    /// Only resources (of `rtype`, which must be set) in one of these patients'
    /// compartments: the caller's reach, applied in the query.
    pub patients: Option<Vec<String>>,
}

/// The compartment key and placeholders a history limited to some patients uses.
pub(crate) fn history_patients(q: &HistoryQuery) -> Option<(i64, &[String])> {
    let t = q.rtype.as_deref()?;
    let p = q.patients.as_deref()?;
    Some((crate::param_key(&q.tenant, t, COMPARTMENT_PARAM), p))
}

/// The index parameter that places a resource in a patient's compartment (written by the
/// core as `_compartment` reference rows).
pub const COMPARTMENT_PARAM: &str = "_compartment";

/// A data key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key_id: i64,
    pub tenant: String,
    pub scope: String,
    pub kek_version: u32,
    pub wrapped: Vec<u8>,
}

/// A data key to store.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub tenant: String,
    pub scope: String,
    pub kek_version: u32,
    pub wrapped: Vec<u8>,
    pub created: i64,
}
