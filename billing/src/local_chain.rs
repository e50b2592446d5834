//! An in-process TON chain that runs real bytecode.
//!
//! Why: the escrow's rules live in its TVM code, so tests (and the host agent's embedded
//! default) must run that code, with the fees the network would charge, without a network.
//! This module wraps `tycho-executor` (the same transaction executor a validator runs) with
//! a map of accounts, a controlled clock, logical time and a message queue: an external or
//! test message runs to completion, every internal message it causes included (bounces
//! too), in logical-time order. Gas, storage and forwarding fees come from the blockchain
//! config, so they are the network's (`blockchain-config.boc`, a mainnet config).
//!
//! The chain is `Send` (no VM values are kept between calls), so a host can hold it in a
//! `Mutex`.

use std::collections::{BTreeMap, HashMap};

use num_bigint::BigInt;
use tycho_executor::{Executor, ExecutorInspector, ExecutorParams, ParsedConfig, TxError};
use tycho_types::cell::{
    Cell, CellBuilder, CellFamily as _, CellSlice, CellSliceRange, HashBytes, Lazy, Load,
};
use tycho_types::dict::Dict;
use tycho_types::models::{
    Account, AccountState, BlockchainConfig, BlockchainConfigParams, ComputePhase,
    CurrencyCollection, GlobalCapability, IntAddr, IntMsgInfo, MsgInfo, OptionalAccount,
    OwnedMessage, ShardAccount, StateInit, StdAddr, StorageInfo, StorageUsed, TxInfo,
    WorkchainDescription,
};
use tycho_types::num::Tokens;
use tycho_vm::{OwnedCellSlice, RcStackValue, SafeRc, VmCaller, VmGetterArgs};

use crate::layout::{decode_boc, BocLimits};
use crate::{Error, Result};

/// The committed blockchain config fixture (mainnet, from `@ton/sandbox` 0.41.0; see
/// `billing/fixtures/README.md`).
pub const DEFAULT_CONFIG_BOC: &[u8] = include_bytes!("../fixtures/blockchain-config.boc");

/// Most transactions one `send_*` call may cause (a guard against message loops).
pub const MAX_TRANSACTIONS_PER_SEND: usize = 10_000;

/// Status of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// No account at this address.
    NonExist,
    /// Holds a balance, no code yet.
    Uninit,
    /// Has code and data.
    Active,
    /// Frozen for unpaid storage.
    Frozen,
}

impl From<tycho_types::models::AccountStatus> for AccountStatus {
    fn from(status: tycho_types::models::AccountStatus) -> Self {
        use tycho_types::models::AccountStatus as S;
        match status {
            S::NotExists => Self::NonExist,
            S::Uninit => Self::Uninit,
            S::Active => Self::Active,
            S::Frozen => Self::Frozen,
        }
    }
}

/// What [`LocalChain::account`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Balance in nanoton.
    pub balance: u128,
    /// Status.
    pub status: AccountStatus,
    /// Code, when active.
    pub code: Option<Cell>,
    /// Data, when active.
    pub data: Option<Cell>,
    /// Logical time after the last transaction.
    pub last_lt: u64,
}

/// A message a transaction sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Destination (`None` for an external outbound message).
    pub dest: Option<StdAddr>,
    /// Value in nanoton (0 for external).
    pub value: u128,
    /// Forwarding fee carried by the message (paid by the sender, beyond `total_fees`).
    pub fwd_fee: u128,
    /// Bounce flag.
    pub bounce: bool,
    /// Whether it is a bounce of a failed message.
    pub bounced: bool,
    /// Body.
    pub body: Cell,
    /// Its logical time.
    pub created_lt: u64,
}

