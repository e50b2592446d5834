//! What the client and the host agent need from a TON chain, behind one trait.
//!
//! Why a trait: the same code (deploy and fund an escrow, read its state, settle, confirm by
//! `get_guest`) must run against the in-process [`LocalChain`](crate::local_chain::LocalChain)
//! in tests and the embedded default, and against the real network through a TON HTTP API
//! ([`crate::ton_http`]). Callers hold an `Arc<dyn Chain>` and do not know which.
//!
//! Why `async-trait` rather than `async fn` in the trait: a trait with native `async fn` is
//! not dyn-compatible, and callers pick the chain at run time (`Box<dyn Chain>`). The
//! `async-trait` crate boxes each call's future (one allocation per chain call, next to a
//! network round trip or a TVM run) and makes the futures `Send`, so they can be spawned.
//! Writing the boxed-future signatures by hand would do the same with less readable code.
//!
//! The answers are normalized to what both backends can say, so that a test over the local
//! chain means the same over HTTP:
//! - a get method's slice results come back as [`StackValue::Cell`] (toncenter reports
//!   slices and cells alike as `"cell"`); arguments still distinguish cells from slices;
//! - exit codes 0 and 1 are TVM's two successes; any other is
//!   [`Error::GetMethodFailed`]; a get method on an account without code fails with
//!   [`NO_CODE_EXIT_CODE`];
//! - an account with no balance and no transaction is [`AccountStatus::Nonexist`] (toncenter
//!   reports such an address as `uninitialized`).

use async_trait::async_trait;
use num_bigint::BigInt;
use tycho_types::cell::{Cell, Load as _};
use tycho_types::models::StdAddr;

use crate::{Error, Result};

/// The exit code reported for a get method on an account that has no code (not deployed,
/// frozen or nonexistent): TVM's code for running a null code cell.
pub const NO_CODE_EXIT_CODE: i32 = -13;

/// Most transactions [`Chain::transactions`] returns in one call (toncenter's own limit).
pub const MAX_TRANSACTIONS: usize = 100;

/// An account's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// Nothing at this address (no balance, no transaction).
    Nonexist,
    /// A balance without code.
    Uninit,
    /// Code and data.
    Active,
    /// Frozen for unpaid storage.
    Frozen,
}

/// What [`Chain::account_state`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    /// Balance in nanoton.
    pub balance: u128,
    /// Status.
    pub status: AccountStatus,
    /// Logical time of the account's last transaction (0: none).
    pub last_lt: u64,
}

/// A get method's argument or result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackValue {
    /// `null`.
    Null,
    /// An integer (TVM's are 257-bit signed, so `uint256` results such as keys fit).
    Int(BigInt),
    /// A cell.
    Cell(Cell),
    /// A slice, as the cell of its bits and references (arguments only: results come back as
    /// [`StackValue::Cell`], see the module docs).
    Slice(Cell),
    /// A tuple.
    Tuple(Vec<StackValue>),
}

impl StackValue {
    /// An integer value.
    pub fn int(value: impl Into<BigInt>) -> Self {
        Self::Int(value.into())
    }

    /// A slice holding `addr` (how get methods take addresses).
    pub fn address(addr: &StdAddr) -> Result<Self> {
        Ok(Self::Slice(tycho_types::cell::CellBuilder::build_from(
            addr,
        )?))
    }

    /// The integer, if it is one.
    pub fn as_int(&self) -> Option<&BigInt> {
        match self {
            Self::Int(value) => Some(value),
            _ => None,
        }
    }

    /// The integer as a `u128`, if it is a non-negative one that fits.
    pub fn as_u128(&self) -> Option<u128> {
        self.as_int().and_then(|v| u128::try_from(v).ok())
    }

    /// The integer as a `u64`, if it is a non-negative one that fits.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// The integer as 32 big-endian bytes (a `uint256` such as a key), if it is a
    /// non-negative one that fits.
    pub fn as_u256_bytes(&self) -> Option<[u8; 32]> {
        let value = self.as_int()?;
        if value.sign() == num_bigint::Sign::Minus || value.bits() > 256 {
            return None;
        }
        let bytes = value.magnitude().to_bytes_be();
        let mut out = [0u8; 32];
        out[32 - bytes.len()..].copy_from_slice(&bytes);
        Some(out)
    }

    /// The cell of a cell or slice.
    pub fn as_cell(&self) -> Option<&Cell> {
        match self {
            Self::Cell(cell) | Self::Slice(cell) => Some(cell),
            _ => None,
        }
    }

    /// An `addr_std` held by a cell or slice (as get methods return addresses).
    pub fn as_address(&self) -> Option<StdAddr> {
        let mut slice = self.as_cell()?.as_slice().ok()?;
        StdAddr::load_from(&mut slice).ok()
    }

