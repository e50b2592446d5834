//! The public record: what the chain alone says was settled, for clients and auditors.
//!
//! Every `charge` an escrow accepted is a transaction whose inbound message holds the
//! guest-signed voucher (cumulative token counts, the receipts tree head, the model's
//! SHA-256) and whose outbound message is the payout; the escrow keeps the latest
//! `(seq, charged, receipts_root)` per guest key (`get_commitment`). Nothing here trusts
//! the operator: a charge counts only if its voucher's signature holds and the escrow paid
//! it (its payout message is in the same transaction), and charged amounts are recomputed
//! from the counts with the escrow's own price table.
//!
//! Reading is bounded by what [`Chain::transactions`] returns (the newest
//! [`crate::chain::MAX_TRANSACTIONS`] of an account); [`EscrowRecord::complete`] says whether
//! the history reached the escrow's first transaction.

use std::collections::BTreeMap;

use num_bigint::{BigInt, Sign};
use tycho_types::models::StdAddr;

use crate::chain::{Chain, StackValue, TransactionInfo, MAX_TRANSACTIONS};
use crate::layout::{CellLayout as _, Charge, Payout, Prices, PublicKey, Voucher};
use crate::{Error, Result};

/// What an escrow recorded for a guest key (`get_commitment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedCommitment {
    /// Sequence of the last voucher paid (0: none).
    pub seq: u64,
    /// Cumulative charge paid under the key (nanoton).
    pub charged: u128,
    /// That voucher's receipts tree head.
    pub receipts_root: [u8; 32],
}

fn shape(method: &str, stack: &[StackValue]) -> Error {
    Error::Invalid {
        what: "get method result",
        reason: format!("{method} returned {stack:?}"),
    }
}

fn key_arg(key: &PublicKey) -> StackValue {
    StackValue::int(BigInt::from_bytes_be(Sign::Plus, key))
}

/// `get_commitment(guest_key)` of `escrow`.
pub async fn read_commitment(
    chain: &dyn Chain,
    escrow: &StdAddr,
    guest_key: &PublicKey,
) -> Result<RecordedCommitment> {
    let method = "get_commitment";
    let stack = chain
        .run_get_method(escrow, method, &[key_arg(guest_key)])
        .await?;
    match stack.as_slice() {
        [seq, charged, root] => Ok(RecordedCommitment {
            seq: seq.as_u64().ok_or_else(|| shape(method, &stack))?,
            charged: charged.as_u128().ok_or_else(|| shape(method, &stack))?,
            receipts_root: root.as_u256_bytes().ok_or_else(|| shape(method, &stack))?,
        }),
        _ => Err(shape(method, &stack)),
    }
}

/// `get_prices()` of `escrow`.
pub async fn read_prices(chain: &dyn Chain, escrow: &StdAddr) -> Result<Prices> {
    let method = "get_prices";
    let stack = chain.run_get_method(escrow, method, &[]).await?;
    match stack.as_slice() {
        [p, c, k] => Ok(Prices {
            prompt_per_million: p.as_u64().ok_or_else(|| shape(method, &stack))?,
            cached_per_million: c.as_u64().ok_or_else(|| shape(method, &stack))?,
            completion_per_million: k.as_u64().ok_or_else(|| shape(method, &stack))?,
        }),
        _ => Err(shape(method, &stack)),
    }
}

/// One charge the escrow paid, as its transaction shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledCharge {
    /// The transaction's logical time and unix time.
    pub lt: u64,
    pub utime: u32,
    /// The voucher (its signature checked).
    pub voucher: Voucher,
    /// Cumulative charge under the key after it (the escrow's prices applied to the
    /// voucher's counts).
    pub charged: u128,
}

/// An escrow's settled charges, oldest first.
#[derive(Debug, Clone)]
pub struct EscrowRecord {
    pub escrow: StdAddr,
    pub prices: Prices,
    pub charges: Vec<SettledCharge>,
    /// Whether the history read reaches the escrow's first transaction (fewer than
    /// [`MAX_TRANSACTIONS`] were returned).
    pub complete: bool,
}