/// One executed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSummary {
    /// The account.
    pub account: StdAddr,
    /// Logical time of the transaction.
    pub lt: u64,
    /// Unix time.
    pub now: u32,
    /// Compute phase exit code; `None` if the compute phase was skipped.
    pub exit_code: Option<i32>,
    /// Action phase result code (0: ok), if the action phase ran.
    pub action_result_code: Option<i32>,
    /// Gas used by the compute phase.
    pub gas_used: u64,
    /// Compute and action phases succeeded and nothing was aborted.
    pub success: bool,
    /// The transaction was aborted (its state changes reverted).
    pub aborted: bool,
    /// The account was destroyed.
    pub destroyed: bool,
    /// Everything the transaction charged in fees (storage, gas, action), nanoton.
    pub total_fees: u128,
    /// The value the inbound message brought (0 for external).
    pub in_value: u128,
    /// Whether the inbound message was external.
    pub in_external: bool,
    /// Whether the inbound message was a bounce.
    pub in_bounced: bool,
    /// Messages it sent.
    pub out_messages: Vec<SentMessage>,
    /// Balance before.
    pub balance_before: u128,
    /// Balance after.
    pub balance_after: u128,
    /// Status after.
    pub end_status: AccountStatus,
    /// The transaction cell (its hash is the transaction hash).
    pub transaction: Cell,
}

/// A test message from any address (the sender is not debited).
#[derive(Debug, Clone)]
pub struct InternalMessage {
    /// Claimed sender.
    pub src: StdAddr,
    /// Destination.
    pub dest: StdAddr,
    /// Value in nanoton.
    pub value: u128,
    /// Bounce flag.
    pub bounce: bool,
    /// Body (empty if none).
    pub body: Option<Cell>,
    /// StateInit to deploy with.
    pub state_init: Option<StateInit>,
}

/// A stack value of a get method's arguments or results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackValue {
    /// `null`.
    Null,
    /// An integer (TVM's are 257-bit).
    Int(BigInt),
    /// A NaN integer.
    NaN,
    /// A cell.
    Cell(Cell),
    /// A slice (as the cell of its remaining bits and references).
    Slice(Cell),
    /// A builder (as the cell it would build).
    Builder(Cell),
    /// A tuple.
    Tuple(Vec<StackValue>),
    /// A continuation (not representable here).
    Continuation,
}

impl StackValue {
    /// The integer, if it is one.
    pub fn as_int(&self) -> Option<&BigInt> {
        match self {
            Self::Int(value) => Some(value),
            _ => None,
        }
    }

    /// The integer as a u128, if it is a non-negative one that fits.
    pub fn as_u128(&self) -> Option<u128> {
        self.as_int().and_then(|v| u128::try_from(v).ok())
    }

    /// The integer as an i128, if it fits.
    pub fn as_i128(&self) -> Option<i128> {
        self.as_int().and_then(|v| i128::try_from(v).ok())
    }

    /// The cell of a cell, slice or builder.
    pub fn as_cell(&self) -> Option<&Cell> {
        match self {
            Self::Cell(c) | Self::Slice(c) | Self::Builder(c) => Some(c),
            _ => None,
        }
    }

    /// A slice holding an `addr_std` (as get methods return addresses).
    pub fn as_address(&self) -> Option<StdAddr> {
        let cell = self.as_cell()?;
        let mut slice = cell.as_slice().ok()?;
        StdAddr::load_from(&mut slice).ok()
    }

    fn to_vm(&self) -> Result<RcStackValue> {
        Ok(match self {
            Self::Null => tycho_vm::Stack::make_null(),
            Self::NaN => tycho_vm::Stack::make_nan(),
            Self::Int(value) => RcStackValue::new_dyn_value(value.clone()),
            Self::Cell(cell) => SafeRc::into_dyn_value(SafeRc::new(cell.clone())),
            Self::Slice(cell) => {
                RcStackValue::new_dyn_value(OwnedCellSlice::new_allow_exotic(cell.clone()))
            }
            Self::Builder(cell) => {
                let mut builder = CellBuilder::new();
                builder.store_slice(cell.as_slice()?)?;
                SafeRc::into_dyn_value(SafeRc::new(builder))
            }
            Self::Tuple(items) => {
                let items = items.iter().map(Self::to_vm).collect::<Result<Vec<_>>>()?;
                RcStackValue::new_dyn_value(items)
            }
            Self::Continuation => {
                return Err(Error::Chain("continuations cannot be passed".into()));
            }
        })
    }

