//! Receipt commitments: an RFC 6962 Merkle tree over one account's receipts under one
//! receipt key, so a settlement on chain can commit to every request it pays for without
//! revealing any of them.
//!
//! Why this shape:
//! - **One tree per (account, receipt key), leaves in sequence order.** A receipt's
//!   `sequence` is 1, 2, 3… per account under a key, so leaf `i` is receipt `i + 1` and a
//!   tree of size `n` covers receipts `1..=n`. Each voucher (`cocoon_billing::layout::
//!   Voucher`) the guest signs for sequence `n` carries the tree head of size `n`; the
//!   escrow records it. A later head covers every earlier receipt, so the latest recorded
//!   root proves any settled receipt, and the chain keeps only 32 bytes per guest key.
//! - **RFC 6962 hashing** (`SHA-256(0x00 ‖ leaf)`, `SHA-256(0x01 ‖ left ‖ right)`, the
//!   largest-power-of-two split): the transparency-log standard, with independent
//!   implementations to check against (the tests use its published test vectors), and
//!   leaf and node hashes that cannot be confused.
//! - **Leaves are fixed-width binary** ([`ReceiptLeaf::encode`]), not the JWS: a proof shows
//!   the fields an auditor needs (counts, charge, model, keys) and hashes of the rest
//!   (request id, account), nothing of any prompt or answer.
//! - **The guest keeps a frontier** ([`ReceiptAccumulator`]: one hash per perfect subtree,
//!   O(log n)), not the leaves; the host agent, which stores every receipt, rebuilds the
//!   tree to make proofs ([`inclusion_path`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::receipt::{TokenCounts, UsageReceipt};
use crate::{Error, Result};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// What a leaf's bytes start with (so no other Cocoon structure hashes the same).
pub const LEAF_DOMAIN: &[u8] = b"cocoon/receipt-leaf/v1";

/// Longest inclusion path accepted (a tree of 2^64 leaves has 64 levels).
pub const MAX_PATH_LEN: usize = 64;

/// `SHA-256(0x00 ‖ data)`: RFC 6962's leaf hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: RFC 6962's interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The head of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// One receipt as a leaf: what it proves about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLeaf {
    /// The guest's receipt key (Ed25519), which signed the receipt.
    #[serde(with = "hex32")]
    pub receipt_key: Hash,
    /// SHA-256 of the account string (`ed25519:<hex>`).
    #[serde(with = "hex32")]
    pub account_sha256: Hash,
    /// The receipt's `sequence` (leaf index + 1).
    pub sequence: u64,
    /// SHA-256 of the response id the client saw.
    #[serde(with = "hex32")]
    pub request_id_sha256: Hash,
    /// SHA-256 of the model that served it (the measured config's `model.sha256`).
    #[serde(with = "hex32")]
    pub model_sha256: Hash,
    /// This request's tokens.
    pub tokens: TokenCounts,
    /// This request's charge (nanoton).
    pub charge: u64,
    /// The account's cumulative charge under the key after this request: what a voucher
    /// of this sequence makes the escrow pay in total.
    pub cumulative_charge: u64,
    /// Unix seconds the receipt was signed.
    pub issued_at: u64,
}

impl ReceiptLeaf {
    /// The leaf of `receipt`, signed by `receipt_key`, served by the model `model_sha256`.
    pub fn from_receipt(receipt: &UsageReceipt, receipt_key: Hash, model_sha256: Hash) -> Self {
        Self {
            receipt_key,
            account_sha256: sha256(receipt.account.as_bytes()),
            sequence: receipt.sequence,
            request_id_sha256: sha256(receipt.request_id.as_bytes()),
            model_sha256,
            tokens: receipt.tokens,
            charge: receipt.charge,
            cumulative_charge: receipt.cumulative.charge,
            issued_at: receipt.issued_at,
        }
    }

    /// The leaf's bytes: [`LEAF_DOMAIN`], then every field in declaration order, hashes as
    /// 32 bytes and integers as big-endian u64.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEAF_DOMAIN.len() + 4 * 32 + 8 * 7);
        out.extend_from_slice(LEAF_DOMAIN);
        out.extend_from_slice(&self.receipt_key);
        out.extend_from_slice(&self.account_sha256);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.request_id_sha256);
        out.extend_from_slice(&self.model_sha256);
        for value in [
            self.tokens.prompt_tokens,
            self.tokens.cached_tokens,
            self.tokens.completion_tokens,
            self.charge,
            self.cumulative_charge,
            self.issued_at,
        ] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out
    }

    /// Its RFC 6962 leaf hash.
    pub fn hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// The fields of `receipt` this leaf states but does not match, by name (empty: it
    /// is the receipt's leaf). The model and receipt key are not in a receipt.
    pub fn mismatches(&self, receipt: &UsageReceipt) -> Vec<&'static str> {
        let expected = Self::from_receipt(receipt, self.receipt_key, self.model_sha256);
        let mut out = Vec::new();
        let checks = [
            (self.account_sha256 == expected.account_sha256, "account"),
            (self.sequence == expected.sequence, "sequence"),
            (
                self.request_id_sha256 == expected.request_id_sha256,
                "request_id",
            ),
            (self.tokens == expected.tokens, "tokens"),
            (self.charge == expected.charge, "charge"),
            (
                self.cumulative_charge == expected.cumulative_charge,
                "cumulative.charge",
            ),
            (self.issued_at == expected.issued_at, "issued_at"),
        ];
        for (ok, name) in checks {
            if !ok {
                out.push(name);
            }
        }
        out
    }
}

