//! Metering: one signed usage receipt for every finished request, cancelled ones too.
//!
//! The guest is the only party both client and operator can trust to count tokens, so it
//! counts, prices and signs here, inside the TEE. Each account has a sequence number and
//! cumulative totals under this boot's receipt key; the charge is computed from the
//! cumulative counts, so per-request rounding never accumulates.
//!
//! Accounts are Ed25519 keys proven in the TLS session (`cocoon_attestation::account`,
//! checked in `api`), plus [`ANONYMOUS`] where the measured config allows unnamed use. The
//! per-account table is bounded (`accounts.max_accounts`): a request for a new account past
//! the bound is refused before it generates. Nothing is ever evicted, because a receipt's
//! sequence and cumulative totals must only grow within one boot (a settled-then-forgotten
//! account would restart at sequence 1 under the same receipt key); `anonymous` always fits.
//!
//! When a collector is configured (the host agent, over the internal listener), every
//! receipt also goes into a journal it drains (`internal_api`). The journal is bounded:
//! when the host stops collecting, new requests are refused (503) rather than served
//! unbilled or receipts dropped. Without a collector nothing is journaled (capacity 0 in
//! the measured config): receipts go to the clients only, and nothing can fill up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cocoon_attestation::receipt::{
    Cumulative, ReceiptSigner, TokenCounts, UsageReceipt, RECEIPT_VERSION,
};
use cocoon_attestation::receipt_tree::{ReceiptAccumulator, ReceiptLeaf};

use crate::config::PriceTable;
use crate::{Error, Result};

/// Account billed when a request names none. Not a key: no one can ever settle it.
pub const ANONYMOUS: &str = "anonymous";

pub use cocoon_attestation::account::{ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};

/// Response header that carries a non-streaming request's receipt.
pub const RECEIPT_HEADER: &str = "x-cocoon-receipt";

/// What one request is billed for, as its receipt states it.
#[derive(Debug, Clone, Copy)]
pub struct Billed<'a> {
    /// The response id the client saw.
    pub request_id: &'a str,
    pub model: &'a str,
    /// How the request ended (see `UsageReceipt::finish`).
    pub finish: &'a str,
    pub tokens: TokenCounts,
    /// SHA-256 of the request body as received.
    pub request_sha256: [u8; 32],
    /// SHA-256 of the response bytes sent.
    pub response_sha256: [u8; 32],
}

/// A receipt as the journal keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JournalEntry {
    /// Position in this boot's journal, from 1.
    pub index: u64,
    /// The signed receipt (JWS compact).
    pub receipt: String,
    /// The voucher that goes with it, for an account that pays through an escrow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher: Option<JournalVoucher>,
}

/// A voucher as the host agent collects it: everything one `charge` message to the
/// escrow carries (`billing/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalVoucher {
    /// The escrow it pays from (raw `0:<hex>`).
    pub escrow: String,
    /// Base64 (standard) BoC of the SignedVoucher cell, signed by the receipt key.
    pub voucher: String,
    /// Base64 (standard) BoC of the owner's SignedAuthorization cell.
    pub authorization: String,
}

/// What a voucher is made from besides the meter's own counts.
pub struct VoucherOrder<'a> {
    pub target: &'a crate::escrow::VoucherTarget,
    pub payout: &'a cocoon_billing::address::StdAddr,
}

#[derive(Default)]
struct MeterState {
    accounts: HashMap<String, (u64, Cumulative)>,
    /// Per account, the RFC 6962 tree over its receipts so far (`receipt_tree`): each
    /// voucher commits to its head.
    trees: HashMap<String, ReceiptAccumulator>,
    /// Unacknowledged receipts (and their vouchers) by journal index.
    journal: BTreeMap<u64, (String, Option<JournalVoucher>)>,
    next_index: u64,
}

/// Counts, prices and signs.
pub struct Meter {
    signer: ReceiptSigner,
    prices: PriceTable,
    /// SHA-256 of the model served (the measured config's `model.sha256`): in every
    /// receipt leaf and voucher commitment.
    model_sha256: [u8; 32],
    price_table_sha256: String,
    /// 0: no collector, no journal.
    journal_capacity: usize,
    max_accounts: usize,
    state: Mutex<MeterState>,
}