    fn from_vm(value: &RcStackValue) -> Result<Self> {
        use tycho_vm::StackValueType as T;
        let Some(ty) = T::from_raw(value.raw_ty()) else {
            return Err(Error::Chain("unknown stack value type".into()));
        };
        Ok(match ty {
            T::Null => Self::Null,
            T::Int => match value.as_int() {
                Some(int) => Self::Int(int.clone()),
                None => Self::NaN,
            },
            T::Cell => match value.as_cell() {
                Some(cell) => Self::Cell(cell.clone()),
                None => return Err(Error::Chain("malformed cell on the stack".into())),
            },
            T::Slice => match value.as_cell_slice() {
                Some(slice) => Self::Slice(CellBuilder::build_from(slice.apply())?),
                None => return Err(Error::Chain("malformed slice on the stack".into())),
            },
            T::Builder => match value.as_cell_builder() {
                Some(builder) => Self::Builder(builder.clone().build()?),
                None => return Err(Error::Chain("malformed builder on the stack".into())),
            },
            T::Tuple => match value.as_tuple() {
                Some(items) => Self::Tuple(items.iter().map(Self::from_vm).collect::<Result<_>>()?),
                None => return Err(Error::Chain("malformed tuple on the stack".into())),
            },
            T::Cont => Self::Continuation,
        })
    }
}

/// What a get method returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMethodResult {
    /// TVM exit code (0 or 1: success).
    pub exit_code: i32,
    /// The stack, bottom first (the method's first result first).
    pub stack: Vec<StackValue>,
    /// Gas used.
    pub gas_used: u64,
}

impl GetMethodResult {
    /// Whether the method succeeded.
    pub fn success(&self) -> bool {
        self.exit_code == 0 || self.exit_code == 1
    }
}

/// The chain.
pub struct LocalChain {
    config: ParsedConfig,
    params: ExecutorParams,
    accounts: HashMap<StdAddr, ShardAccount>,
    transactions: HashMap<StdAddr, Vec<TxSummary>>,
    now: u32,
    lt: u64,
}

impl std::fmt::Debug for LocalChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChain")
            .field("accounts", &self.accounts.len())
            .field("now", &self.now)
            .field("lt", &self.lt)
            .finish()
    }
}

fn chain_err(e: impl std::fmt::Display) -> Error {
    Error::Chain(e.to_string())
}

fn tokens(value: u128) -> Result<Tokens> {
    if value > Tokens::MAX.into_inner() {
        return Err(Error::AmountTooLarge(value));
    }
    Ok(Tokens::new(value))
}

fn system_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// Re-encodes config param 12 entries stored as `workchain_v2#a7` (current mainnet configs)
/// as `workchain#a6` with the common fields, which is what `tycho-types` 0.3.6 parses (the
/// executor only needs the workchain table to validate destinations). Returns whether
/// anything changed.
pub fn normalize_workchains(params: &mut BlockchainConfigParams) -> Result<bool> {
    let Some(raw) = params.get_raw_cell(12)? else {
        return Ok(false);
    };
    let mut slice = raw.as_slice()?;
    let dict = Dict::<i32, CellSlice<'_>>::load_from(&mut slice)?;
    let mut changed = false;
    let mut fixed = Dict::<i32, WorkchainDescription>::new();
    for entry in dict.iter() {
        let (workchain, mut value) = entry?;
        let tag = value.get_u8(0)?;
        let description = match tag {
            0xa6 => WorkchainDescription::load_from(&mut value)?,
            0xa7 => {
                changed = true;
                value.skip_first(8, 0)?;
                let mut b = CellBuilder::new();
                b.store_u8(0xa6)?;
                b.store_slice(value)?;
                let cell = b.build()?;
                WorkchainDescription::load_from(&mut cell.as_slice()?)?
            }
            other => {
                return Err(Error::WrongTag {
                    what: "WorkchainDescr",
                    expected: 0xa6,
                    found: u32::from(other),
                })
            }
        };
        fixed.set(workchain, description)?;
    }
    if changed {
        params.set_workchains(&fixed)?;
    }
    Ok(changed)
}