/// The guest's running tree: the roots of the perfect subtrees the leaves so far make,
/// largest (leftmost) first. Appending is O(log n) hashes; so is the head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptAccumulator {
    size: u64,
    peaks: Vec<Hash>,
}

impl ReceiptAccumulator {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        // Each trailing 1 bit of the old size is a perfect subtree of the new leaf's size
        // waiting to the left: merge it.
        let mut size = self.size;
        while size & 1 == 1 {
            match self.peaks.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                None => break,
            }
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The tree head (RFC 6962 `MTH`) over every leaf so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// RFC 6962 `MTH(D[n])` over leaf hashes.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// RFC 6962 `PATH(index, D[n])`: the audit path of leaf `index` in the tree over `leaves`.
pub fn inclusion_path(leaves: &[Hash], index: usize) -> Result<Vec<Hash>> {
    if index >= leaves.len() {
        return Err(Error::Malformed {
            what: "receipt inclusion proof",
            detail: format!("leaf {index} is outside a tree of {} leaves", leaves.len()),
        });
    }
    let mut path = Vec::new();
    path_into(leaves, index, &mut path);
    Ok(path)
}

fn path_into(leaves: &[Hash], index: usize, path: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        path_into(&leaves[..k], index, path);
        path.push(root_of(&leaves[k..]));
    } else {
        path_into(&leaves[k..], index - k, path);
        path.push(root_of(&leaves[..k]));
    }
}

/// The head a leaf hash and its audit path make (RFC 9162 §2.1.3.2), for leaf `index` of a
/// tree of `size` leaves. Errors when the path cannot belong to such a tree.
pub fn root_from_path(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Result<Hash> {
    let bad = |detail: String| Error::Malformed {
        what: "receipt inclusion proof",
        detail,
    };
    if index >= size {
        return Err(bad(format!(
            "leaf {index} is outside a tree of {size} leaves"
        )));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad(format!("path of {} hashes is too long", path.len())));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return Err(bad("path is longer than the tree is deep".into()));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(bad("path is shorter than the tree is deep".into()));
    }
    Ok(r)
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose head is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<()> {
    let computed = root_from_path(leaf, index, size, path)?;
    if &computed != root {
        return Err(Error::BadSignature(format!(
            "receipt inclusion proof leads to root {}, not {}",
            hex::encode(computed),
            hex::encode(root)
        )));
    }
    Ok(())
}

/// Format version of [`ReceiptProof`].
pub const RECEIPT_PROOF_VERSION: u32 = 1;

/// A leaf with its audit path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenLeaf {
    pub leaf: ReceiptLeaf,
    /// Sibling hashes, leaf level first (hex).
    #[serde(with = "hex32_vec")]
    pub path: Vec<Hash>,
}

/// What `cocoon-host-agent receipts proof` writes and `cocoon-verify receipt --onchain`
/// reads: a receipt's leaf and path in the tree a settled voucher committed to, and that
/// voucher's own leaf (the last of the tree), whose cumulative charge is what the escrow
/// paid for the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptProof {
    pub version: u32,
    /// The escrow that recorded the root (raw `0:<hex>`).
    pub escrow: String,
    /// The account (`ed25519:<hex>`).
    pub account: String,
    /// Leaves in the tree = the settled voucher's `seq`.
    pub tree_size: u64,
    /// The tree head the settled voucher carried (hex).
    #[serde(with = "hex32")]
    pub root: Hash,
    /// The receipt's leaf.
    pub receipt: ProvenLeaf,
    /// The settled voucher's leaf (`sequence` = `tree_size`).
    pub settled: ProvenLeaf,
}

/// What a [`ReceiptProof`] establishes offline (before comparing `root` with the chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedProof {
    pub root: Hash,
    pub tree_size: u64,
    /// The escrow's total for the key once this root was recorded.
    pub settled_cumulative_charge: u64,
    pub model_sha256: Hash,
    pub receipt_key: Hash,
}

