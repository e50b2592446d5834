//! The chain checks: does a receipt whose signature verified continue its account's chain
//! under its receipt key? Pure functions over the last accepted receipt, so every rule is
//! testable without a database.
//!
//! The guest's meter gives each account, per receipt key, sequences 1, 2, 3… and
//! cumulative totals that grow by exactly each request (one request, its tokens, its
//! charge). A receipt that breaks this is refused rather than "corrected": the ledger
//! keeps what the guest signed, and a refusal is evidence that something (the guest, the
//! host's collection, or an earlier refusal) went wrong.

use cocoon_attestation::receipt::{Cumulative, UsageReceipt};

use super::RefusalReason;

/// Where an account's chain stands under one key: its last accepted receipt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// 0 before the account's first receipt.
    pub sequence: u64,
    /// Zeros before the account's first receipt.
    pub cumulative: Cumulative,
}

/// Why a receipt does not continue its chain.
pub type Broken = (RefusalReason, String);

/// Checks `receipt` against its account's chain head (`None`: no receipt accepted yet).
/// A sequence that is already stored is the caller's business (duplicate or fork); here
/// it reads as a gap like any other wrong sequence.
pub fn continues(head: Option<&ChainHead>, receipt: &UsageReceipt) -> Result<(), Broken> {
    let head = head.copied().unwrap_or_default();
    let expected = head.sequence.checked_add(1).ok_or_else(|| {
        (
            RefusalReason::Gap,
            format!("sequence {} cannot be followed", head.sequence),
        )
    })?;
    if receipt.sequence != expected {
        return Err((
            RefusalReason::Gap,
            format!(
                "account {}: expected sequence {expected}, got {}",
                receipt.account, receipt.sequence
            ),
        ));
    }
    let wrong = totals_mismatches(&head.cumulative, receipt);
    if wrong.is_empty() {
        Ok(())
    } else {
        Err((
            RefusalReason::Totals,
            format!(
                "account {} sequence {}: {}",
                receipt.account,
                receipt.sequence,
                wrong.join("; ")
            ),
        ))
    }
}

/// Each cumulative field that is not the previous one plus this request, described.
fn totals_mismatches(previous: &Cumulative, receipt: &UsageReceipt) -> Vec<String> {
    let now = &receipt.cumulative;
    let (before, added) = (previous.tokens, receipt.tokens);
    let fields = [
        ("requests", now.requests, previous.requests, 1),
        (
            "tokens.prompt_tokens",
            now.tokens.prompt_tokens,
            before.prompt_tokens,
            added.prompt_tokens,
        ),
        (
            "tokens.cached_tokens",
            now.tokens.cached_tokens,
            before.cached_tokens,
            added.cached_tokens,
        ),
        (
            "tokens.completion_tokens",
            now.tokens.completion_tokens,
            before.completion_tokens,
            added.completion_tokens,
        ),
        ("charge", now.charge, previous.charge, receipt.charge),
    ];
    fields
        .into_iter()
        .filter_map(
            |(name, got, before, added)| match before.checked_add(added) {
                Some(expected) if expected == got => None,
                Some(expected) => Some(format!(
                    "cumulative.{name} is {got}, expected {expected} (previous {before} + {added})"
                )),
                None => Some(format!(
                    "cumulative.{name}: previous {before} + {added} overflows"
                )),
            },
        )
        .collect()
}

/// Names of [`integers`]' values, in order (the `receipts` columns they go to).
pub const INTEGER_FIELDS: [&str; 12] = [
    "version",
    "sequence",
    "tokens.prompt_tokens",
    "tokens.cached_tokens",
    "tokens.completion_tokens",
    "charge",
    "cumulative.requests",
    "cumulative.tokens.prompt_tokens",
    "cumulative.tokens.cached_tokens",
    "cumulative.tokens.completion_tokens",
    "cumulative.charge",
    "issued_at",
];

/// The receipt's numbers as SQLite integers (signed 64-bit), in [`INTEGER_FIELDS`]
/// order; a value beyond `i64::MAX` is named (the receipt cannot be stored as signed).
pub fn integers(receipt: &UsageReceipt) -> Result<[i64; 12], String> {
    let c = &receipt.cumulative;
    let values = [
        u64::from(receipt.version),
        receipt.sequence,
        receipt.tokens.prompt_tokens,
        receipt.tokens.cached_tokens,
        receipt.tokens.completion_tokens,
        receipt.charge,
        c.requests,
        c.tokens.prompt_tokens,
        c.tokens.cached_tokens,
        c.tokens.completion_tokens,
        c.charge,
        receipt.issued_at,
    ];
    let mut out = [0i64; 12];
    for ((slot, value), name) in out.iter_mut().zip(values).zip(INTEGER_FIELDS) {
        *slot = i64::try_from(value).map_err(|_| {
            format!(
                "{name} = {value} is beyond what the ledger stores (at most {})",
                i64::MAX
            )
        })?;
    }
    Ok(out)
}