impl Meter {
    /// A meter with a fresh receipt key. `journal_capacity` receipts wait for the collector
    /// at most (0: there is no collector, nothing is journaled); `max_accounts` proven
    /// accounts are served per boot. `model_sha256` is the served model's digest.
    pub fn new(
        prices: PriceTable,
        model_sha256: [u8; 32],
        journal_capacity: usize,
        max_accounts: usize,
    ) -> Result<Self> {
        Ok(Self {
            signer: ReceiptSigner::generate()?,
            price_table_sha256: prices.sha256_hex(),
            prices,
            model_sha256,
            journal_capacity,
            max_accounts,
            state: Mutex::new(MeterState {
                next_index: 1,
                ..MeterState::default()
            }),
        })
    }

    /// The account's receipts tree head under this key (what its latest voucher commits
    /// to) and its size; `None` before its first receipt.
    pub fn receipts_root(&self, account: &str) -> Result<Option<([u8; 32], u64)>> {
        Ok(self
            .state()?
            .trees
            .get(account)
            .map(|tree| (tree.root(), tree.size())))
    }

    /// The receipt key's public half (bound in the evidence).
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, MeterState>> {
        self.state
            .lock()
            .map_err(|_| Error::Engine("meter state lock poisoned".into()))
    }

    /// False when the journal is full: the host agent has stopped collecting receipts,
    /// and new work would go unbilled. Always true without a collector.
    pub fn accepting(&self) -> bool {
        self.journal_capacity == 0
            || self
                .state()
                .map(|s| s.journal.len() < self.journal_capacity)
                .unwrap_or(false)
    }

    /// Makes room for `account` before a request for it generates: true if it is known,
    /// is [`ANONYMOUS`], or fits under `max_accounts` (it is then added, with sequence 0).
    pub fn admit(&self, account: &str) -> Result<bool> {
        let mut state = self.state()?;
        if account == ANONYMOUS || state.accounts.contains_key(account) {
            return Ok(true);
        }
        let proven = state.accounts.len() - usize::from(state.accounts.contains_key(ANONYMOUS));
        if proven >= self.max_accounts {
            return Ok(false);
        }
        state
            .accounts
            .insert(account.to_string(), Default::default());
        Ok(true)
    }

    /// The most proven accounts served per boot.
    pub fn max_accounts(&self) -> usize {
        self.max_accounts
    }

    /// Records a finished request and returns its signed receipt.
    pub fn record(&self, account: &str, billed: &Billed<'_>) -> Result<String> {
        self.record_with_voucher(account, billed, None)
    }

    /// The account's cumulative charge under this key so far (0 for an unknown one).
    pub fn cumulative_charge(&self, account: &str) -> Result<u64> {
        Ok(self
            .state()?
            .accounts
            .get(account)
            .map(|(_, c)| c.charge)
            .unwrap_or(0))
    }

    /// The account's sequence (its latest receipt's, and voucher's) and cumulative totals
    /// under this key; `None` before its first finished request.
    pub fn account(&self, account: &str) -> Result<Option<(u64, Cumulative)>> {
        Ok(self
            .state()?
            .accounts
            .get(account)
            .filter(|(sequence, _)| *sequence > 0)
            .copied())
    }

    /// Records a finished request, signs its receipt and, with an `order`, the voucher
    /// for the account's new cumulative counts (journaled with the receipt); returns the
    /// receipt.
    pub fn record_with_voucher(
        &self,
        account: &str,
        billed: &Billed<'_>,
        order: Option<VoucherOrder<'_>>,
    ) -> Result<String> {
        let tokens = billed.tokens;
        let mut state = self.state()?;
        let issued_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (sequence, cumulative) = state.accounts.entry(account.to_string()).or_default();
        let charged_before = cumulative.charge;
        cumulative.requests += 1;
        cumulative.tokens = cumulative.tokens.plus(tokens);
        cumulative.charge = self.prices.charge(&cumulative.tokens).max(charged_before);
        *sequence += 1;
        let (sequence, cumulative) = (*sequence, *cumulative);
        let receipt = UsageReceipt {
            version: RECEIPT_VERSION,
            request_id: billed.request_id.to_string(),
            account: account.to_string(),
            model: billed.model.to_string(),
            finish: billed.finish.to_string(),
            tokens,
            request_sha256: hex::encode(billed.request_sha256),
            response_sha256: hex::encode(billed.response_sha256),
            charge: cumulative.charge - charged_before,
            price_table_sha256: self.price_table_sha256.clone(),
            issued_at,
            sequence,
            cumulative,
        };
        let jws = self.signer.sign(&receipt)?;
        let leaf = ReceiptLeaf::from_receipt(&receipt, self.public_key(), self.model_sha256);
        let tree = state.trees.entry(account.to_string()).or_default();
        tree.push(leaf.hash());
        let receipts_root = tree.root();
        let voucher = order
            .map(|order| self.voucher(order, sequence, &cumulative.tokens, receipts_root))
            .transpose()?;
        if self.journal_capacity > 0 {
            let index = state.next_index;
            state.next_index += 1;
            state.journal.insert(index, (jws.clone(), voucher));
        }
        Ok(jws)
    }

