//! Reading an escrow from the chain: `get_escrow`, `get_guest(key)` and `get_prices`,
//! each within a deadline, parsed strictly.
//!
//! Why strict: these numbers decide what the agent sends and what the guest may serve
//! (the guest admits requests from the balance and stake the agent reports), and a chain
//! API is outside the agent's control. A result of the wrong shape is an error, never a
//! zero.

use std::time::Duration;

use cocoon_billing::address::StdAddr;
use cocoon_billing::chain::{AccountStatus, Chain, StackValue};
use cocoon_billing::layout::Prices;
use num_bigint::{BigInt, Sign};

use crate::error::{Error, Result};

/// `get_escrow()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EscrowState {
    pub owner: [u8; 32],
    pub balance: u128,
    pub stake: u128,
    pub total_charged: u128,
    pub owner_seqno: u32,
    pub unlock_at: u32,
    pub close_delay: u32,
}

/// `get_guest(key)`: the last voucher the escrow paid for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestOnChain {
    pub seq: u64,
    pub charged: u128,
}

/// Runs `what` within `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = cocoon_billing::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Chain(format!("{what}: {e}"))),
        Err(_) => Err(Error::Chain(format!("{what}: no answer within {limit:?}"))),
    }
}

fn shape(method: &str, stack: &[StackValue]) -> Error {
    Error::Chain(format!("{method}: unexpected result {stack:?}"))
}

fn uint<T: TryFrom<u128>>(method: &str, stack: &[StackValue], index: usize) -> Result<T> {
    stack
        .get(index)
        .and_then(StackValue::as_u128)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| shape(method, stack))
}

/// Reads an escrow; `None` when no contract is deployed at the address.
pub async fn escrow_state(
    chain: &dyn Chain,
    limit: Duration,
    escrow: &StdAddr,
) -> Result<Option<EscrowState>> {
    let account = within(limit, "account state", chain.account_state(escrow)).await?;
    if account.status != AccountStatus::Active {
        return Ok(None);
    }
    let method = "get_escrow";
    let stack = within(limit, method, chain.run_get_method(escrow, method, &[])).await?;
    if stack.len() != 7 {
        return Err(shape(method, &stack));
    }
    let owner = stack[0]
        .as_u256_bytes()
        .ok_or_else(|| shape(method, &stack))?;
    Ok(Some(EscrowState {
        owner,
        balance: uint(method, &stack, 1)?,
        stake: uint(method, &stack, 2)?,
        total_charged: uint(method, &stack, 3)?,
        owner_seqno: uint(method, &stack, 4)?,
        unlock_at: uint(method, &stack, 5)?,
        close_delay: uint(method, &stack, 6)?,
    }))
}

/// Reads what an escrow has paid under a guest key.
pub async fn guest_state(
    chain: &dyn Chain,
    limit: Duration,
    escrow: &StdAddr,
    key: &[u8; 32],
) -> Result<GuestOnChain> {
    let method = "get_guest";
    let arg = StackValue::int(BigInt::from_bytes_be(Sign::Plus, key));
    let stack = within(limit, method, chain.run_get_method(escrow, method, &[arg])).await?;
    if stack.len() != 2 {
        return Err(shape(method, &stack));
    }
    Ok(GuestOnChain {
        seq: uint(method, &stack, 0)?,
        charged: uint(method, &stack, 1)?,
    })
}

/// Reads an escrow's price table (fixed at deployment: it is part of the address).
pub async fn prices(chain: &dyn Chain, limit: Duration, escrow: &StdAddr) -> Result<Prices> {
    let method = "get_prices";
    let stack = within(limit, method, chain.run_get_method(escrow, method, &[])).await?;
    if stack.len() != 3 {
        return Err(shape(method, &stack));
    }
    Ok(Prices {
        prompt_per_million: uint(method, &stack, 0)?,
        cached_per_million: uint(method, &stack, 1)?,
        completion_per_million: uint(method, &stack, 2)?,
    })
}

/// Parses `0:<hex>` (or a user-friendly form) from the ledger or a guest.
pub fn address(text: &str) -> Result<StdAddr> {
    cocoon_billing::address::parse_address(text)
        .map_err(|e| Error::Chain(format!("address {text:?}: {e}")))
}

/// Hex of a 32-byte key.
pub fn key_from_hex(text: &str) -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key)
        .map_err(|e| Error::Chain(format!("guest key {text:?}: {e}")))?;
    Ok(key)
}
