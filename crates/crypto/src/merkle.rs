//! The audit log's Merkle tree, hashed as RFC 6962 says (leaf = SHA-256(0x00 ‖ entry), node =
//! SHA-256(0x01 ‖ left ‖ right), the tree over n leaves split at the largest power of two
//! below n): roots, inclusion and consistency proofs, and their verification (RFC 9162
//! §2.1.3.2 and §2.1.4.2, which check every node of a proof and its length).

use ring::digest::{Context, SHA256};

/// A node or leaf hash.
pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut c = Context::new(&SHA256);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// The hash of one entry as a leaf.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0u8], entry])
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1u8], left, right])
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// A running root: leaves pushed in order, the root of everything pushed so far on demand.
/// Holds one hash per set bit of the count (the perfect subtrees along the right edge).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// Perfect subtree roots, largest first, with their sizes.
    stack: Vec<(u64, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        // A leaf is a complete subtree of one: always in place.
        self.push_subtree(1, leaf);
    }

    /// Pushes the root of a complete subtree of `size` leaves (a power of two) in place of
    /// its leaves; the leaves pushed so far must be a multiple of `size`. False, and nothing
    /// pushed, otherwise.
    pub fn push_subtree(&mut self, size: u64, root: Hash) -> bool {
        if !size.is_power_of_two() || !self.size.is_multiple_of(size) {
            return false;
        }
        let mut node = (size, root);
        while let Some(&(s, h)) = self.stack.last() {
            if s != node.0 {
                break;
            }
            self.stack.pop();
            node = (s * 2, node_hash(&h, &node.1));
        }
        self.stack.push(node);
        self.size += size;
        true
    }

    /// The root of the tree over every leaf pushed (RFC 6962 MTH).
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, h) in it {
            acc = node_hash(h, &acc);
        }
        acc
    }
}

/// The root of the tree over `leaves` (RFC 6962 MTH).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

/// Where a proof gets the hash of the subtree over leaves `[a, b)` (RFC 6962 MTH of that
/// range).
pub trait RangeHash {
    fn range(&self, a: u64, b: u64) -> Hash;
}

/// Every leaf at hand.
struct Leaves<'a>(&'a [Hash]);

impl RangeHash for Leaves<'_> {
    fn range(&self, a: u64, b: u64) -> Hash {
        root(&self.0[a as usize..b as usize])
    }
}

/// The inclusion proof of leaf `index` in the tree over `leaves` (RFC 6962 PATH).
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    inclusion_proof_from(index as u64, leaves.len() as u64, &Leaves(leaves))
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves, subtree hashes from `h`.
pub fn inclusion_proof_from(index: u64, size: u64, h: &impl RangeHash) -> Option<Vec<Hash>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path(index, 0, size, h, &mut out);
    Some(out)
}

/// PATH(m, D[a:b]), `m` counted from `a`.
fn path(m: u64, a: u64, b: u64, h: &impl RangeHash, out: &mut Vec<Hash>) {
    let n = b - a;
    if n <= 1 {
        return;
    }
    let k = split(n as usize) as u64;
    if m < k {
        path(m, a, a + k, h, out);
        out.push(h.range(a + k, b));
    } else {
        path(m - k, a + k, b, h, out);
        out.push(h.range(a, a + k));
    }
}

/// The consistency proof between the tree over the first `first` leaves and the tree over
/// all of `leaves` (RFC 6962 PROOF).
pub fn consistency_proof(first: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    consistency_proof_from(first as u64, leaves.len() as u64, &Leaves(leaves))
}

/// The consistency proof between the trees of `first` and `second` leaves, subtree hashes
/// from `h`.
pub fn consistency_proof_from(first: u64, second: u64, h: &impl RangeHash) -> Option<Vec<Hash>> {
    if first == 0 || first > second {
        return None;
    }
    let mut out = Vec::new();
    subproof(first, 0, second, true, h, &mut out);
    Some(out)
}

/// SUBPROOF(m, D[a:b], whole), `m` counted from `a`.
fn subproof(m: u64, a: u64, b: u64, whole: bool, h: &impl RangeHash, out: &mut Vec<Hash>) {
    let n = b - a;
    if m == n {
        if !whole {
            out.push(h.range(a, b));
        }
        return;
    }
    let k = split(n as usize) as u64;
    if m <= k {
        subproof(m, a, a + k, whole, h, out);
        out.push(h.range(a + k, b));
    } else {
        subproof(m - k, a + k, b, false, h, out);
        out.push(h.range(a, a + k));
    }
}

/// The roots of the complete, aligned subtrees of `2^block_level` leaves and more, kept as
/// leaves are pushed: with them, a proof over a log of any size needs the leaves of a few
/// blocks at most (about 64 bytes a block of memory, all levels together).
#[derive(Debug, Clone)]
pub struct SubtreeCache {
    block_level: u32,
    /// `levels[i][j]`: the root over leaves `[j << (block_level + i), (j + 1) << (block_level + i))`.
    levels: Vec<Vec<Hash>>,
    /// The leaves of the block being filled.
    block: Vec<Hash>,
    size: u64,
}

