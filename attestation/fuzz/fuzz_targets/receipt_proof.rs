//! `ReceiptProof::from_json` and its offline check (a proof document comes from the
//! operator, untrusted) on untrusted bytes: never panic; what parses re-serialises and
//! re-parses to the same document, and the check against a fixed receipt never panics.
#![no_main]

use cocoon_attestation::receipt::{Cumulative, TokenCounts, UsageReceipt};
use cocoon_attestation::receipt_tree::{root_from_path, ReceiptProof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = ReceiptProof::from_json(data) {
        let again = ReceiptProof::from_json(&proof.to_json()).expect("re-parses");
        assert_eq!(again, proof);
        let receipt = UsageReceipt {
            version: 2,
            request_id: "chatcmpl-fuzz".into(),
            account: proof.account.clone(),
            model: "m".into(),
            finish: "stop".into(),
            tokens: TokenCounts::default(),
            request_sha256: String::new(),
            response_sha256: String::new(),
            charge: 0,
            price_table_sha256: String::new(),
            issued_at: 0,
            sequence: proof.receipt.leaf.sequence,
            cumulative: Cumulative::default(),
        };
        let _ = proof.check(&receipt, &proof.receipt.leaf.receipt_key);
        let _ = root_from_path(
            &proof.root,
            proof.receipt.leaf.sequence,
            proof.tree_size,
            &proof.receipt.path,
        );
    }
});