impl ReceiptProof {
    /// Parses a proof document (bounded: 64 KiB).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > 64 * 1024 {
            return Err(Error::Malformed {
                what: "receipt proof",
                detail: format!("{} bytes, more than 64 KiB", bytes.len()),
            });
        }
        let proof: Self = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
            what: "receipt proof",
            detail: e.to_string(),
        })?;
        if proof.version != RECEIPT_PROOF_VERSION {
            return Err(Error::Unsupported {
                what: "receipt proof version",
                value: proof.version.to_string(),
            });
        }
        Ok(proof)
    }

    /// The document as JSON (what [`Self::from_json`] reads).
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, integers and arrays of them always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks, offline, that the proof is about `receipt` (verified already under its
    /// receipt key) and that both leaves lead to `root` in a tree of `tree_size`.
    pub fn check(&self, receipt: &UsageReceipt, receipt_key: &Hash) -> Result<CheckedProof> {
        let bad = |detail: String| Error::Policy {
            rule: "receipt_proof",
            observed: detail,
            expected: "a proof of this receipt".into(),
        };
        let leaf = &self.receipt.leaf;
        let settled = &self.settled.leaf;
        if &leaf.receipt_key != receipt_key || &settled.receipt_key != receipt_key {
            return Err(bad("the proof's leaves name another receipt key".into()));
        }
        let mismatched = leaf.mismatches(receipt);
        if !mismatched.is_empty() {
            return Err(bad(format!(
                "the proof's leaf differs from the receipt in {}",
                mismatched.join(", ")
            )));
        }
        if sha256(self.account.as_bytes()) != leaf.account_sha256
            || settled.account_sha256 != leaf.account_sha256
        {
            return Err(bad("the settled leaf is another account's".into()));
        }
        if settled.model_sha256 != leaf.model_sha256 {
            return Err(bad("the two leaves name different models".into()));
        }
        if settled.sequence != self.tree_size || leaf.sequence == 0 {
            return Err(bad(format!(
                "leaf sequences {} and {} do not fit a tree of {}",
                leaf.sequence, settled.sequence, self.tree_size
            )));
        }
        if leaf.sequence > self.tree_size {
            return Err(bad(format!(
                "receipt {} is not settled yet: the tree has {} receipts",
                leaf.sequence, self.tree_size
            )));
        }
        verify_inclusion(
            &leaf.hash(),
            leaf.sequence - 1,
            self.tree_size,
            &self.receipt.path,
            &self.root,
        )?;
        verify_inclusion(
            &settled.hash(),
            settled.sequence - 1,
            self.tree_size,
            &self.settled.path,
            &self.root,
        )?;
        Ok(CheckedProof {
            root: self.root,
            tree_size: self.tree_size,
            settled_cumulative_charge: settled.cumulative_charge,
            model_sha256: leaf.model_sha256,
            receipt_key: *receipt_key,
        })
    }
}

/// Builds the proof for receipt `sequence` from every leaf `1..=tree_size` of the account
/// under the key (in sequence order).
pub fn build_proof(
    escrow: &str,
    account: &str,
    leaves: &[ReceiptLeaf],
    sequence: u64,
) -> Result<ReceiptProof> {
    let bad = |detail: String| Error::Malformed {
        what: "receipt proof",
        detail,
    };
    for (i, leaf) in leaves.iter().enumerate() {
        if leaf.sequence != i as u64 + 1 {
            return Err(bad(format!(
                "leaf {i} has sequence {}, expected {}: the receipts are not contiguous",
                leaf.sequence,
                i + 1
            )));
        }
    }
    let Some(last) = leaves.last() else {
        return Err(bad("no receipts".into()));
    };
    let index = usize::try_from(sequence.saturating_sub(1)).unwrap_or(usize::MAX);
    let Some(leaf) = leaves.get(index).filter(|_| sequence > 0) else {
        return Err(bad(format!(
            "receipt {sequence} is not among the {} settled ones",
            leaves.len()
        )));
    };
    let hashes: Vec<Hash> = leaves.iter().map(ReceiptLeaf::hash).collect();
    Ok(ReceiptProof {
        version: RECEIPT_PROOF_VERSION,
        escrow: escrow.to_string(),
        account: account.to_string(),
        tree_size: leaves.len() as u64,
        root: root_of(&hashes),
        receipt: ProvenLeaf {
            leaf: *leaf,
            path: inclusion_path(&hashes, index)?,
        },
        settled: ProvenLeaf {
            leaf: *last,
            path: inclusion_path(&hashes, hashes.len() - 1)?,
        },
    })
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<[u8; 32], String> {
        let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, expected 32", b.len()))
    }
}

mod hex32_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(value.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        if items.len() > super::MAX_PATH_LEN {
            return Err(serde::de::Error::custom(format!(
                "path of {} hashes is too long",
                items.len()
            )));
        }
        items
            .iter()
            .map(|t| super::hex32::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests;
