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
//! Histories are read page by page ([`Chain::transactions_before`]) back to the account's
//! first transaction or [`MAX_HISTORY`] transactions, whichever comes first; a node (or the
//! local chain, after a restart) may have pruned older ones, so [`EscrowRecord::complete`]
//! says whether the charges read account for everything the escrow says it charged
//! (`get_escrow`'s `total_charged`).

use std::collections::BTreeMap;

use num_bigint::{BigInt, Sign};
use tycho_types::models::StdAddr;

use crate::chain::{Chain, StackValue, TransactionInfo, MAX_TRANSACTIONS};

/// Most transactions read of one account's history (100 pages).
pub const MAX_HISTORY: usize = 100 * MAX_TRANSACTIONS;

/// An account's transactions, newest first, paging back until a page comes back empty or
/// [`MAX_HISTORY`] are read; the bool is true when the history ended before the bound.
pub async fn history(chain: &dyn Chain, addr: &StdAddr) -> Result<(Vec<TransactionInfo>, bool)> {
    let mut all: Vec<TransactionInfo> = Vec::new();
    loop {
        let before = all.last().map(|tx| (tx.lt, tx.hash));
        let page = chain
            .transactions_before(addr, before, MAX_TRANSACTIONS)
            .await?;
        if page.is_empty() {
            return Ok((all, true));
        }
        // Each page must be strictly older than the last: a server that ignores the cursor
        // would otherwise loop.
        let last_lt = before.map(|(lt, _)| lt);
        if page.iter().any(|tx| last_lt.is_some_and(|lt| tx.lt >= lt)) {
            return Err(Error::Invalid {
                what: "transaction history",
                reason: "a page was not older than the one before it".into(),
            });
        }
        all.extend(page);
        if all.len() >= MAX_HISTORY {
            return Ok((all, false));
        }
    }
}
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
    /// What the escrow says it charged in all (`get_escrow`).
    pub total_charged: u128,
    /// Whether the charges read account for all of it: the last cumulative charge of each
    /// guest key seen, summed, is `total_charged`. (Counts are cumulative, so a key whose
    /// early charges are missing still totals right; a key with none in the history read
    /// does not.)
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
    let method = "get_escrow";
    let stack = chain.run_get_method(escrow, method, &[]).await?;
    let total_charged = stack
        .get(3)
        .and_then(StackValue::as_u128)
        .ok_or_else(|| shape(method, &stack))?;
    let (txs, _) = history(chain, escrow).await?;
    let mut charges: Vec<SettledCharge> = txs
        .iter()
        .filter_map(|tx| settled_charge(tx, &prices))
        .collect();
    charges.sort_by_key(|c| c.lt);
    let mut last: BTreeMap<PublicKey, u128> = BTreeMap::new();
    for c in &charges {
        last.insert(c.voucher.guest_key, c.charged);
    }
    let complete = last.values().sum::<u128>() == total_charged;
    Ok(EscrowRecord {
        escrow: escrow.clone(),
        prices,
        charges,
        total_charged,
        complete,
    })
}

/// The escrows that paid `payout` (the sources of its incoming payout messages), in the
/// order first seen; the bool says whether the payout's history was read whole.
pub async fn escrows_paying(chain: &dyn Chain, payout: &StdAddr) -> Result<(Vec<StdAddr>, bool)> {
    let (txs, complete) = history(chain, payout).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ReceiptCommitment, TokenCounts};
    use tycho_types::cell::HashBytes;

    fn charge(
        key: u8,
        model: u8,
        seq: u64,
        utime: u32,
        prompt: u64,
        charged: u128,
    ) -> SettledCharge {
        SettledCharge {
            lt: u64::from(utime),
            utime,
            voucher: Voucher {
                escrow: StdAddr::new(0, HashBytes([1; 32])),
                guest_key: [key; 32],
                seq,
                tokens: TokenCounts {
                    prompt,
                    cached: prompt / 10,
                    completion: prompt / 2,
                },
                payout: StdAddr::new(0, HashBytes([2; 32])),
                commitment: ReceiptCommitment {
                    receipts_root: [seq as u8; 32],
                    model: [model; 32],
                },
            },
            charged,
        }
    }

    fn record(charges: Vec<SettledCharge>) -> EscrowRecord {
        EscrowRecord {
            escrow: StdAddr::new(0, HashBytes([1; 32])),
            prices: Prices::default(),
            charges,
            total_charged: 0,
            complete: true,
        }
    }

    #[test]
    fn onchain_audit_totals_count_each_charges_increase_in_its_range() {
        // Two escrows (accounts); key 1 serves model A, key 2 model B.
        let a = record(vec![
            charge(1, 0xA, 3, 100, 300, 30),
            charge(1, 0xA, 5, 200, 500, 50),
            charge(2, 0xB, 1, 250, 40, 4),
            charge(1, 0xA, 9, 300, 900, 95),
        ]);
        let b = record(vec![charge(1, 0xA, 2, 150, 200, 20)]);
        let all = served_totals(&[a.clone(), b.clone()], 0, u32::MAX);
        let ka = all[&([0xA; 32], [1; 32])];
        assert_eq!((ka.prompt, ka.cached, ka.completion), (1100, 110, 550));
        assert_eq!((ka.charged, ka.charges), (115, 4));
        let kb = all[&([0xB; 32], [2; 32])];
        assert_eq!((kb.prompt, kb.charged, kb.charges), (40, 4, 1));
        // [150, 300): the seq-5 charge adds 200 prompt tokens over seq 3 (outside the range,
        // still its baseline); escrow b's charge at 150 counts whole; key 2 counts.
        let window = served_totals(&[a, b], 150, 300);
        let ka = window[&([0xA; 32], [1; 32])];
        assert_eq!((ka.prompt, ka.charged, ka.charges), (200 + 200, 20 + 20, 2));
        assert_eq!(window[&([0xB; 32], [2; 32])].charges, 1);
        assert!(served_totals(&[], 0, u32::MAX).is_empty());
    }
}
