use super::*;
use crate::receipt::{Cumulative, UsageReceipt, RECEIPT_VERSION};

fn h(text: &str) -> Hash {
    hex32::parse(text).expect("hex")
}

/// RFC 6962's reference inputs (the Certificate Transparency test data).
fn reference_leaves() -> Vec<Hash> {
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
    .map(|t| leaf_hash(&hex::decode(t).expect("hex")))
    .collect()
}

/// The published tree heads for sizes 0..=8 over those inputs.
const REFERENCE_ROOTS: [&str; 9] = [
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
fn receipt_tree_matches_rfc6962_reference_heads_both_ways() {
    let leaves = reference_leaves();
    let mut acc = ReceiptAccumulator::new();
    assert_eq!(acc.root(), h(REFERENCE_ROOTS[0]));
    for n in 1..=leaves.len() {
        acc.push(leaves[n - 1]);
        assert_eq!(acc.size(), n as u64);
        assert_eq!(
            root_of(&leaves[..n]),
            h(REFERENCE_ROOTS[n]),
            "root_of, size {n}"
        );
        assert_eq!(acc.root(), h(REFERENCE_ROOTS[n]), "accumulator, size {n}");
    }
}

#[test]
fn receipt_tree_matches_rfc6962_reference_paths() {
    let leaves = reference_leaves();
    let root = h(REFERENCE_ROOTS[8]);
    let cases: [(usize, [&str; 3]); 2] = [
        (
            0,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, expected) in cases {
        let path = inclusion_path(&leaves, index).expect("path");
        assert_eq!(path, expected.map(h).to_vec(), "leaf {index}");
        verify_inclusion(&leaves[index], index as u64, 8, &path, &root).expect("verifies");
    }
}

#[test]
fn receipt_tree_every_path_verifies_and_any_change_fails() {
    let leaves: Vec<Hash> = (0..41u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    for n in 1..=leaves.len() {
        let tree = &leaves[..n];
        let root = root_of(tree);
        for i in 0..n {
            let path = inclusion_path(tree, i).expect("path");
            let (index, size) = (i as u64, n as u64);
            verify_inclusion(&tree[i], index, size, &path, &root).expect("verifies");
            // another leaf, index or sibling: refused (the size alone is not bound by a path:
            // the tree head it goes with is, on chain, with the voucher's seq)
            let other = leaf_hash(b"not a leaf of this tree");
            assert!(verify_inclusion(&other, index, size, &path, &root).is_err());
            if n > 1 {
                let wrong = (i + 1) % n;
                assert!(verify_inclusion(&tree[i], wrong as u64, size, &path, &root).is_err());
            }
            assert!(verify_inclusion(&tree[i], index, size, &path, &other).is_err());
            for j in 0..path.len() {
                let mut bent = path.clone();
                bent[j][0] ^= 1;
                assert!(verify_inclusion(&tree[i], index, size, &bent, &root).is_err());
            }
            let mut longer = path.clone();
            longer.push(root);
            assert!(verify_inclusion(&tree[i], index, size, &longer, &root).is_err());
            if !path.is_empty() {
                let shorter = &path[..path.len() - 1];
                assert!(verify_inclusion(&tree[i], index, size, shorter, &root).is_err());
            }
        }
        assert!(inclusion_path(tree, n).is_err());
        assert!(verify_inclusion(&tree[0], n as u64, n as u64, &[], &root).is_err());
    }
}

fn receipt(sequence: u64, cumulative_charge: u64) -> UsageReceipt {
    UsageReceipt {
        version: RECEIPT_VERSION,
        request_id: format!("chatcmpl-{sequence}"),
        account: format!("ed25519:{}", "ab".repeat(32)),
        model: "smollm2".into(),
        finish: "stop".into(),
        tokens: TokenCounts {
            prompt_tokens: 10 + sequence,
            cached_tokens: 2,
            completion_tokens: 7,
        },
        request_sha256: "11".repeat(32),
        response_sha256: "22".repeat(32),
        charge: 5,
        price_table_sha256: "33".repeat(32),
        issued_at: 1_800_000_000 + sequence,
        sequence,
        cumulative: Cumulative {
            requests: sequence,
            tokens: TokenCounts::default(),
            charge: cumulative_charge,
        },
    }
}

#[test]
fn receipt_tree_proof_round_trip_and_every_altered_field_fails() {
    let key = [7u8; 32];
    let model = [9u8; 32];
    let receipts: Vec<UsageReceipt> = (1..=13).map(|s| receipt(s, 5 * s)).collect();
    let leaves: Vec<ReceiptLeaf> = receipts
        .iter()
        .map(|r| ReceiptLeaf::from_receipt(r, key, model))
        .collect();
    let account = receipts[0].account.clone();
    for r in &receipts {
        let proof = build_proof("0:00", &account, &leaves, r.sequence).expect("proof");
        let json = serde_json::to_vec(&proof).expect("json");
        let parsed = ReceiptProof::from_json(&json).expect("parse");
        let checked = parsed.check(r, &key).expect("checks");
        assert_eq!(checked.tree_size, 13);
        assert_eq!(checked.settled_cumulative_charge, 65);
        assert_eq!(checked.model_sha256, model);
        // The guest's accumulator reaches the same head.
        let mut acc = ReceiptAccumulator::new();
        leaves.iter().for_each(|l| acc.push(l.hash()));
        assert_eq!(acc.root(), checked.root);
    }
    let proof = build_proof("0:00", &account, &leaves, 4).expect("proof");
    let r = &receipts[3];
    // Every field of the receipt, altered: the proof no longer fits it.
    let mut altered = Vec::new();
    let mut x = r.clone();
    x.request_id.push('x');
    altered.push(x);
    let mut x = r.clone();
    x.account = format!("ed25519:{}", "cd".repeat(32));
    altered.push(x);
    let mut x = r.clone();
    x.tokens.completion_tokens += 1;
    altered.push(x);
    let mut x = r.clone();
    x.tokens.cached_tokens += 1;
    altered.push(x);
    let mut x = r.clone();
    x.charge -= 1;
    altered.push(x);
    let mut x = r.clone();
    x.cumulative.charge += 1;
    altered.push(x);
    let mut x = r.clone();
    x.issued_at += 1;
    altered.push(x);
    let mut x = r.clone();
    x.sequence = 5;
    altered.push(x);
    for x in &altered {
        assert!(proof.check(x, &key).is_err(), "{x:?}");
    }
    // The proof's own leaf fields, altered (so they match an altered receipt): the path no
    // longer leads to the root.
    let mut forged = proof.clone();
    forged.receipt.leaf.tokens.completion_tokens += 1;
    let mut forged_receipt = r.clone();
    forged_receipt.tokens.completion_tokens += 1;
    assert!(forged.check(&forged_receipt, &key).is_err());
    let mut forged = proof.clone();
    forged.receipt.leaf.model_sha256 = [0; 32];
    assert!(forged.check(r, &key).is_err());
    let mut forged = proof.clone();
    forged.settled.leaf.cumulative_charge += 1;
    assert!(forged.check(r, &key).is_err());
    let mut forged = proof.clone();
    forged.root[31] ^= 1;
    assert!(forged.check(r, &key).is_err());
    let mut forged = proof.clone();
    forged.tree_size = 12;
    assert!(forged.check(r, &key).is_err());
    // Another receipt key.
    assert!(proof.check(r, &[8u8; 32]).is_err());
    // Not settled: receipt 14 is beyond the tree.
    assert!(build_proof("0:00", &account, &leaves, 14).is_err());
    assert!(build_proof("0:00", &account, &leaves, 0).is_err());
    // A gap in the ledger's receipts.
    let mut gap = leaves.clone();
    gap.remove(5);
    assert!(build_proof("0:00", &account, &gap, 3).is_err());
}

#[test]
fn receipt_tree_proof_documents_refuse_bad_input() {
    for bad in [&b""[..], b"{}", b"[]", b"{\"version\":2}", b"not json"] {
        assert!(ReceiptProof::from_json(bad).is_err());
    }
    assert!(ReceiptProof::from_json(&vec![b' '; 70 * 1024]).is_err());
}

/// The fuzz seed (`attestation/fuzz/seeds/receipt_proof/proof.json`) is a real proof of
/// receipt 3 of [`receipt`]'s account in a tree of 5: it parses and checks.
#[test]
fn receipt_tree_fuzz_seed_is_a_valid_proof() {
    let key = [7u8; 32];
    let leaves: Vec<ReceiptLeaf> = (1..=5)
        .map(|s| ReceiptLeaf::from_receipt(&receipt(s, 5 * s), key, [9u8; 32]))
        .collect();
    let built = build_proof("0:00", &receipt(1, 5).account, &leaves, 3).expect("proof");
    let seed = include_bytes!("../../fuzz/seeds/receipt_proof/proof.json");
    if std::env::var_os("COCOON_WRITE_SEED").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fuzz/seeds/receipt_proof/proof.json"
            ),
            built.to_json(),
        )
        .expect("write seed");
        return;
    }
    let parsed = ReceiptProof::from_json(seed).expect("seed parses");
    assert_eq!(parsed, built);
    parsed.check(&receipt(3, 15), &key).expect("seed checks");
}
