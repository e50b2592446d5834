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
    self, CellLayout as _, OwnerAction, OwnerRequest, PublicKey, Refund, TopUp, STORAGE_RESERVE,
};
use cocoon_billing::wallet::OutMessage;
use tycho_types::models::StdAddr;

use crate::amount::{with_unit, Amount};
use crate::escrow::{EscrowError, EscrowTerms};

/// Value attached to owner requests and refunds, for the escrow's gas; what is left of it
/// stays in the escrow (withdrawable) or goes out with the refund.
///
/// 0.016 TON: the escrow's owner requests and refund cost it at most about 0.0026 TON in
/// gas and fees (asserted in the `billing_owner` tests), and the value must fit in 3 bytes. With a 4-byte value
/// (0.0168..4.29 TON) an owner request's internal message is exactly 1024 bits inline;
/// tycho-types 0.3.6 counts the relaxed message info one bit short (its `RelaxedMsgInfo`
/// size leaves out the constructor bit), so `cocoon_billing::wallet::internal_message_cell`
/// picks the inline layout and fails with "cell overflow".
pub const REQUEST_VALUE: u128 = 16_000_000;

/// What a deploy keeps aside for the escrow's gas beyond the storage reserve, when a
/// stake is set in the same transfer (the stake must fit in what the top-up left).
pub const DEPLOY_GAS_MARGIN: u128 = 50_000_000;