    /// The value as a result reads (slices become cells, see the module docs).
    pub fn into_result(self) -> Self {
        match self {
            Self::Slice(cell) => Self::Cell(cell),
            Self::Tuple(items) => Self::Tuple(items.into_iter().map(Self::into_result).collect()),
            other => other,
        }
    }
}

/// A message in [`TransactionInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Sender (`None` for an inbound external message).
    pub source: Option<StdAddr>,
    /// Destination (`None` for an outbound external message).
    pub destination: Option<StdAddr>,
    /// Value in nanoton (0 for external messages).
    pub value: u128,
    /// Forwarding fee in nanoton.
    pub fwd_fee: u128,
    /// The message's logical time (0 for inbound external messages).
    pub created_lt: u64,
    /// Body (the empty cell if none).
    pub body: Cell,
}

/// One transaction, as [`Chain::transactions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    /// Logical time.
    pub lt: u64,
    /// Hash of the transaction cell.
    pub hash: [u8; 32],
    /// Unix time.
    pub utime: u32,
    /// Total fees in nanoton.
    pub fee: u128,
    /// The inbound message.
    pub in_msg: Option<MessageInfo>,
    /// Outbound messages, in order.
    pub out_msgs: Vec<MessageInfo>,
}

pub use crate::address::parse_address;

/// The user-friendly form toncenter prints (bounceable, base64url, mainnet flags).
pub fn friendly_address(addr: &StdAddr) -> String {
    addr.display_base64_url(true).to_string()
}

/// What the client and the host agent need from a chain. See the module docs for how the
/// answers are normalized across implementations.
#[async_trait]
pub trait Chain: Send + Sync {
    /// Submits an external message (a BoC) and returns the hash of its root cell. The local
    /// chain runs it and everything it causes before returning; a real network only queues
    /// it: confirm effects by state (a wallet's seqno, an escrow's counters), never by the
    /// hash alone.
    async fn send_boc(&self, boc: &[u8]) -> Result<[u8; 32]>;

    /// The account's balance, status and last logical time.
    async fn account_state(&self, addr: &StdAddr) -> Result<AccountState>;

    /// Runs a get method; returns its stack, first result first. An exit code other than 0
    /// or 1 is [`Error::GetMethodFailed`].
    async fn run_get_method(
        &self,
        addr: &StdAddr,
        method: &str,
        args: &[StackValue],
    ) -> Result<Vec<StackValue>>;

    /// The account's transactions, newest first, at most `limit` (capped at
    /// [`MAX_TRANSACTIONS`]).
    async fn transactions(&self, addr: &StdAddr, limit: usize) -> Result<Vec<TransactionInfo>> {
        self.transactions_before(addr, None, limit).await
    }

    /// The page of the account's transactions older than `before` (the logical time and
    /// hash of a transaction an earlier page returned; `None`: from the newest), newest
    /// first, at most `limit` (capped at [`MAX_TRANSACTIONS`]; a page may hold fewer even
    /// when older ones exist). Only an empty page means there are no older ones.
    async fn transactions_before(
        &self,
        addr: &StdAddr,
        before: Option<(u64, [u8; 32])>,
        limit: usize,
    ) -> Result<Vec<TransactionInfo>>;

    /// A wallet's `seqno`: 0 for a wallet not deployed yet (its first transfer deploys it).
    async fn wallet_seqno(&self, addr: &StdAddr) -> Result<u32> {
        let state = self.account_state(addr).await?;
        if state.status != AccountStatus::Active {
            return Ok(0);
        }
        let stack = self.run_get_method(addr, "seqno", &[]).await?;
        stack
            .first()
            .and_then(StackValue::as_int)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Error::Invalid {
                what: "seqno result",
                reason: format!("expected a 32-bit integer, got {stack:?}"),
            })
    }
}

/// Hash of the root cell of a BoC (how [`Chain::send_boc`] names the message), with the
/// bounds for untrusted input.
pub fn message_hash(boc: &[u8]) -> Result<[u8; 32]> {
    let cell = crate::layout::decode_boc(boc, &EXTERNAL_MESSAGE_LIMITS)?;
    Ok(cell.repr_hash().0)
}

/// Bounds on an external message BoC (a wallet v5 transfer of 255 charges fits well).
pub const EXTERNAL_MESSAGE_LIMITS: crate::layout::BocLimits = crate::layout::BocLimits {
    max_bytes: 65_535,
    max_cells: 8192,
    max_depth: 512,
};

#[cfg(feature = "local-chain")]
pub use local::SharedLocalChain;

#[cfg(feature = "local-chain")]
mod local {
    use std::sync::{Arc, Mutex, MutexGuard};

