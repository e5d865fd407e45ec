//! Offline verification of the whole audit log: every entry's MAC, leaf hash and own index,
//! the numbering without gaps, every signed head's signature and root, and the heads of the
//! witness file kept outside the database (which catches a truncated tail). The first bad
//! entry is named.

use super::entry::index_of;
use crate::CoreError;
use carevault_crypto::merkle::{self, Frontier, Hash};
use carevault_crypto::{HeadSigner, KeyFile, verify_head};
use carevault_storage::Store;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A head as written to the witness file, one JSON object a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessHead {
    pub size: u64,
    pub root: Hash,
    pub at: i64,
    pub signature: Vec<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

impl WitnessHead {
    pub fn to_line(&self, public_key: &[u8; 32]) -> String {
        json!({"size": self.size, "root": hex(&self.root), "at": self.at,
               "signature": hex(&self.signature), "key": hex(public_key)})
        .to_string()
    }

    pub fn parse_line(line: &str) -> Option<WitnessHead> {
        let v: Value = serde_json::from_str(line).ok()?;
        Some(WitnessHead {
            size: v["size"].as_u64()?,
            root: unhex(v["root"].as_str()?)?.try_into().ok()?,
            at: v["at"].as_i64()?,
            signature: unhex(v["signature"].as_str()?)?,
        })
    }
}

/// What the verifier found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub heads_checked: usize,
    pub witness_checked: usize,
    /// Entries emptied by retention (a prefix of the log; their leaf hashes are kept).
    pub pruned: u64,
    /// The first entry found wrong or missing, if any.
    pub first_bad: Option<u64>,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn bad(&mut self, at: u64, what: String) {
        if self.first_bad.is_none_or(|f| at < f) {
            self.first_bad = Some(at);
        }
        if self.problems.len() < 50 {
            self.problems.push(what);
        }
    }
}

/// Verifies the log in `store` with the key file and the witness file's heads.
pub async fn verify_log<S: Store>(
    store: &S,
    keys: &KeyFile,
    witness: &[WitnessHead],
) -> Result<VerifyReport, CoreError> {
    let key = super::mac_key(keys);
    let public = HeadSigner::derive(keys)?.public_key();
    let heads = store.heads().await?;
    let mut report = VerifyReport::default();
    // The sizes at which the computed root is wanted.
    let mut roots: BTreeMap<u64, Option<Hash>> = BTreeMap::new();
    for h in &heads {
        roots.insert(h.size.max(0) as u64, None);
    }
    for w in witness {
        roots.insert(w.size, None);
    }
    if let Some(r) = roots.get_mut(&0) {
        *r = Some(merkle::empty_root());
    }
    let mut f = Frontier::new();
    let mut expected: i64 = 0;
    // Retention: emptied entries must be a prefix, every one covered by a retention entry.
    let mut pruned: u64 = 0;
    let mut covered: Vec<(u64, u64)> = Vec::new();
    loop {
        let page = store.audit_range(expected, 5_000).await?;
        if page.is_empty() {
            break;
        }
        for r in page {
            let at = expected as u64;
            if r.index != expected {
                report.bad(
                    at,
                    format!("entry {expected} is missing (the next one is numbered {})", r.index),
                );
            }
            let i = r.index as u64;
            if r.body.is_empty() {
                // Emptied by retention: its leaf hash stands for it.
                if pruned == i {
                    pruned = i + 1;
                } else {
                    report.bad(i, format!("entry {i} was emptied after entries that were kept"));
                }
                match <Hash>::try_from(r.leaf.as_slice()) {
                    Ok(leaf) => f.push(leaf),
                    Err(_) => {
                        report.bad(i, format!("entry {i} was emptied and its leaf hash is malformed"));
                        f.push(merkle::leaf_hash(&[]));
                    }
                }
                expected = r.index + 1;
                if let Some(slot) = roots.get_mut(&f.size()) {
                    *slot = Some(f.root());
                }
                continue;
            }
            if !key.verify(&r.body, &r.mac) {
                report.bad(i, format!("entry {i} was changed (its MAC does not match)"));
            } else if let Some(range) = retention_range(&r.body) {
                covered.push(range);
            }
            let leaf = merkle::leaf_hash(&r.body);
            if r.leaf != leaf {
                report.bad(i, format!("entry {i} was changed (its leaf hash does not match)"));
            }
            if index_of(&r.body) != Some(r.index) {
                report.bad(
                    i,
                    format!("entry {i} holds another position's entry (moved or reordered)"),
                );
            }
            // The tree is built from the bodies as they are, so heads judge the content.
            f.push(leaf);
            expected = r.index + 1;
            if let Some(slot) = roots.get_mut(&f.size()) {
                *slot = Some(f.root());
            }
        }
    }
    report.entries = f.size();
    report.pruned = pruned;
    if let Some(first) = first_uncovered(pruned, &covered) {
        report.bad(
            first,
            format!("entry {first} was emptied without a retention entry saying so"),
        );
    }
    for h in &heads {
        report.heads_checked += 1;
        let size = h.size.max(0) as u64;
        let root: Option<Hash> = h.root.as_slice().try_into().ok();
        let Some(root) = root else {
            report.bad(size, format!("the head of size {size} is malformed"));
            continue;
        };
        if !verify_head(&public, size, &root, h.at, &h.signature) {
            report.bad(
                size.saturating_sub(1),
                format!("the head of size {size} has a bad signature"),
            );
            continue;
        }
        check_root(&mut report, &roots, size, &root, "stored head");
    }
    for w in witness {
        report.witness_checked += 1;
        if !verify_head(&public, w.size, &w.root, w.at, &w.signature) {
            report.bad(
                w.size.saturating_sub(1),
                format!("the witness head of size {} has a bad signature", w.size),
            );
            continue;
        }
        check_root(&mut report, &roots, w.size, &w.root, "witness head");
    }
    Ok(report)
}

/// The range `[from, until)` a retention entry says it emptied.
fn retention_range(body: &[u8]) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v["subtype"][0]["code"] != "audit-retention" {
        return None;
    }
    let details = v["entity"].as_array()?.iter().find_map(|e| e["detail"].as_array())?;
    let value = |name: &str| -> Option<u64> {
        details
            .iter()
            .find(|d| d["type"] == name)?
            .get("valueString")?
            .as_str()?
            .parse()
            .ok()
    };
    Some((value("pruned-from")?, value("pruned-until")?))
}

/// The first of the `pruned` leading entries no retention entry covers. Retention only ever
/// extends the emptied prefix, so a retention entry vouches for every entry before its
/// `until`: the newest one covers the older ones too, once they are emptied in their turn.
fn first_uncovered(pruned: u64, covered: &[(u64, u64)]) -> Option<u64> {
    let until = covered.iter().map(|&(_, until)| until).max().unwrap_or(0);
    (until < pruned).then_some(until)
}

fn check_root(report: &mut VerifyReport, roots: &BTreeMap<u64, Option<Hash>>, size: u64, root: &Hash, what: &str) {
    match roots.get(&size).copied().flatten() {
        None => {
            let have = report.entries;
            report.bad(
                have,
                format!("a {what} covers {size} entries but the log holds {have}: entries from {have} on were removed"),
            );
        }
        Some(computed) if computed != *root => {
            report.bad(
                size.saturating_sub(1),
                format!(
                    "the entries up to {size} do not give the root the {what} signed (changed, inserted or removed)"
                ),
            );
        }
        Some(_) => {}
    }
}
