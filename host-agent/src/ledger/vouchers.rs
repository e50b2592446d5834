//! Vouchers: what a guest signs next to each receipt of an account that pays through an
//! escrow, checked and stored in the same transaction as that receipt.
//!
//! **Why in the same transaction.** The guest drops a receipt (and its voucher) once the
//! collector acknowledges it, so the voucher must be durable by then, exactly like the
//! receipt: a voucher lost is money the operator can never claim. Storing both in one
//! commit means the acknowledgement covers both.
//!
//! **Why check here.** The escrow checks everything again on-chain, and a bad voucher costs
//! only the gas of a refused charge; but the operator should learn at collection time that
//! the guest's voucher and its receipt disagree, not when a charge fails weeks later. A
//! voucher must: parse strictly, verify under the receipt key it came with, name the
//! receipt's sequence and cumulative token counts, and come with an authorization of that
//! key for the same escrow, signed by the account's own key (the escrow's owner). One that
//! does not is kept apart in `refused_vouchers` (the receipt itself stays stored).

use std::str::FromStr as _;

use base64::Engine as _;
use cocoon_attestation::account::AccountId;
use cocoon_attestation::receipt::UsageReceipt;
use cocoon_billing::address::StdAddr;
use cocoon_billing::layout::{BocLimits, CellLayout as _, SignedAuthorization, SignedVoucher};
use rusqlite::{params, Transaction};
use serde::{Deserialize, Serialize};

/// The `voucher` of a journal entry (`GET /internal/v1/receipts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalVoucher {
    /// The escrow it pays from, `0:<hex>`.
    pub escrow: String,
    /// Base64 (standard) of the BoC of the `SignedVoucher`.
    pub voucher: String,
    /// Base64 (standard) of the BoC of the `SignedAuthorization`.
    pub authorization: String,
}

/// A voucher that passed [`check`], ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedVoucher {
    pub escrow: StdAddr,
    pub seq: u64,
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
    pub payout: StdAddr,
    pub expires_at: u32,
    pub cap: u128,
    pub voucher_boc: Vec<u8>,
    pub authorization_boc: Vec<u8>,
}

/// Base64 of a payload BoC at most this long (4 KiB of BoC, as `BocLimits::PAYLOAD`).
const MAX_BASE64: usize = BocLimits::PAYLOAD.max_bytes.div_ceil(3) * 4;

fn decode(what: &str, text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_BASE64 {
        return Err(format!(
            "{what}: {} base64 characters, at most {MAX_BASE64}",
            text.len()
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("{what}: not base64: {e}"))
}

/// The raw form `0:<64 hex>` of an address (how the ledger and the guest write them).
pub fn raw_address(addr: &StdAddr) -> String {
    format!("{}:{}", addr.workchain, hex::encode(addr.address.0))
}

/// Checks a voucher against the receipt it came with (see the module docs).
pub fn check(
    receipt_key: &[u8; 32],
    receipt: &UsageReceipt,
    entry: &JournalVoucher,
) -> Result<CheckedVoucher, String> {
    let voucher_boc = decode("voucher", &entry.voucher)?;
    let authorization_boc = decode("authorization", &entry.authorization)?;
    let signed = SignedVoucher::from_boc(&voucher_boc).map_err(|e| format!("voucher: {e}"))?;
    let authorization = SignedAuthorization::from_boc(&authorization_boc)
        .map_err(|e| format!("authorization: {e}"))?;
    let escrow = cocoon_billing::address::parse_address(&entry.escrow)
        .map_err(|e| format!("escrow: {e}"))?;
    let v = &signed.voucher;
    if &v.guest_key != receipt_key {
        return Err("voucher: names a guest key other than the receipt's".into());
    }
    signed
        .verify()
        .map_err(|e| format!("voucher: signature: {e}"))?;
    if v.escrow != escrow {
        return Err(format!(
            "voucher: names escrow {}, the journal entry {}",
            raw_address(&v.escrow),
            raw_address(&escrow)
        ));
    }
    if v.seq != receipt.sequence {
        return Err(format!(
            "voucher: seq {} for the receipt of sequence {}",
            v.seq, receipt.sequence
        ));
    }
    let c = &receipt.cumulative.tokens;
    let stated = (v.tokens.prompt, v.tokens.cached, v.tokens.completion);
    let receipted = (c.prompt_tokens, c.cached_tokens, c.completion_tokens);
    if stated != receipted {
        return Err(format!(
            "voucher: cumulative tokens (prompt, cached, completion) {stated:?}, the receipt \
             {receipted:?}"
        ));
    }
    let a = &authorization.authorization;
    if a.escrow != escrow {
        return Err("authorization: for another escrow".into());
    }
    if &a.guest_key != receipt_key {
        return Err("authorization: of another guest key".into());
    }
    let owner = AccountId::from_str(&receipt.account).map_err(|e| format!("account: {e}"))?;
    authorization
        .verify(&owner.0)
        .map_err(|e| format!("authorization: not signed by the account's key: {e}"))?;
    Ok(CheckedVoucher {
        escrow,
        seq: v.seq,
        prompt: v.tokens.prompt,
        cached: v.tokens.cached,
        completion: v.tokens.completion,
        payout: v.payout.clone(),
        expires_at: a.expires_at,
        cap: a.cap,
        voucher_boc,
        authorization_boc,
    })
}

/// Signed 64-bit for SQLite, or the name of what does not fit.
pub(super) fn int(name: &str, value: impl TryInto<i64>) -> Result<i64, String> {
    value
        .try_into()
        .map_err(|_| format!("{name} is beyond what the ledger stores"))
}

/// Stores a checked voucher of `account` under `key` (hex); a voucher already stored
/// (same key, account and seq) is left as it is.
pub(super) fn insert(
    tx: &Transaction<'_>,
    key: &str,
    account: &str,
    v: &CheckedVoucher,
    at: i64,
) -> rusqlite::Result<Result<(), String>> {
    let numbers = (|| {
        Ok::<_, String>([
            int("seq", v.seq)?,
            int("prompt", v.prompt)?,
            int("cached", v.cached)?,
            int("completion", v.completion)?,
            int("cap", v.cap)?,
        ])
    })();
    let [seq, prompt, cached, completion, cap] = match numbers {
        Ok(n) => n,
        Err(e) => return Ok(Err(format!("voucher: {e}"))),
    };
    tx.prepare_cached(
        "INSERT INTO vouchers (receipt_key, account, escrow, seq, prompt_tokens, cached_tokens, \
         completion_tokens, payout, expires_at, cap, voucher, authorization, stored_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (receipt_key, account, seq) DO NOTHING",
    )?
    .execute(params![
        key,
        account,
        raw_address(&v.escrow),
        seq,
        prompt,
        cached,
        completion,
        raw_address(&v.payout),
        i64::from(v.expires_at),
        cap,
        v.voucher_boc,
        v.authorization_boc,
        at
    ])?;
    Ok(Ok(()))
}

/// Keeps a voucher that did not check out, with why.
#[allow(clippy::too_many_arguments)]
pub(super) fn refuse(
    tx: &Transaction<'_>,
    key: &str,
    index: i64,
    guest: &str,
    detail: &str,
    entry: &JournalVoucher,
    at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO refused_vouchers (receipt_key, journal_index, guest, detail, escrow, \
         voucher, authorization, refused_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (receipt_key, journal_index) DO NOTHING",
    )?
    .execute(params![
        key,
        index,
        guest,
        detail,
        entry.escrow,
        entry.voucher,
        entry.authorization,
        at
    ])?;
    Ok(())
}