    /// The signed voucher for `sequence` with cumulative `tokens` under this key.
    fn voucher(
        &self,
        order: VoucherOrder<'_>,
        sequence: u64,
        tokens: &TokenCounts,
        receipts_root: [u8; 32],
    ) -> Result<JournalVoucher> {
        use base64::Engine as _;
        use cocoon_billing::layout::{self, CellLayout as _, SignedVoucher, Voucher};
        let voucher = Voucher {
            escrow: order.target.escrow.clone(),
            guest_key: self.signer.public_key(),
            seq: sequence,
            tokens: layout::TokenCounts {
                prompt: tokens.prompt_tokens,
                cached: tokens.cached_tokens,
                completion: tokens.completion_tokens,
            },
            payout: order.payout.clone(),
            commitment: layout::ReceiptCommitment {
                receipts_root,
                model: self.model_sha256,
            },
        };
        let cell = voucher
            .to_cell()
            .map_err(|e| Error::Engine(format!("voucher cell: {e}")))?;
        let signed = SignedVoucher {
            signature: self.signer.sign_cell_hash(cell.repr_hash().as_array()),
            voucher,
        };
        let boc = signed
            .to_boc()
            .map_err(|e| Error::Engine(format!("voucher cell: {e}")))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(JournalVoucher {
            escrow: order.target.escrow.to_string(),
            voucher: b64.encode(boc),
            authorization: b64.encode(&order.target.authorization_boc),
        })
    }