/// How long a signed owner request stays valid.
pub const REQUEST_VALIDITY_SECS: u64 = 300;

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
) -> Result<Vec<OutMessage>, EscrowError> {
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
    let mut messages = vec![OutMessage {
        dest: escrow.clone(),
        value: amount.nano(),
        bounce: true,
        body: Some(
            TopUp {
                query_id: query_id(now),
            }
            .to_cell()?,
        ),
        state_init: Some(layout::state_init_cell(&terms.state_init()?)?),
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
            OwnerAction::SetStake {
                stake: stake.nano(),
            },
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
) -> Result<OutMessage, EscrowError> {
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
    Ok(OutMessage {
        dest: escrow.clone(),
        value: REQUEST_VALUE,
        bounce: true,
        body: Some(body),
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
) -> Result<OutMessage, EscrowError> {
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
            return Ok(OutMessage {
                dest: escrow.clone(),
                value: amount.nano(),
                bounce: true,
                body: Some(
                    TopUp {
                        query_id: query_id(now),
                    }
                    .to_cell()?,
                ),
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
            return Ok(OutMessage {
                dest: escrow.clone(),
                value: REQUEST_VALUE,
                bounce: true,
                body: Some(
                    Refund {
                        query_id: query_id(now),
                    }
                    .to_cell()?,
                ),
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
            OwnerAction::SetStake {
                stake: stake.nano(),
            }
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
            payable(escrow, to, "--to")?;
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
            payable(escrow, refund_to, "--refund-to")?;
            OwnerAction::RequestClose {
                refund_to: refund_to.clone(),
            }
        }
    };
    request(key, escrow, state.owner_seqno, now, action)
}

/// The contract's "payable" rule (exit 1016): workchain 0 or -1, not the escrow itself.
fn payable(escrow: &StdAddr, to: &StdAddr, flag: &str) -> Result<(), EscrowError> {
    if to == escrow {
        return Err(refused(format!(
            "{flag} is the escrow itself: name another address (default: this key's wallet)"
        )));
    }
    if to.anycast.is_some() || (to.workchain != 0 && to.workchain != -1) {
        return Err(refused(format!(
            "{flag} {to}: the escrow pays only standard addresses (no anycast) in workchain \
             0 or -1"
        )));
    }
    Ok(())
}

/// Parses a TON address: raw `0:<64 hex>` or user-friendly base64 (either alphabet).
pub fn parse_address(text: &str) -> Result<StdAddr, EscrowError> {
    cocoon_billing::address::parse_address(text).map_err(|e| {
        refused(format!(
            "'{}' is not a usable TON address: {e}",
            text.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_billing::layout::{OwnerMessage, Prices};
    use tycho_types::cell::{CellBuilder, HashBytes};

    fn key() -> AccountKey {
        AccountKey::from_seed(&[3; 32]).unwrap()
    }

    fn ton(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    fn state(balance: &str, stake: &str) -> EscrowState {
        EscrowState {
            owner: key().id().0,
            balance: ton(balance).nano(),
            stake: ton(stake).nano(),
            total_charged: 0,
            owner_seqno: 4,
            unlock_at: 0,
            close_delay: 100,
        }
    }

    fn refusal(result: Result<OutMessage, EscrowError>) -> String {
        result.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn billing_owner_operations_follow_the_contracts_rules() {
        let key = key();
        let escrow = StdAddr::new(0, HashBytes([7; 32]));
        let to = StdAddr::new(0, HashBytes([8; 32]));
        let now = 1_800_000_000;
        let open = state("10", "2");
        let run = |s: &EscrowState, op: Operation| operation(&key, &escrow, s, &op, now);

        // The stake only goes up, and only within the balance.
        let up = run(&open, Operation::SetStake { stake: ton("3") }).unwrap();
        let body = OwnerMessage::from_cell(up.body.as_ref().unwrap()).unwrap();
        body.verify(&key.id().0).unwrap();
        assert_eq!(body.request.seqno, 4);
        assert_eq!(body.request.escrow, escrow);
        assert_eq!(
            u64::from(body.request.valid_until),
            now + REQUEST_VALIDITY_SECS
        );
        assert_eq!(
            body.request.action,
            OwnerAction::SetStake {
                stake: 3_000_000_000
            }
        );
        assert!(refusal(run(
            &open,
            Operation::SetStake {
                stake: ton("1.999999999")
            }
        ))
        .contains("can only go up"));
        assert!(refusal(run(
            &open,
            Operation::SetStake {
                stake: ton("9.990000001")
            }
        ))
        .contains("more than the escrow holds"));

        // Withdraw: only above stake and storage reserve (10 - 2 - 0.01 = 7.99).
        let all = run(
            &open,
            Operation::Withdraw {
                amount: ton("7.99"),
                to: to.clone(),
            },
        )
        .unwrap();
        let body = OwnerMessage::from_cell(all.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body.request.action,
            OwnerAction::Withdraw {
                amount: 7_990_000_000,
                to: to.clone()
            }
        );
        let err = refusal(run(
            &open,
            Operation::Withdraw {
                amount: ton("7.990000001"),
                to: to.clone(),
            },
        ));
        assert!(err.contains("at most 7.990000000 TON"), "{err}");

        // The escrow cannot pay itself (the contract's exit 1016).
        assert!(refusal(run(
            &open,
            Operation::Withdraw {
                amount: ton("1"),
                to: escrow.clone(),
            },
        ))
        .contains("--to is the escrow itself"));
        assert!(refusal(run(
            &open,
            Operation::Close {
                refund_to: escrow.clone()
            }
        ))
        .contains("--refund-to is the escrow itself"));

        // Refund only after close and its delay; close only once.
        assert!(refusal(run(&open, Operation::Refund)).contains("is open"));
        run(
            &open,
            Operation::Close {
                refund_to: to.clone(),
            },
        )
        .unwrap();
        let closing = EscrowState {
            unlock_at: (now + 50) as u32,
            ..open
        };
        assert!(refusal(run(&closing, Operation::Refund)).contains("in 50 s"));
        assert!(refusal(run(
            &closing,
            Operation::Close {
                refund_to: to.clone()
            }
        ))
        .contains("already closing"));
        assert!(
            refusal(run(&closing, Operation::TopUp { amount: ton("1") }))
                .contains("no more top-ups")
        );
        let due = EscrowState {
            unlock_at: now as u32,
            ..open
        };
        let refund = run(&due, Operation::Refund).unwrap();
        Refund::from_cell(refund.body.as_ref().unwrap()).unwrap();

        // Someone else's escrow: refused before anything is signed.
        let theirs = EscrowState {
            owner: [1; 32],
            ..open
        };
        assert!(
            refusal(run(&theirs, Operation::TopUp { amount: ton("1") })).contains("is owned by")
        );
    }

    #[test]
    fn billing_deploy_carries_the_state_init_then_the_stake() {
        let key = key();
        let mut b = CellBuilder::new();
        b.store_u32(0xc0de).unwrap();
        let terms = EscrowTerms {
            code: b.build().unwrap(),
            owner: key.id().0,
            close_delay: 60,
            prices: Prices::default(),
        };
        let escrow = terms.address().unwrap();
        let messages = deploy(&key, &terms, ton("5"), Some(ton("1")), 1_800_000_000).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].dest, escrow);
        assert_eq!(messages[0].value, 5_000_000_000);
        let init = messages[0].state_init.as_ref().unwrap();
        assert_eq!(init.repr_hash(), &escrow.address);
        TopUp::from_cell(messages[0].body.as_ref().unwrap()).unwrap();
        let stake = OwnerMessage::from_cell(messages[1].body.as_ref().unwrap()).unwrap();
        assert_eq!(stake.request.seqno, 0);
        assert_eq!(
            stake.request.action,
            OwnerAction::SetStake {
                stake: 1_000_000_000
            }
        );
        // No stake: the top-up alone. A stake the deposit cannot hold: refused.
        assert_eq!(deploy(&key, &terms, ton("5"), None, 0).unwrap().len(), 1);
        let err = deploy(&key, &terms, ton("1"), Some(ton("0.95")), 0).unwrap_err();
        assert!(err.to_string().contains("at most 0.940000000 TON"), "{err}");
        assert!(deploy(&key, &terms, ton("0.01"), None, 0).is_err());
    }

    #[test]
    fn billing_owner_requests_fit_a_wallet_message() {
        // Every owner action, through the wallet's message builder (see REQUEST_VALUE).
        let key = key();
        let escrow = StdAddr::new(0, HashBytes([7; 32]));
        let to = StdAddr::new(0, HashBytes([8; 32]));
        let open = state("10", "2");
        let closing = EscrowState {
            unlock_at: 1,
            ..open
        };
        for (s, op) in [
            (&open, Operation::SetStake { stake: ton("3") }),
            (
                &open,
                Operation::Withdraw {
                    amount: ton("1"),
                    to: to.clone(),
                },
            ),
            (&open, Operation::Close { refund_to: to }),
            (&open, Operation::TopUp { amount: ton("1") }),
            (&closing, Operation::Refund),
        ] {
            let message = operation(&key, &escrow, s, &op, 1_800_000_000).unwrap();
            cocoon_billing::wallet::internal_message_cell(&message)
                .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        }
    }

    #[test]
    fn billing_addresses_parse_in_raw_and_friendly_forms() {
        let raw = format!("0:{}", "ab".repeat(32));
        let address = parse_address(&raw).unwrap();
        let friendly = address.display_base64_url(true).to_string();
        assert_eq!(parse_address(&friendly).unwrap(), address);
        let err = parse_address("EQnot-an-address").unwrap_err().to_string();
        assert!(err.contains("is not a usable TON address"), "{err}");
    }
}