    use async_trait::async_trait;
    use tycho_types::cell::CellBuilder;
    use tycho_types::models::{IntAddr, MsgInfo, StdAddr};

    use super::{
        message_hash, AccountState, AccountStatus, Chain, MessageInfo, StackValue, TransactionInfo,
        MAX_TRANSACTIONS, NO_CODE_EXIT_CODE,
    };
    use crate::local_chain::{self, LocalChain, TxSummary};
    use crate::{Error, Result};

    /// A local chain shared by the host agent, its HTTP server and tests.
    pub type SharedLocalChain = Arc<Mutex<LocalChain>>;

    pub(crate) fn lock(chain: &SharedLocalChain) -> Result<MutexGuard<'_, LocalChain>> {
        chain
            .lock()
            .map_err(|_| Error::Chain("local chain lock poisoned".into()))
    }

    impl From<local_chain::AccountStatus> for AccountStatus {
        fn from(status: local_chain::AccountStatus) -> Self {
            match status {
                local_chain::AccountStatus::NonExist => Self::Nonexist,
                local_chain::AccountStatus::Uninit => Self::Uninit,
                local_chain::AccountStatus::Active => Self::Active,
                local_chain::AccountStatus::Frozen => Self::Frozen,
            }
        }
    }

    impl StackValue {
        pub(crate) fn to_local(&self) -> local_chain::StackValue {
            match self {
                Self::Null => local_chain::StackValue::Null,
                Self::Int(v) => local_chain::StackValue::Int(v.clone()),
                Self::Cell(c) => local_chain::StackValue::Cell(c.clone()),
                Self::Slice(c) => local_chain::StackValue::Slice(c.clone()),
                Self::Tuple(items) => {
                    local_chain::StackValue::Tuple(items.iter().map(Self::to_local).collect())
                }
            }
        }

        pub(crate) fn from_local(value: &local_chain::StackValue) -> Result<Self> {
            use local_chain::StackValue as L;
            Ok(match value {
                L::Null => Self::Null,
                L::Int(v) => Self::Int(v.clone()),
                L::Cell(c) | L::Slice(c) | L::Builder(c) => Self::Cell(c.clone()),
                L::Tuple(items) => {
                    Self::Tuple(items.iter().map(Self::from_local).collect::<Result<_>>()?)
                }
                L::NaN => return Err(Error::Chain("get method returned NaN".into())),
                L::Continuation => {
                    return Err(Error::Chain("get method returned a continuation".into()))
                }
            })
        }
    }

    /// The account state as [`Chain::account_state`] reports it.
    pub(crate) fn account_state(chain: &LocalChain, addr: &StdAddr) -> Result<AccountState> {
        let info = chain.account(addr)?;
        // The transaction's own lt, as toncenter's `last_transaction_id` names it (the
        // account's `last_trans_lt` is the lt after it).
        let last_lt = chain.transactions(addr).last().map_or(0, |tx| tx.lt);
        Ok(AccountState {
            balance: info.balance,
            status: info.status.into(),
            last_lt,
        })
    }

    /// Runs a get method with [`Chain::run_get_method`]'s rules.
    pub(crate) fn run_get_method(
        chain: &LocalChain,
        addr: &StdAddr,
        method: &str,
        args: &[StackValue],
    ) -> Result<Vec<StackValue>> {
        if chain.account(addr)?.status != local_chain::AccountStatus::Active {
            return Err(Error::GetMethodFailed {
                method: method.to_owned(),
                exit_code: NO_CODE_EXIT_CODE,
            });
        }
        let args = args.iter().map(StackValue::to_local).collect::<Vec<_>>();
        let result = chain.run_get_method(addr, method, &args)?;
        if !result.success() {
            return Err(Error::GetMethodFailed {
                method: method.to_owned(),
                exit_code: result.exit_code,
            });
        }
        result.stack.iter().map(StackValue::from_local).collect()
    }

    /// The account's transactions, newest first.
    pub(crate) fn transactions(
        chain: &LocalChain,
        addr: &StdAddr,
        before_lt: Option<u64>,
        limit: usize,
    ) -> Result<Vec<TransactionInfo>> {
        chain
            .transactions(addr)
            .iter()
            .rev()
            .filter(|tx| before_lt.is_none_or(|lt| tx.lt < lt))
            .take(limit.min(MAX_TRANSACTIONS))
            .map(transaction_info)
            .collect()
    }

    fn std_addr(addr: &IntAddr) -> Option<StdAddr> {
        match addr {
            IntAddr::Std(a) => Some(a.clone()),
            IntAddr::Var(_) => None,
        }
    }

    /// A local transaction in the shape toncenter reports.
    pub(crate) fn transaction_info(tx: &TxSummary) -> Result<TransactionInfo> {
        let parsed = tx.transaction.parse::<tycho_types::models::Transaction>()?;
        let in_msg = match parsed.load_in_msg()? {
            None => None,
            Some(message) => {
                let body = CellBuilder::build_from(message.body)?;
                Some(match message.info {
                    MsgInfo::Int(info) => MessageInfo {
                        source: std_addr(&info.src),
                        destination: std_addr(&info.dst),
                        value: info.value.tokens.into_inner(),
                        fwd_fee: info.fwd_fee.into_inner(),
                        created_lt: info.created_lt,
                        body,
                    },
                    MsgInfo::ExtIn(info) => MessageInfo {
                        source: None,
                        destination: std_addr(&info.dst),
                        value: 0,
                        fwd_fee: 0,
                        created_lt: 0,
                        body,
                    },
                    MsgInfo::ExtOut(_) => {
                        return Err(Error::Chain("outbound message as inbound".into()))
                    }
                })
            }
        };
        let out_msgs = tx
            .out_messages
            .iter()
            .map(|m| MessageInfo {
                source: Some(tx.account.clone()),
                destination: m.dest.clone(),
                value: m.value,
                fwd_fee: m.fwd_fee,
                created_lt: m.created_lt,
                body: m.body.clone(),
            })
            .collect();
        Ok(TransactionInfo {
            lt: tx.lt,
            hash: tx.transaction.repr_hash().0,
            utime: tx.now,
            fee: tx.total_fees,
            in_msg,
            out_msgs,
        })
    }

    /// Runs an external message to completion; returns its hash.
    pub(crate) fn send_boc(chain: &mut LocalChain, boc: &[u8]) -> Result<[u8; 32]> {
        let hash = message_hash(boc)?;
        chain.send_external(boc)?;
        Ok(hash)
    }

    /// Each call locks the chain and runs synchronously: a transaction or a get method takes
    /// milliseconds, and the chain must see calls one at a time anyway.
    #[async_trait]
    impl Chain for SharedLocalChain {
        async fn send_boc(&self, boc: &[u8]) -> Result<[u8; 32]> {
            send_boc(&mut *lock(self)?, boc)
        }

        async fn account_state(&self, addr: &StdAddr) -> Result<AccountState> {
            account_state(&*lock(self)?, addr)
        }

        async fn run_get_method(
            &self,
            addr: &StdAddr,
            method: &str,
            args: &[StackValue],
        ) -> Result<Vec<StackValue>> {
            run_get_method(&*lock(self)?, addr, method, args)
        }

        async fn transactions_before(
            &self,
            addr: &StdAddr,
            before: Option<(u64, [u8; 32])>,
            limit: usize,
        ) -> Result<Vec<TransactionInfo>> {
            transactions(&*lock(self)?, addr, before.map(|(lt, _)| lt), limit)
        }
    }
}