/// Parses a config BoC: either the root of the `ConfigParams` dictionary (as
/// `@ton/sandbox` ships it) or a serialized `BlockchainConfig`. Param 12 is normalized
/// (see [`normalize_workchains`]).
pub fn parse_config(boc: &[u8]) -> Result<BlockchainConfig> {
    let root = decode_boc(boc, &BocLimits::STATE)?;
    let mut params = BlockchainConfigParams::from_raw(root);
    normalize_workchains(&mut params)?;
    let address = match params.get_raw(0)? {
        Some(mut slice) => slice.load_u256()?,
        None => HashBytes::ZERO,
    };
    Ok(BlockchainConfig { address, params })
}

impl LocalChain {
    /// A chain with the given config BoC (see [`parse_config`]), its clock at the system
    /// time.
    pub fn new(config_boc: &[u8]) -> Result<Self> {
        let raw = parse_config(config_boc)?;
        let now = system_now();
        let config = ParsedConfig::parse(raw, now)?;
        let capabilities = config.global.capabilities;
        let params = ExecutorParams {
            disable_delete_frozen_accounts: true,
            full_body_in_bounced: capabilities.contains(GlobalCapability::CapFullBodyInBounced),
            charge_action_fees_on_fail: true,
            strict_extra_currency: true,
            authority_marks_enabled: capabilities.contains(GlobalCapability::CapSuspendByMarks),
            vm_modifiers: tycho_vm::BehaviourModifiers {
                signature_with_id: capabilities
                    .contains(GlobalCapability::CapSignatureWithId)
                    .then_some(config.global_id),
                enable_signature_domains: capabilities
                    .contains(GlobalCapability::CapSignatureDomain),
                ..Default::default()
            },
            ..Default::default()
        };
        Ok(Self {
            config,
            params,
            accounts: HashMap::new(),
            transactions: HashMap::new(),
            now,
            lt: 1_000_000,
        })
    }

    /// A chain with the committed mainnet config ([`DEFAULT_CONFIG_BOC`]).
    pub fn with_default_config() -> Result<Self> {
        Self::new(DEFAULT_CONFIG_BOC)
    }

    /// The parsed config.
    pub fn config(&self) -> &BlockchainConfig {
        &self.config.raw
    }

    /// The clock (unix seconds).
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Sets the clock (it may go back, for tests; storage fees never go negative).
    pub fn set_now(&mut self, now: u32) -> Result<()> {
        self.now = now;
        self.config.update_storage_prices(now)?;
        Ok(())
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, secs: u32) -> Result<()> {
        self.set_now(self.now.saturating_add(secs))
    }

    /// The current logical time (above every transaction's).
    pub fn lt(&self) -> u64 {
        self.lt
    }

    fn load_account(&self, addr: &StdAddr) -> Result<Option<Account>> {
        match self.accounts.get(addr) {
            Some(shard) => Ok(shard.load_account()?),
            None => Ok(None),
        }
    }

    fn store_account(
        &mut self,
        addr: &StdAddr,
        account: Account,
        last: (HashBytes, u64),
    ) -> Result<()> {
        let shard = ShardAccount {
            account: Lazy::new(&OptionalAccount(Some(account)))?,
            last_trans_hash: last.0,
            last_trans_lt: last.1,
        };
        self.accounts.insert(addr.clone(), shard);
        Ok(())
    }