/// The charge a transaction settled, if it is an accepted `charge` with a valid voucher.
fn settled_charge(tx: &TransactionInfo, prices: &Prices) -> Option<SettledCharge> {
    let in_msg = tx.in_msg.as_ref()?;
    let charge = Charge::from_cell(&in_msg.body).ok()?;
    charge.voucher.verify().ok()?;
    let voucher = charge.voucher.voucher;
    let paid = tx.out_msgs.iter().any(|out| {
        out.destination.as_ref() == Some(&voucher.payout)
            && Payout::from_cell(&out.body).is_ok_and(|p| p.query_id == charge.query_id)
    });
    if !paid {
        return None;
    }
    Some(SettledCharge {
        lt: tx.lt,
        utime: tx.utime,
        charged: voucher.charge(prices),
        voucher,
    })
}

/// Reads `escrow`'s settled charges from its transactions.
pub async fn read_escrow(chain: &dyn Chain, escrow: &StdAddr) -> Result<EscrowRecord> {
    let prices = read_prices(chain, escrow).await?;
    let txs = chain.transactions(escrow, MAX_TRANSACTIONS).await?;
    let complete = txs.len() < MAX_TRANSACTIONS;
    let mut charges: Vec<SettledCharge> = txs
        .iter()
        .filter_map(|tx| settled_charge(tx, &prices))
        .collect();
    charges.sort_by_key(|c| c.lt);
    Ok(EscrowRecord {
        escrow: escrow.clone(),
        prices,
        charges,
        complete,
    })
}

/// The escrows that paid `payout` (the sources of its incoming payout messages), in the
/// order first seen; the bool says whether the payout's history was read whole.
pub async fn escrows_paying(chain: &dyn Chain, payout: &StdAddr) -> Result<(Vec<StdAddr>, bool)> {
    let txs = chain.transactions(payout, MAX_TRANSACTIONS).await?;
    let complete = txs.len() < MAX_TRANSACTIONS;
    let mut out: Vec<StdAddr> = Vec::new();
    for tx in txs.iter().rev() {
        let Some(msg) = &tx.in_msg else { continue };
        let Some(source) = &msg.source else { continue };
        if Payout::from_cell(&msg.body).is_ok() && !out.contains(source) {
            out.push(source.clone());
        }
    }
    Ok((out, complete))
}

/// Tokens and charge served under one (model, guest key) in a time range, from the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedTotals {
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
    /// Nanoton charged.
    pub charged: u128,
    /// Settled charges counted.
    pub charges: u64,
}

/// Sums, per (model SHA-256, guest key), what the charges settled in `[since, until)`
/// (unix seconds of their transactions) added: each charge counts the increase of its
/// key's cumulative counts over the key's previous charge at the same escrow.
pub fn served_totals(
    records: &[EscrowRecord],
    since: u32,
    until: u32,
) -> BTreeMap<([u8; 32], PublicKey), ServedTotals> {
    let mut totals: BTreeMap<([u8; 32], PublicKey), ServedTotals> = BTreeMap::new();
    for record in records {
        let mut last: BTreeMap<PublicKey, (u64, u64, u64, u128)> = BTreeMap::new();
        for charge in &record.charges {
            let v = &charge.voucher;
            let now = (
                v.tokens.prompt,
                v.tokens.cached,
                v.tokens.completion,
                charge.charged,
            );
            let before = last.insert(v.guest_key, now).unwrap_or_default();
            if charge.utime < since || charge.utime >= until {
                continue;
            }
            let entry = totals.entry((v.commitment.model, v.guest_key)).or_default();
            entry.prompt += now.0.saturating_sub(before.0);
            entry.cached += now.1.saturating_sub(before.1);
            entry.completion += now.2.saturating_sub(before.2);
            entry.charged += now.3.saturating_sub(before.3);
            entry.charges += 1;
        }
    }
    totals
}