impl SubtreeCache {
    pub fn new(block_level: u32) -> Self {
        Self {
            block_level,
            levels: Vec::new(),
            block: Vec::new(),
            size: 0,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Leaves per block.
    pub fn block_len(&self) -> u64 {
        1 << self.block_level
    }

    pub fn push(&mut self, leaf: Hash) {
        self.block.push(leaf);
        self.size += 1;
        if self.block.len() as u64 == self.block_len() {
            let node = root(&self.block);
            self.block.clear();
            self.add_block(node);
        }
    }

    /// Pushes a whole block by its root, when no block is part-filled. False, and nothing
    /// pushed, otherwise.
    pub fn push_block(&mut self, root: Hash) -> bool {
        if !self.block.is_empty() {
            return false;
        }
        self.size += self.block_len();
        self.add_block(root);
        true
    }

    /// The roots of the complete blocks, in order.
    pub fn blocks(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    fn add_block(&mut self, mut node: Hash) {
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(node);
            let row = &self.levels[level];
            if !row.len().is_multiple_of(2) {
                break;
            }
            node = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    /// The root over `[a, a + 2^level)`, when that subtree is complete, aligned and at least
    /// a block.
    fn get(&self, a: u64, level: u32) -> Option<Hash> {
        let row = self.levels.get(level.checked_sub(self.block_level)? as usize)?;
        row.get((a >> level) as usize).copied()
    }
}

/// Subtree hashes from a cache, and below a block from leaves read for the purpose: ranges
/// whose leaves are not at hand are noted in `missing` (their hashes are then wrong: ask
/// again once they are fetched).
pub struct CachedRanges<'a> {
    pub cache: &'a SubtreeCache,
    pub leaves: &'a std::collections::BTreeMap<u64, Hash>,
    pub missing: std::cell::RefCell<std::collections::BTreeSet<u64>>,
}

impl RangeHash for CachedRanges<'_> {
    fn range(&self, a: u64, b: u64) -> Hash {
        let n = b - a;
        if n == 1 {
            return match self.leaves.get(&a) {
                Some(h) => *h,
                None => {
                    self.missing.borrow_mut().insert(a);
                    [0; 32]
                }
            };
        }
        if n.is_power_of_two()
            && a.is_multiple_of(n)
            && let Some(h) = self.cache.get(a, n.trailing_zeros())
        {
            return h;
        }
        let k = split(n as usize) as u64;
        node_hash(&self.range(a, a + k), &self.range(a + k, b))
    }
}

/// Whether `proof` shows `leaf` at `index` in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows that the tree of `first` leaves with root `first_root` is a prefix
/// of the tree of `second` leaves with root `second_root`.
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 || first > second || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *first_root && sr == *second_root && s == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let v: Vec<u8> = (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// The inputs of the RFC 6962 / Certificate Transparency reference tree.
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| {
            let bytes: Vec<u8> = (0..s.len() / 2)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            leaf_hash(&bytes)
        })
        .collect()
    }