    /// Credits `nanoton` to an account, creating it (uninit) if absent. No transaction.
    pub fn airdrop(&mut self, addr: &StdAddr, nanoton: u128) -> Result<()> {
        let amount = CurrencyCollection::new(tokens(nanoton)?.into_inner());
        let last = self
            .accounts
            .get(addr)
            .map(|s| (s.last_trans_hash, s.last_trans_lt))
            .unwrap_or_default();
        let account = match self.load_account(addr)? {
            Some(mut account) => {
                account.balance = account.balance.checked_add(&amount)?;
                account
            }
            None => Account {
                address: IntAddr::Std(addr.clone()),
                storage_stat: StorageInfo {
                    used: StorageUsed::ZERO,
                    storage_extra: Default::default(),
                    last_paid: self.now,
                    due_payment: None,
                },
                last_trans_lt: 0,
                balance: amount,
                state: AccountState::Uninit,
            },
        };
        self.store_account(addr, account, last)
    }

    /// The account's state.
    pub fn account(&self, addr: &StdAddr) -> Result<AccountInfo> {
        Ok(match self.load_account(addr)? {
            None => AccountInfo {
                balance: 0,
                status: AccountStatus::NonExist,
                code: None,
                data: None,
                last_lt: 0,
            },
            Some(account) => {
                let (status, code, data) = match account.state {
                    AccountState::Uninit => (AccountStatus::Uninit, None, None),
                    AccountState::Frozen(_) => (AccountStatus::Frozen, None, None),
                    AccountState::Active(init) => (AccountStatus::Active, init.code, init.data),
                };
                AccountInfo {
                    balance: account.balance.tokens.into_inner(),
                    status,
                    code,
                    data,
                    last_lt: account.last_trans_lt,
                }
            }
        })
    }

    /// Every transaction of an account, oldest first.
    pub fn transactions(&self, addr: &StdAddr) -> Vec<TxSummary> {
        self.transactions.get(addr).cloned().unwrap_or_default()
    }

    /// Runs an external inbound message (a BoC, e.g. a wallet transfer) and everything it
    /// causes. An external message the contract does not accept is an error
    /// ([`Error::ExternalNotAccepted`]) and changes nothing.
    pub fn send_external(&mut self, boc: &[u8]) -> Result<Vec<TxSummary>> {
        let limits = BocLimits {
            max_bytes: 65_535,
            max_cells: 8192,
            max_depth: 512,
        };
        let cell = decode_boc(boc, &limits)?;
        let message = cell.parse::<OwnedMessage>()?;
        let dest = match &message.info {
            MsgInfo::ExtIn(info) => match &info.dst {
                IntAddr::Std(addr) => addr.clone(),
                IntAddr::Var(_) => return Err(Error::Chain("var address destination".into())),
            },
            _ => return Err(Error::Chain("not an external inbound message".into())),
        };
        self.run_cascade(dest, true, cell)
    }

    /// Runs an internal message from any address (the sender is not debited) and
    /// everything it causes.
    pub fn send_internal(&mut self, msg: InternalMessage) -> Result<Vec<TxSummary>> {
        let body = msg.body.unwrap_or_else(Cell::empty_cell);
        let message = OwnedMessage {
            info: MsgInfo::Int(IntMsgInfo {
                ihr_disabled: true,
                bounce: msg.bounce,
                bounced: false,
                src: IntAddr::Std(msg.src),
                dst: IntAddr::Std(msg.dest.clone()),
                value: CurrencyCollection::new(tokens(msg.value)?.into_inner()),
                extra_flags: Default::default(),
                fwd_fee: Tokens::ZERO,
                created_lt: self.lt,
                created_at: self.now,
            }),
            init: msg.state_init,
            body: (CellSliceRange::full(body.as_ref()), body.clone()),
            layout: None,
        };
        let cell = CellBuilder::build_from(message)?;
        self.lt += 1;
        self.run_cascade(msg.dest, false, cell)
    }

