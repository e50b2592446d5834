//! The escrow owner's operations as the messages the client's wallet sends
//! (`billing/PROTOCOL.md`, "Messages to the escrow").
//!
//! Every operation is checked here against the escrow's current state first, with the
//! contract's own rules, so a user learns *why* before paying gas for a message the
//! escrow would bounce (a stake can only go up; only what is above the stake can be
//! withdrawn; a refund waits for the close delay). The contract checks again: these
//! checks are for clear messages, not for safety.
//!
//! Owner requests are signed by the account key and carry the escrow's `owner_seqno` and a
//! `valid_until`, so a request can be executed once, soon, and at this escrow only; the
//! wallet that carries them needs no authority of its own (any wallet could), but the
//! client uses the wallet of the same key, so one secret pays and owns.

use cocoon_attestation::account::AccountKey;
use cocoon_billing::layout::{
    CellLayout as _, OwnerAction, OwnerRequest, PublicKey, Refund, TopUp, STORAGE_RESERVE,
};
use tycho_types::cell::Cell;
use tycho_types::models::{StateInit, StdAddr, StdAddrFormat};

use crate::amount::{with_unit, Amount};
use crate::escrow::{EscrowError, EscrowTerms};

/// Value attached to owner requests and refunds, for the escrow's gas; what is left of it
/// stays in the escrow (withdrawable) or goes out with the refund.
pub const REQUEST_VALUE: u128 = 50_000_000;

/// What a deploy keeps aside for the escrow's gas beyond the storage reserve, when a
/// stake is set in the same transfer (the stake must fit in what the top-up left).
pub const DEPLOY_GAS_MARGIN: u128 = 50_000_000;

/// How long a signed owner request stays valid.
pub const REQUEST_VALIDITY_SECS: u64 = 300;

/// An internal message for the wallet to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: StdAddr,
    /// Nano-units.
    pub value: u128,
    /// Bounce back to the wallet if the escrow refuses (every escrow message: a refused
    /// top-up or request returns its value).
    pub bounce: bool,
    pub body: Cell,
    /// Carried by a deploy.
    pub state_init: Option<StateInit>,
}

/// `get_escrow()`: `(owner, balance, stake, total_charged, owner_seqno, unlock_at,
/// close_delay)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscrowState {
    pub owner: PublicKey,
    pub balance: u128,
    pub stake: u128,
    pub total_charged: u128,
    pub owner_seqno: u32,
    /// 0: open; else closing, refund allowed from then.
    pub unlock_at: u32,
    pub close_delay: u32,
}

impl EscrowState {
    /// What can be withdrawn now: the balance above the stake and the storage reserve.
    pub fn free(&self) -> u128 {
        self.balance
            .saturating_sub(STORAGE_RESERVE)
            .saturating_sub(self.stake)
    }
}

/// An owner's operation on an existing escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    TopUp { amount: Amount },
    SetStake { stake: Amount },
    Withdraw { amount: Amount, to: StdAddr },
    Close { refund_to: StdAddr },
    Refund,
}

fn refused(message: String) -> EscrowError {
    EscrowError::Invalid(message)
}

/// The query id of a message sent at `now` (only for matching replies in explorers).
fn query_id(now: u64) -> u64 {
    now
}

/// The deploy: a `top_up` carrying the StateInit with `amount`, and, if `stake` is given,
/// the owner request that sets it (seqno 0) in the same transfer.
pub fn deploy(
    key: &AccountKey,
    terms: &EscrowTerms,
    amount: Amount,
    stake: Option<Amount>,
    now: u64,
) -> Result<Vec<Outgoing>, EscrowError> {
    if terms.owner != key.id().0 {
        return Err(refused("the escrow's owner is not this key".into()));
    }
    let escrow = terms.address()?;
    let minimum = STORAGE_RESERVE + DEPLOY_GAS_MARGIN;
    if amount.nano() < minimum {
        return Err(refused(format!(
            "--amount {} is below the least a deploy needs ({}: the storage reserve and gas)",
            with_unit(amount),
            with_unit(Amount(minimum))
        )));
    }
    let mut messages = vec![Outgoing {
        to: escrow.clone(),
        value: amount.nano(),
        bounce: true,
        body: TopUp {
            query_id: query_id(now),
        }
        .to_cell()?,
        state_init: Some(terms.state_init()?),
    }];
    if let Some(stake) = stake.filter(|s| s.nano() > 0) {
        let most = amount.nano() - minimum;
        if stake.nano() > most {
            return Err(refused(format!(
                "--stake {} is more than --amount {} leaves after the storage reserve and gas \
                 (at most {})",
                with_unit(stake),
                with_unit(amount),
                with_unit(Amount(most))
            )));
        }
        messages.push(request(
            key,
            &escrow,
            0,
            now,
            OwnerAction::SetStake { stake: stake.nano() },
        )?);
    }
    Ok(messages)
}

