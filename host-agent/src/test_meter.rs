//! Test support shared by the ledger's and the collector's tests: a scratch directory and
//! a meter that signs and journals receipts exactly as the guest's does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use cocoon_attestation::receipt::{
    Cumulative, ReceiptSigner, TokenCounts, UsageReceipt, RECEIPT_VERSION,
};
use cocoon_attestation::receipt_tree::{ReceiptAccumulator, ReceiptLeaf};

/// The model digest the test meter's receipts and vouchers name.
pub(crate) const TEST_MODEL: [u8; 32] = [0x4D; 32];

use crate::ledger::{EpochInfo, JournalReceipt};

/// A directory under the system's temporary one, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cocoon-ledger-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    pub(crate) fn file(&self) -> PathBuf {
        self.0.join("ledger.sqlite3")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A guest boot's meter, as `guest/src/meter.rs` keeps it: per account a sequence and
/// cumulative totals, charge computed from the cumulative tokens (with rounding) and
/// billed as its increase, every receipt journaled at the next index.
pub(crate) struct Meter {
    pub(crate) signer: ReceiptSigner,
    pub(crate) accounts: HashMap<String, (u64, Cumulative)>,
    pub(crate) next_index: u64,
    pub(crate) clock: u64,
    /// Per account the receipts tree, and the head after each sequence (what the voucher
    /// of that sequence commits to).
    trees: HashMap<String, ReceiptAccumulator>,
    roots: HashMap<(String, u64), [u8; 32]>,
}

/// The price of cumulative tokens, in tenths rounded down (so per-request charges vary).
pub(crate) fn price(tokens: &TokenCounts) -> u64 {
    let uncached = tokens.prompt_tokens - tokens.cached_tokens;
    (uncached * 3 + tokens.cached_tokens + tokens.completion_tokens * 7) / 10
}

impl Meter {
    pub(crate) fn boot() -> Self {
        Meter {
            signer: ReceiptSigner::generate().expect("receipt key"),
            accounts: HashMap::new(),
            next_index: 1,
            clock: 1_800_000_000,
            trees: HashMap::new(),
            roots: HashMap::new(),
        }
    }

    /// The receipts tree head of `account` after receipt `sequence` (zeros if none).
    pub(crate) fn root(&self, account: &str, sequence: u64) -> [u8; 32] {
        self.roots
            .get(&(account.to_string(), sequence))
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    /// The next receipt of `account` for a request of `tokens`, not yet signed.
    pub(crate) fn bill(&mut self, account: &str, tokens: TokenCounts) -> UsageReceipt {
        self.clock += 1;
        let (sequence, cumulative) = self.accounts.entry(account.to_string()).or_default();
        let before = cumulative.charge;
        cumulative.requests += 1;
        cumulative.tokens = cumulative.tokens.plus(tokens);
        cumulative.charge = price(&cumulative.tokens).max(before);
        *sequence += 1;
        let receipt = UsageReceipt {
            version: RECEIPT_VERSION,
            request_id: format!("chatcmpl-{account}-{sequence}"),
            account: account.to_string(),
            model: "test-model".into(),
            finish: "stop".into(),
            tokens,
            request_sha256: "11".repeat(32),
            response_sha256: "22".repeat(32),
            charge: cumulative.charge - before,
            price_table_sha256: "33".repeat(32),
            issued_at: self.clock,
            sequence: *sequence,
            cumulative: *cumulative,
        };
        let leaf = ReceiptLeaf::from_receipt(&receipt, self.signer.public_key(), TEST_MODEL);
        let tree = self.trees.entry(account.to_string()).or_default();
        tree.push(leaf.hash());
        self.roots
            .insert((account.to_string(), receipt.sequence), tree.root());
        receipt
    }

    /// Signs `receipt` and journals it at the next index.
    pub(crate) fn journal(&mut self, receipt: &UsageReceipt) -> JournalReceipt {
        let index = self.next_index;
        self.next_index += 1;
        JournalReceipt {
            index,
            receipt: self.signer.sign(receipt).expect("sign"),
            voucher: None,
        }
    }

    /// One request served: billed, signed, journaled.
    pub(crate) fn serve(
        &mut self,
        account: &str,
        prompt: u64,
        cached: u64,
        completion: u64,
    ) -> JournalReceipt {
        let receipt = self.bill(account, tokens(prompt, cached, completion));
        self.journal(&receipt)
    }

    /// `n` requests, alternating between `accounts`, with varied token counts.
    pub(crate) fn serve_many(&mut self, accounts: &[&str], n: u64) -> Vec<JournalReceipt> {
        (0..n)
            .map(|i| {
                let account = accounts[(i as usize) % accounts.len()];
                self.serve(account, 20 + i % 7, i % 5, 3 + i % 11)
            })
            .collect()
    }
}

pub(crate) fn tokens(prompt: u64, cached: u64, completion: u64) -> TokenCounts {
    TokenCounts {
        prompt_tokens: prompt,
        cached_tokens: cached,
        completion_tokens: completion,
    }
}

pub(crate) fn info(verified_at: u64) -> EpochInfo {
    EpochInfo {
        tee: "tdx".into(),
        simulated: true,
        config_digest: Some("44".repeat(32)),
        verified_at,
    }
}