    fn run_cascade(&mut self, dest: StdAddr, external: bool, cell: Cell) -> Result<Vec<TxSummary>> {
        let mut summaries = Vec::new();
        let first = self.execute(&dest, external, cell)?;
        let mut queue = BTreeMap::<(u64, u64), (StdAddr, Cell)>::new();
        let mut order = 0u64;
        let mut enqueue = |queue: &mut BTreeMap<_, _>, out: &[(Option<StdAddr>, u64, Cell)]| {
            for (dest, created_lt, cell) in out {
                if let Some(dest) = dest {
                    queue.insert((*created_lt, order), (dest.clone(), cell.clone()));
                    order += 1;
                }
            }
        };
        enqueue(&mut queue, &first.1);
        summaries.push(first.0);
        while let Some((_, (dest, cell))) = queue.pop_first() {
            if summaries.len() >= MAX_TRANSACTIONS_PER_SEND {
                return Err(Error::Chain(format!(
                    "more than {MAX_TRANSACTIONS_PER_SEND} transactions from one message"
                )));
            }
            let (summary, out) = self.execute(&dest, false, cell)?;
            enqueue(&mut queue, &out);
            summaries.push(summary);
        }
        Ok(summaries)
    }

    /// Executes one transaction and commits it; returns its summary and its internal out
    /// messages (destination, lt, cell).
    #[allow(clippy::type_complexity)]
    fn execute(
        &mut self,
        addr: &StdAddr,
        external: bool,
        msg: Cell,
    ) -> Result<(TxSummary, Vec<(Option<StdAddr>, u64, Cell)>)> {
        let empty;
        let state = match self.accounts.get(addr) {
            Some(state) => state,
            None => {
                empty = ShardAccount {
                    account: Lazy::new(&OptionalAccount::EMPTY)?,
                    last_trans_hash: HashBytes::ZERO,
                    last_trans_lt: 0,
                };
                &empty
            }
        };
        let balance_before = state
            .load_account()?
            .map(|a| a.balance.tokens.into_inner())
            .unwrap_or(0);
        let mut params = self.params.clone();
        params.block_unixtime = self.now;
        params.block_lt = self.lt;
        params.rand_seed = HashBytes::from({
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&self.lt.to_be_bytes());
            seed
        });
        let executor = Executor::new(&params, &self.config).with_min_lt(self.lt);
        let mut inspector = ExecutorInspector::default();
        let uncommitted =
            match executor.begin_ordinary_ext(addr, external, msg, state, Some(&mut inspector)) {
                Ok(tx) => tx,
                Err(TxError::Skipped) => {
                    return Err(Error::ExternalNotAccepted {
                        exit_code: inspector.exit_code,
                    })
                }
                Err(TxError::Fatal(e)) => return Err(chain_err(format!("{e:#}"))),
            };
        let output = uncommitted
            .commit()
            .map_err(|e| chain_err(format!("{e:#}")))?;
        let transaction = output.transaction.load()?;
        let info = transaction.load_info()?;
        let TxInfo::Ordinary(info) = info else {
            return Err(Error::Chain("unexpected tick-tock transaction".into()));
        };
        let (exit_code, gas_used, compute_ok) = match &info.compute_phase {
            ComputePhase::Skipped(_) => (None, 0, false),
            ComputePhase::Executed(phase) => (
                Some(phase.exit_code),
                phase.gas_used.into_inner(),
                phase.success,
            ),
        };
        let action_result_code = info.action_phase.as_ref().map(|a| a.result_code);
        let action_ok = info.action_phase.as_ref().is_some_and(|a| a.success);

        let (in_value, in_bounced) = match transaction.load_in_msg()? {
            Some(message) => match message.info {
                MsgInfo::Int(info) => (info.value.tokens.into_inner(), info.bounced),
                _ => (0, false),
            },
            None => (0, false),
        };

        let mut out_messages = Vec::new();
        let mut internal = Vec::new();
        for lazy in &output.transaction_meta.out_msgs {
            let message = lazy.load()?;
            let body = CellBuilder::build_from(message.body.0.apply(&message.body.1)?)?;
            let cell = lazy.inner().clone();
            match message.info {
                MsgInfo::Int(info) => {
                    let dest = match info.dst {
                        IntAddr::Std(addr) => Some(addr),
                        IntAddr::Var(_) => None,
                    };
                    internal.push((dest.clone(), info.created_lt, cell));
                    out_messages.push(SentMessage {
                        dest,
                        value: info.value.tokens.into_inner(),
                        fwd_fee: info.fwd_fee.into_inner(),
                        bounce: info.bounce,
                        bounced: info.bounced,
                        body,
                        created_lt: info.created_lt,
                    });
                }
                MsgInfo::ExtOut(info) => out_messages.push(SentMessage {
                    dest: None,
                    value: 0,
                    fwd_fee: 0,
                    bounce: false,
                    bounced: false,
                    body,
                    created_lt: info.created_lt,
                }),
                MsgInfo::ExtIn(_) => {}
            }
        }