fn request(
    key: &AccountKey,
    escrow: &StdAddr,
    seqno: u32,
    now: u64,
    action: OwnerAction,
) -> Result<Outgoing, EscrowError> {
    let valid_until = u32::try_from(now + REQUEST_VALIDITY_SECS)
        .map_err(|_| refused("the clock is past 2106".into()))?;
    let body = OwnerRequest {
        escrow: escrow.clone(),
        seqno,
        valid_until,
        action,
    }
    .sign(key.key_pair(), query_id(now))?
    .to_cell()?;
    Ok(Outgoing {
        to: escrow.clone(),
        value: REQUEST_VALUE,
        bounce: true,
        body,
        state_init: None,
    })
}

/// The message for `operation` on the escrow at `escrow` in `state` (as `get_escrow` read
/// it), after the contract's checks; `Err` says which rule refuses it.
pub fn operation(
    key: &AccountKey,
    escrow: &StdAddr,
    state: &EscrowState,
    operation: &Operation,
    now: u64,
) -> Result<Outgoing, EscrowError> {
    if state.owner != key.id().0 {
        return Err(refused(format!(
            "escrow {escrow} is owned by ed25519:{}, not by this key ({})",
            hex::encode(state.owner),
            key.id()
        )));
    }
    let closing = state.unlock_at != 0;
    let action = match operation {
        Operation::TopUp { amount } => {
            if closing {
                return Err(refused(format!(
                    "escrow {escrow} is closing (refund from {}): it takes no more top-ups",
                    state.unlock_at
                )));
            }
            if amount.nano() == 0 {
                return Err(refused("--amount must be more than 0".into()));
            }
            return Ok(Outgoing {
                to: escrow.clone(),
                value: amount.nano(),
                bounce: true,
                body: TopUp {
                    query_id: query_id(now),
                }
                .to_cell()?,
                state_init: None,
            });
        }
        Operation::Refund => {
            if !closing {
                return Err(refused(format!(
                    "escrow {escrow} is open: `cocoon-client escrow close` first, then refund \
                     after the close delay ({} s)",
                    state.close_delay
                )));
            }
            if now < u64::from(state.unlock_at) {
                return Err(refused(format!(
                    "escrow {escrow} unlocks at {} (in {} s): the refund must wait until then",
                    state.unlock_at,
                    u64::from(state.unlock_at) - now
                )));
            }
            return Ok(Outgoing {
                to: escrow.clone(),
                value: REQUEST_VALUE,
                bounce: true,
                body: Refund {
                    query_id: query_id(now),
                }
                .to_cell()?,
                state_init: None,
            });
        }
        Operation::SetStake { stake } => {
            if closing {
                return Err(refused(format!("escrow {escrow} is closing")));
            }
            if stake.nano() < state.stake {
                return Err(refused(format!(
                    "the stake can only go up (it is {}); to get it back, close the escrow \
                     (`cocoon-client escrow close`) and refund after the close delay",
                    with_unit(Amount(state.stake))
                )));
            }
            let most = state.balance.saturating_sub(STORAGE_RESERVE);
            if stake.nano() > most {
                return Err(refused(format!(
                    "a stake of {} is more than the escrow holds above its storage reserve \
                     ({}): top up first",
                    with_unit(*stake),
                    with_unit(Amount(most))
                )));
            }
            OwnerAction::SetStake { stake: stake.nano() }
        }
        Operation::Withdraw { amount, to } => {
            if closing {
                return Err(refused(format!(
                    "escrow {escrow} is closing: what was above the stake went to the refund \
                     address; the rest comes with `cocoon-client escrow refund`"
                )));
            }
            if amount.nano() == 0 || amount.nano() > state.free() {
                return Err(refused(format!(
                    "only what is above the stake can be withdrawn: at most {} now (balance {}, \
                     stake {}, storage reserve {})",
                    with_unit(Amount(state.free())),
                    with_unit(Amount(state.balance)),
                    with_unit(Amount(state.stake)),
                    with_unit(Amount(STORAGE_RESERVE))
                )));
            }
            OwnerAction::Withdraw {
                amount: amount.nano(),
                to: to.clone(),
            }
        }
        Operation::Close { refund_to } => {
            if closing {
                return Err(refused(format!(
                    "escrow {escrow} is already closing: refund from {}",
                    state.unlock_at
                )));
            }
            OwnerAction::RequestClose {
                refund_to: refund_to.clone(),
            }
        }
    };
    request(key, escrow, state.owner_seqno, now, action)
}

/// Parses a TON address: raw `0:<64 hex>` or user-friendly base64 (either alphabet).
pub fn parse_address(text: &str) -> Result<StdAddr, EscrowError> {
    let (address, _) = StdAddr::from_str_ext(text.trim(), StdAddrFormat::any())
        .map_err(|e| refused(format!("'{text}' is not a TON address: {e}")))?;
    if address.anycast.is_some() {
        return Err(refused(format!("'{text}': anycast addresses are not supported")));
    }
    Ok(address)
}
