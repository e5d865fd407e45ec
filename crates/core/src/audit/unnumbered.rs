//! An entry ready but for its index: rendered on the request's task, numbered in the store's
//! transaction. The journal keeps entries in this form until they are copied into the log,
//! so it also has a byte encoding: length-prefixed fields, no interpretation needed.

use super::entry::{AuditDraft, Rendered};
use carevault_crypto::IndexKey;
use carevault_crypto::merkle;
use carevault_storage::{AuditMaker, AuditRecord};
use std::sync::Arc;

/// The entry and its search columns, all but the index.
#[derive(Debug, Clone)]
pub(crate) struct Unnumbered {
    pub(crate) recorded: i64,
    pub(crate) agent: String,
    pub(crate) patient: Option<String>,
    pub(crate) subtype: String,
    pub(crate) outcome: String,
    pub(crate) entity: Option<String>,
    pub(crate) rendered: Rendered,
}

/// Marks an absent optional field in the encoding.
const NONE: u32 = u32::MAX;

impl Unnumbered {
    pub(crate) fn of(draft: &AuditDraft) -> Self {
        Self {
            recorded: draft.recorded,
            agent: draft.agent.who.clone(),
            patient: draft.patient.clone(),
            subtype: draft.subtype.clone(),
            outcome: draft.outcome.code().to_owned(),
            entity: draft.entity.clone(),
            rendered: draft.rendered(),
        }
    }

    /// The maker the store calls with the entry's index, inside its transaction; only the
    /// index, a leaf hash and a MAC are left to do there.
    pub(crate) fn maker(self, key: IndexKey) -> AuditMaker {
        AuditMaker(Arc::new(move |index| {
            let body = self.rendered.with_index(index);
            AuditRecord {
                index,
                recorded: self.recorded,
                mac: key.mac(&body),
                leaf: merkle::leaf_hash(&body).to_vec(),
                agent: self.agent.clone(),
                patient: self.patient.clone(),
                subtype: self.subtype.clone(),
                outcome: self.outcome.clone(),
                entity: self.entity.clone(),
                body,
            }
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.recorded.to_le_bytes());
        for field in [
            Some(self.agent.as_bytes()),
            self.patient.as_deref().map(str::as_bytes),
            Some(self.subtype.as_bytes()),
            Some(self.outcome.as_bytes()),
            self.entity.as_deref().map(str::as_bytes),
            Some(self.rendered.tail()),
        ] {
            match field {
                Some(bytes) => {
                    // Fields are short (ids, codes, one rendered entry): far below 4 GiB.
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&NONE.to_le_bytes()),
            }
        }
    }

    /// The entry `encode` wrote, or `None` if `bytes` is not one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let recorded = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let text = |b: Vec<u8>| String::from_utf8(b).ok();
        let agent = text(r.field()??)?;
        let patient = r.field()?.map(text).map_or(Some(None), |t| t.map(Some))?;
        let subtype = text(r.field()??)?;
        let outcome = text(r.field()??)?;
        let entity = r.field()?.map(text).map_or(Some(None), |t| t.map(Some))?;
        let tail = r.field()??;
        r.0.is_empty().then_some(Self {
            recorded,
            agent,
            patient,
            subtype,
            outcome,
            entity,
            rendered: Rendered::from_tail(tail),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A length-prefixed field: `Some(None)` for an absent one, `None` if malformed.
    fn field(&mut self) -> Option<Option<Vec<u8>>> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        if len == NONE {
            return Some(None);
        }
        Some(Some(self.take(len as usize)?.to_vec()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::audit::{AuditAgent, Outcome};

    fn draft(patient: Option<&str>) -> AuditDraft {
        AuditDraft {
            recorded: 1_700_000_000_123,
            subtype: "read".into(),
            action: 'R',
            outcome: Outcome::Success,
            agent: AuditAgent {
                who: "user:abc".into(),
                role: Some("physician".into()),
                client: None,
                address: Some("127.0.0.1".into()),
            },
            entity: Some("Patient/x1".into()),
            patient: patient.map(str::to_owned),
            query_tag: None,
            purpose: Some("TREAT".into()),
            detail: Vec::new(),
        }
    }

    #[test]
    fn an_encoded_entry_decodes_to_the_same_entry() {
        for patient in [Some("p-1"), None] {
            let d = draft(patient);
            let mut bytes = Vec::new();
            Unnumbered::of(&d).encode(&mut bytes);
            let back = Unnumbered::decode(&bytes).expect("decodes");
            assert_eq!(back.rendered.with_index(7), d.render(7));
            assert_eq!(
                (
                    back.recorded,
                    back.agent.as_str(),
                    back.patient.as_deref(),
                    back.entity.as_deref()
                ),
                (d.recorded, "user:abc", patient, Some("Patient/x1"))
            );
            assert_eq!((back.subtype.as_str(), back.outcome.as_str()), ("read", "0"));
            // Cut short or with bytes to spare, it is not an entry.
            assert!(Unnumbered::decode(&bytes[..bytes.len() - 1]).is_none());
            bytes.push(0);
            assert!(Unnumbered::decode(&bytes).is_none());
        }
    }
}