        let balance_after = output.new_state_meta.balance.tokens.into_inner();
        let summary = TxSummary {
            account: addr.clone(),
            lt: transaction.lt,
            now: transaction.now,
            exit_code,
            action_result_code,
            gas_used,
            success: compute_ok && action_ok && !info.aborted,
            aborted: info.aborted,
            destroyed: info.destroyed,
            total_fees: output.transaction_meta.total_fees.into_inner(),
            in_value,
            in_external: external,
            in_bounced,
            out_messages,
            balance_before,
            balance_after,
            end_status: transaction.end_status.into(),
            transaction: output.transaction.inner().clone(),
        };

        self.lt = self.lt.max(output.transaction_meta.next_lt) + 1;
        if output.new_state_meta.exists {
            self.accounts.insert(addr.clone(), output.new_state);
        } else {
            self.accounts.remove(addr);
        }
        self.transactions
            .entry(addr.clone())
            .or_default()
            .push(summary.clone());
        Ok((summary, internal))
    }

    /// Runs a get method by name (e.g. `seqno`) with arguments (first argument first).
    pub fn run_get_method(
        &self,
        addr: &StdAddr,
        name: &str,
        args: &[StackValue],
    ) -> Result<GetMethodResult> {
        let Some(account) = self.load_account(addr)? else {
            return Err(Error::Chain(format!("no account at {addr}")));
        };
        let caller = VmCaller {
            libraries: Dict::new(),
            behaviour_modifiers: self.params.vm_modifiers,
            config: self.config.raw.params.clone(),
        };
        let stack = args
            .iter()
            .map(StackValue::to_vm)
            .collect::<Result<Vec<_>>>()?;
        let mut getter_args = VmGetterArgs::default();
        getter_args.now = self.now;
        let output = caller
            .call_getter_ext(&account, name, stack, &getter_args, None)
            .map_err(chain_err)?;
        Ok(GetMethodResult {
            exit_code: output.exit_code,
            stack: output
                .stack
                .iter()
                .map(StackValue::from_vm)
                .collect::<Result<_>>()?,
            gas_used: output.gas_used,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_local_chain_fixture_config_parses() {
        // The fixture is stored normalized: nothing to re-encode.
        let root = decode_boc(DEFAULT_CONFIG_BOC, &BocLimits::STATE).expect("boc");
        let mut params = BlockchainConfigParams::from_raw(root);
        assert!(!normalize_workchains(&mut params).expect("normalize"));
        let config = parse_config(DEFAULT_CONFIG_BOC).expect("config");
        let workchains = config.params.get_workchains().expect("param 12");
        let basechain = workchains.get(0).expect("get").expect("workchain 0");
        assert!(basechain.active && basechain.accept_msgs);
        // Mainnet global id.
        let parsed = ParsedConfig::parse(config, 1_767_225_600).expect("parsed");
        assert_eq!(parsed.global_id, -239);
        assert!(parsed.gas_prices.gas_price > 0);
        let chain = LocalChain::with_default_config().expect("chain");
        let _ = format!("{chain:?}");
    }

    #[test]
    fn billing_local_chain_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<LocalChain>();
        assert_send::<TxSummary>();
    }

    #[test]
    fn billing_local_chain_clock_and_airdrop() {
        let mut chain = LocalChain::with_default_config().expect("chain");
        chain.set_now(1_767_225_600).expect("now");
        chain.advance(10).expect("advance");
        assert_eq!(chain.now(), 1_767_225_610);
        let addr = StdAddr::new(0, HashBytes([5; 32]));
        assert_eq!(
            chain.account(&addr).expect("acc").status,
            AccountStatus::NonExist
        );
        chain.airdrop(&addr, 1_000).expect("airdrop");
        chain.airdrop(&addr, 500).expect("airdrop");
        let info = chain.account(&addr).expect("acc");
        assert_eq!(info.status, AccountStatus::Uninit);
        assert_eq!(info.balance, 1_500);
    }

    #[test]
    fn billing_local_chain_bounce_returns_value() {
        let mut chain = LocalChain::with_default_config().expect("chain");
        chain.set_now(1_767_225_600).expect("now");
        let src = StdAddr::new(0, HashBytes([1; 32]));
        let dest = StdAddr::new(0, HashBytes([2; 32]));
        chain.airdrop(&src, 1_000_000_000).expect("airdrop");
        // To an address with no code, bounceable: the value comes back less fees.
        let txs = chain
            .send_internal(InternalMessage {
                src: src.clone(),
                dest: dest.clone(),
                value: 500_000_000,
                bounce: true,
                body: None,
                state_init: None,
            })
            .expect("send");
        assert_eq!(txs.len(), 2, "{txs:#?}");
        let (to_dest, back) = (&txs[0], &txs[1]);
        assert_eq!(to_dest.account, dest);
        assert!(to_dest.exit_code.is_none(), "compute skipped (no state)");
        assert!(to_dest.aborted);
        assert_eq!(to_dest.out_messages.len(), 1);
        let bounce = &to_dest.out_messages[0];
        assert!(bounce.bounced && !bounce.bounce);
        assert_eq!(bounce.dest.as_ref(), Some(&src));
        assert!(bounce.value < 500_000_000 && bounce.value > 490_000_000);
        assert_eq!(back.account, src);
        assert!(back.in_bounced);
        assert_eq!(back.in_value, bounce.value);
        assert_eq!(
            chain.account(&dest).expect("acc").status,
            AccountStatus::NonExist
        );
        // The sender was not debited (test message) and got the bounce.
        assert_eq!(
            chain.account(&src).expect("acc").balance,
            back.balance_after
        );
        assert_eq!(
            back.balance_after,
            1_000_000_000 + bounce.value - back.total_fees
        );
        assert_eq!(chain.transactions(&src).len(), 1);

        // Non-bounceable: the value stays at the new uninit account.
        let txs = chain
            .send_internal(InternalMessage {
                src: src.clone(),
                dest: dest.clone(),
                value: 100_000_000,
                bounce: false,
                body: None,
                state_init: None,
            })
            .expect("send");
        assert_eq!(txs.len(), 1);
        let info = chain.account(&dest).expect("acc");
        assert_eq!(info.status, AccountStatus::Uninit);
        assert_eq!(info.balance, 100_000_000 - txs[0].total_fees);
    }
}

/// Regenerates `fixtures/blockchain-config.boc` from the BoC in `@ton/sandbox`'s
/// `dist/config/defaultConfig.js` (decoded from base64 into the file named by
/// `COCOON_SANDBOX_CONFIG_BOC`): `cargo test -p cocoon-billing --features local-chain --
/// --ignored billing_local_chain_regenerate_fixture`.
#[cfg(test)]
mod fixture {
    use super::*;

    #[test]
    #[ignore = "regenerates the committed fixture from a downloaded @ton/sandbox"]
    fn billing_local_chain_regenerate_fixture() {
        let path = std::env::var("COCOON_SANDBOX_CONFIG_BOC").expect("COCOON_SANDBOX_CONFIG_BOC");
        let original = std::fs::read(path).expect("read");
        let root = decode_boc(&original, &BocLimits::STATE).expect("boc");
        let mut params = BlockchainConfigParams::from_raw(root);
        assert!(
            normalize_workchains(&mut params).expect("normalize"),
            "nothing to change"
        );
        let root = params.as_dict().root().clone().expect("root");
        let out = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/blockchain-config.boc"
        );
        std::fs::write(out, tycho_types::boc::Boc::encode(root)).expect("write");
    }
}