    /// Published roots for the first 0..=8 leaves.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_published_vectors() {
        let leaves = ct_leaves();
        for n in 0..=8 {
            assert_eq!(root(&leaves[..n]), h(CT_ROOTS[n]), "size {n}");
        }
    }

    #[test]
    fn proofs_match_the_published_vectors() {
        let leaves = ct_leaves();
        let inclusion: [(usize, usize, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (i, n, want) in inclusion {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(inclusion_proof(i, &leaves[..n]).unwrap(), want, "inclusion {i} of {n}");
            assert!(verify_inclusion(i as u64, n as u64, &leaves[i], &want, &h(CT_ROOTS[n])));
        }
        let consistency: [(usize, usize, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in consistency {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(consistency_proof(m, &leaves[..n]).unwrap(), want, "consistency {m}→{n}");
            assert!(verify_consistency(
                m as u64,
                n as u64,
                &h(CT_ROOTS[m]),
                &h(CT_ROOTS[n]),
                &want
            ));
        }
    }

    /// A tree rebuilt from its blocks' roots and the leaves after them has the same root
    /// and answers the same proofs as one built from every leaf.
    #[test]
    fn a_tree_rebuilt_from_block_roots_equals_the_tree_of_every_leaf() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let (mut whole, mut cache) = (Frontier::new(), SubtreeCache::new(3));
        for l in &leaves {
            whole.push(*l);
            cache.push(*l);
        }
        assert_eq!(cache.blocks().len(), 37);
        let (mut f, mut c) = (Frontier::new(), SubtreeCache::new(3));
        for b in cache.blocks() {
            assert!(f.push_subtree(8, *b) && c.push_block(*b));
        }
        for l in &leaves[296..] {
            f.push(*l);
            c.push(*l);
        }
        assert_eq!((f.size(), f.root()), (whole.size(), whole.root()));
        assert_eq!(c.size(), 300);
        for (a, level) in [(0, 3), (64, 6), (256, 5), (128, 7)] {
            assert_eq!(c.get(a, level), cache.get(a, level), "[{a}, +2^{level})");
        }
        // Out of place: nothing pushed.
        assert!(!f.push_subtree(8, leaves[0]) && !c.push_block(leaves[0]));
        assert!(!Frontier::new().push_subtree(6, leaves[0]));
        assert_eq!(f.root(), whole.root());
    }

    /// Every proof of every shape verifies; a changed node, a wrong index or size, a proof
    /// one node short or long, and the wrong roots are all refused.
    #[test]
    fn proofs_from_the_subtree_cache_equal_proofs_from_every_leaf() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        // Blocks of 8 leaves: a 300-leaf log has 37 full blocks and 3 levels above them.
        let mut cache = SubtreeCache::new(3);
        for l in &leaves {
            cache.push(*l);
        }
        let ask = |known: &std::collections::BTreeMap<u64, Hash>, index: u64, size: u64, first: Option<u64>| {
            let h = CachedRanges {
                cache: &cache,
                leaves: known,
                missing: Default::default(),
            };
            let proof = match first {
                None => inclusion_proof_from(index, size, &h),
                Some(m) => consistency_proof_from(m, size, &h),
            };
            (proof, h.missing.into_inner())
        };
        let mut fetched = 0;
        for size in [1u64, 2, 7, 8, 9, 64, 65, 100, 255, 256, 257, 299, 300] {
            for index in [0, 1, size / 3, size / 2, size - 1] {
                for first in [None, Some(index + 1)] {
                    let none = std::collections::BTreeMap::new();
                    let (_, missing) = ask(&none, index, size, first);
                    let known = missing.iter().map(|&i| (i, leaves[i as usize])).collect();
                    let (proof, still) = ask(&known, index, size, first);
                    assert!(still.is_empty());
                    let d = &leaves[..size as usize];
                    let expected = match first {
                        None => inclusion_proof(index as usize, d),
                        Some(m) => consistency_proof(m as usize, d),
                    };
                    assert_eq!(proof, expected, "index {index} first {first:?} size {size}");
                    // Only leaves of uncached blocks are read: a few blocks' worth at most.
                    assert!(missing.len() <= 4 * 8, "{} leaves for {index} of {size}", missing.len());
                    fetched += missing.len();
                }
            }
        }
        assert!(fetched > 0);
    }

    #[test]
    fn proofs_round_trip_and_tampering_fails() {
        let leaves: Vec<Hash> = (0u32..37).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=leaves.len() {
            let d = &leaves[..n];
            let r = root(d);
            for i in 0..n {
                let p = inclusion_proof(i, d).unwrap();
                assert!(verify_inclusion(i as u64, n as u64, &d[i], &p, &r), "{i} of {n}");
                // (the same path can fit a bigger tree's shape; the root, which heads bind to a
                // size, is what tells them apart)
                if n < leaves.len() {
                    let bigger = root(&leaves[..n + 1]);
                    assert!(!verify_inclusion(i as u64, n as u64 + 1, &d[i], &p, &bigger));
                }
                if n > 1 {
                    let other = (i + 1) % n;
                    assert!(!verify_inclusion(other as u64, n as u64, &d[i], &p, &r) || d[other] == d[i]);
                }
                for j in 0..p.len() {
                    let mut bad = p.clone();
                    bad[j][0] ^= 1;
                    assert!(!verify_inclusion(i as u64, n as u64, &d[i], &bad, &r));
                }
                let mut longer = p.clone();
                longer.push(r);
                assert!(!verify_inclusion(i as u64, n as u64, &d[i], &longer, &r));
                if !p.is_empty() {
                    assert!(!verify_inclusion(i as u64, n as u64, &d[i], &p[..p.len() - 1], &r));
                }
            }
            for m in 1..=n {
                let p = consistency_proof(m, d).unwrap();
                let rm = root(&d[..m]);
                assert!(verify_consistency(m as u64, n as u64, &rm, &r, &p), "{m}→{n}");
                if m < n {
                    assert!(!verify_consistency(m as u64, n as u64, &r, &r, &p));
                    for j in 0..p.len() {
                        let mut bad = p.clone();
                        bad[j][31] ^= 0x80;
                        assert!(!verify_consistency(m as u64, n as u64, &rm, &r, &bad));
                    }
                    assert!(!verify_consistency(m as u64, n as u64, &rm, &r, &p[..p.len() - 1]));
                }
            }
        }
    }
}