    /// Unacknowledged receipts after `after`, at most `limit`.
    pub fn pending(&self, after: u64, limit: usize) -> Result<Vec<JournalEntry>> {
        let state = self.state()?;
        Ok(state
            .journal
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(index, (receipt, voucher))| JournalEntry {
                index: *index,
                receipt: receipt.clone(),
                voucher: voucher.clone(),
            })
            .collect())
    }

    /// The journal index of the newest receipt signed so far (0: none yet). With the
    /// oldest pending index it tells the collector how far behind it is, and a test
    /// which receipts were acknowledged.
    pub fn last_index(&self) -> Result<u64> {
        Ok(self.state()?.next_index - 1)
    }

    /// Every account's sequence and cumulative totals under this boot's key, by account:
    /// what the latest receipt of each states, for reconciliation with the host's ledger.
    pub fn accounts(&self) -> Result<BTreeMap<String, (u64, Cumulative)>> {
        Ok(self
            .state()?
            .accounts
            .iter()
            .filter(|(_, (sequence, _))| *sequence > 0)
            .map(|(account, totals)| (account.clone(), *totals))
            .collect())
    }

    /// Drops receipts up to and including `upto` (the host agent has stored them).
    /// Returns how many were dropped.
    pub fn acknowledge(&self, upto: u64) -> Result<usize> {
        let mut state = self.state()?;
        let keep = state.journal.split_off(&upto.saturating_add(1));
        let dropped = state.journal.len();
        state.journal = keep;
        Ok(dropped)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cocoon_attestation::receipt::verify_receipt;

    /// A model digest for tests.
    pub(crate) const MODEL: [u8; 32] = [0x4D; 32];

    fn prices() -> PriceTable {
        PriceTable {
            currency: "nanoton".into(),
            prompt_per_million: 1_000_000,
            cached_prompt_per_million: 0,
            completion_per_million: 2_000_000,
        }
    }

    /// A request billed `tokens`, hashes fixed.
    pub(crate) fn billed<'a>(id: &'a str, finish: &'a str, tokens: TokenCounts) -> Billed<'a> {
        Billed {
            request_id: id,
            model: "m",
            finish,
            tokens,
            request_sha256: [1; 32],
            response_sha256: [2; 32],
        }
    }

    fn tokens(p: u64, k: u64) -> TokenCounts {
        TokenCounts {
            prompt_tokens: p,
            cached_tokens: 0,
            completion_tokens: k,
        }
    }

    #[test]
    fn receipts_count_per_account_and_verify_under_the_meter_key() {
        let meter = Meter::new(prices(), MODEL, 100, 10).unwrap();
        let a1 = meter
            .record("a", &billed("r1", "stop", tokens(3, 4)))
            .unwrap();
        let b1 = meter
            .record("b", &billed("r2", "length", tokens(1, 1)))
            .unwrap();
        let a2 = meter
            .record("a", &billed("r3", "cancelled", tokens(2, 0)))
            .unwrap();
        let key = meter.public_key();
        let a1 = verify_receipt(&a1, &key).unwrap();
        let b1 = verify_receipt(&b1, &key).unwrap();
        let a2 = verify_receipt(&a2, &key).unwrap();
        assert_eq!((a1.sequence, b1.sequence, a2.sequence), (1, 1, 2));
        assert_eq!(a1.charge, 3 + 8);
        assert_eq!(a2.cumulative.tokens, tokens(5, 4));
        assert_eq!(a2.cumulative.requests, 2);
        assert_eq!(a2.cumulative.charge, a1.charge + a2.charge);
        assert_eq!(a2.finish, "cancelled");
        assert_eq!(a2.price_table_sha256, prices().sha256_hex());
        assert_eq!(a2.request_sha256, "01".repeat(32));
        assert_eq!(a2.response_sha256, "02".repeat(32));
    }

    #[test]
    fn the_journal_is_drained_by_acknowledgement_and_bounds_new_work() {
        let meter = Meter::new(prices(), MODEL, 2, 10).unwrap();
        assert!(meter.accepting());
        meter
            .record("a", &billed("r1", "stop", tokens(1, 1)))
            .unwrap();
        meter
            .record("a", &billed("r2", "stop", tokens(1, 1)))
            .unwrap();
        assert!(!meter.accepting(), "a full journal refuses new work");
        let pending = meter.pending(0, 10).unwrap();
        assert_eq!(
            pending.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(meter.pending(1, 10).unwrap().len(), 1);
        assert_eq!(meter.acknowledge(1).unwrap(), 1);
        assert!(meter.accepting());
        assert_eq!(meter.pending(0, 10).unwrap()[0].index, 2);
        assert_eq!(
            meter.acknowledge(1).unwrap(),
            0,
            "acknowledging twice is harmless"
        );
    }

    #[test]
    fn without_a_collector_nothing_is_journaled_and_work_never_stops() {
        let meter = Meter::new(prices(), MODEL, 0, 10).unwrap();
        for i in 0..5 {
            assert!(meter.accepting(), "request {i}");
            let id = format!("r{i}");
            meter
                .record("a", &billed(&id, "stop", tokens(1, 1)))
                .unwrap();
        }
        assert!(meter.pending(0, 10).unwrap().is_empty());
    }

    #[test]
    fn the_account_table_is_bounded_without_eviction() {
        let meter = Meter::new(prices(), MODEL, 0, 2).unwrap();
        assert!(meter.admit("k1").unwrap());
        assert!(meter.admit(ANONYMOUS).unwrap(), "anonymous always fits");
        meter
            .record(ANONYMOUS, &billed("r0", "stop", tokens(1, 1)))
            .unwrap();
        assert!(meter.admit("k2").unwrap(), "anonymous is not counted");
        assert!(
            !meter.admit("k3").unwrap(),
            "a third account is past the bound"
        );
        assert!(meter.admit("k1").unwrap(), "known accounts stay");
        assert!(meter.admit(ANONYMOUS).unwrap());
        let r = meter
            .record("k1", &billed("r1", "stop", tokens(1, 1)))
            .unwrap();
        let r = cocoon_attestation::receipt::verify_receipt(&r, &meter.public_key()).unwrap();
        assert_eq!(
            r.sequence, 1,
            "admission alone does not advance the sequence"
        );
    }
}