#[cfg(all(feature = "local-chain", feature = "ton-http"))]
pub(crate) use local::{
    account_state as local_account_state, lock as lock_local, send_boc as local_send_boc,
    transaction_info as local_transaction_info,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_chain_parses_addresses_in_both_forms() {
        // A public wallet address (non-bounceable form) and its raw form.
        let friendly = "UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3";
        let a = parse_address(friendly).expect("friendly");
        let raw = a.to_string();
        assert!(raw.starts_with("0:") && raw.len() == 66, "{raw}");
        assert_eq!(parse_address(&raw).expect("raw"), a);
        assert_eq!(parse_address(&friendly_address(&a)).expect("again"), a);
        let standard = a.display_base64(false).to_string();
        assert_eq!(parse_address(&standard).expect("standard"), a);
        // A broken checksum, garbage, an empty string.
        let mut broken = friendly.to_owned();
        broken.replace_range(47.., "8");
        assert!(parse_address(&broken).is_err());
        assert!(parse_address("0:zz").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn billing_chain_stack_value_accessors() {
        let key = [0xabu8; 32];
        let v = StackValue::Int(BigInt::from_bytes_be(num_bigint::Sign::Plus, &key));
        assert_eq!(v.as_u256_bytes(), Some(key));
        assert_eq!(v.as_u128(), None);
        assert_eq!(StackValue::int(7).as_u64(), Some(7));
        assert_eq!(StackValue::int(-1).as_u256_bytes(), None);
        let addr = StdAddr::new(0, tycho_types::cell::HashBytes([5; 32]));
        let slice = StackValue::address(&addr).expect("slice");
        assert_eq!(slice.as_address(), Some(addr.clone()));
        let cell = slice.clone().into_result();
        assert!(matches!(cell, StackValue::Cell(_)));
        assert_eq!(cell.as_address(), Some(addr));
    }
}
