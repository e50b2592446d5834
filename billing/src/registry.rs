//! The registry contract (`billing/contracts/registry.tolk`, `billing/REGISTRY.md`): a
//! publisher's on-chain list of the reference values it vouches for (image digests per
//! TEE, model digests, price tables), changed only by requests the publisher key signed,
//! with every change kept in a history the get methods read.
//!
//! Why on chain: a signed manifest is a file a client must be handed and kept current; a
//! registry is one address whose state anyone reads, and a publisher withdraws a value
//! (a vulnerable image, a retired model) for every client at once, with the time it did so
//! on record. The cells here are built and parsed like [`crate::layout`]'s: strict parsers,
//! signatures over the representation hash of the request cell, and the address derived
//! from the committed code and the publisher key alone, so a client that knows the
//! publisher's key can check that an address is that publisher's registry.
//!
//! The readers ([`read_registry`], [`read_entry`], [`read_event`], [`read_history`]) go
//! through [`Chain`], so they work on the local chain and on a TON HTTP API alike.

use std::collections::BTreeMap;

use num_bigint::{BigInt, Sign};
use ring::signature::Ed25519KeyPair;
use tycho_types::cell::{Cell, CellBuilder, CellContext, CellFamily as _, CellSlice, HashBytes};
use tycho_types::cell::{Load, Store};
use tycho_types::dict::Dict;
use tycho_types::models::{StateInit, StdAddr};

use crate::chain::{AccountStatus, Chain, StackValue};
use crate::layout::{
    expect_u32, load_addr, load_child, load_key, load_signature, sign_payload, state_init_address,
    store_addr, store_key, verify_signed, CellLayout, PublicKey, Signature,
};
use crate::{Error, Result};

/// The registry contract's compiled code, as committed in `contracts/build/registry.boc`
/// (built by `make contracts`, checked by `make contracts-check`).
const REGISTRY_CODE_BOC: &[u8] = include_bytes!("../contracts/build/registry.boc");

/// The registry contract's code cell.
pub fn registry_code() -> Cell {
    static CODE: std::sync::OnceLock<Cell> = std::sync::OnceLock::new();
    CODE.get_or_init(|| {
        // The BoC is part of this binary, not input; the test below decodes it on every
        // build of the tests, so a corrupt file never reaches a release.
        tycho_types::boc::Boc::decode(REGISTRY_CODE_BOC)
            .expect("billing/contracts/build/registry.boc is a valid BoC (checked by tests)")
    })
    .clone()
}

/// Hex of the registry code cell's representation hash (what `registry.code-hash` holds).
pub fn registry_code_hash_hex() -> String {
    hex::encode(registry_code().repr_hash().as_array())
}

/// `"REGR"`: the tag of a signed [`PublisherRequest`].
pub const TAG_PUBLISHER_REQUEST: u32 = 0x5245_4752;
/// `"PUBS"`: the op of a [`PublishMessage`].
pub const OP_PUBLISH: u32 = 0x5055_4253;
/// Action byte of an add request (and of an add event).
pub const ACTION_ADD: u8 = 0x01;
/// Action byte of a remove request (and of a remove event).
pub const ACTION_REMOVE: u8 = 0x02;

/// What a reference value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A TDX image: the image digest of the measurements (`cocoon_attestation`'s
    /// `image_digest` over MRTD and RTMR0-2).
    ImageTdx = 1,
    /// An SEV-SNP image: the image digest of the launch MEASUREMENT.
    ImageSevSnp = 2,
    /// A model's SHA-256 (`model.sha256` of the measured config).
    ModelSha256 = 3,
    /// A model disk's dm-verity root hash (`model.verity_root` of the measured config).
    ModelVerityRoot = 4,
    /// The SHA-256 of a canonical price table (`PriceTable::sha256_hex`).
    PriceTable = 5,
}

impl EntryKind {
    /// Every kind, in numeric order.
    pub const ALL: [EntryKind; 5] = [
        Self::ImageTdx,
        Self::ImageSevSnp,
        Self::ModelSha256,
        Self::ModelVerityRoot,
        Self::PriceTable,
    ];

    /// The byte the contract stores.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The kind of a byte, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The name the command line uses (`image-tdx`, `image-sev-snp`, `model-sha256`,
    /// `model-verity-root`, `price-table`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ImageTdx => "image-tdx",
            Self::ImageSevSnp => "image-sev-snp",
            Self::ModelSha256 => "model-sha256",
            Self::ModelVerityRoot => "model-verity-root",
            Self::PriceTable => "price-table",
        }
    }

    /// The kind a name names.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| Error::Invalid {
                what: "registry entry kind",
                reason: format!(
                    "'{name}' is not one of {}",
                    Self::ALL.map(Self::name).join(", ")
                ),
            })
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn load_kind(slice: &mut CellSlice<'_>) -> Result<EntryKind> {
    let code = slice.load_u8()?;
    EntryKind::from_code(code).ok_or(Error::WrongTag {
        what: "registry entry kind",
        expected: u32::from(EntryKind::ImageTdx.code()),
        found: u32::from(code),
    })
}

/// The registry contract's exit codes (the compute phase's exit code of a refused message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum RegistryExitCode {
    /// Not a `REGR` request, or its signature does not verify under the publisher key.
    BadSignature = 2001,
    /// The request names another registry.
    WrongRegistry = 2002,
    /// `request.seqno ≠ seqno` (a replay, or a request out of order).
    WrongSeqno = 2003,
    /// `now > valid_until`.
    Expired = 2004,
    /// An entry kind the registry does not know.
    BadKind = 2005,
    /// Add of a value registered now.
    AlreadyRegistered = 2006,
    /// Remove of a value not registered now.
    NotRegistered = 2007,
    /// Unknown op or action.
    UnknownOp = 0xffff,
}

impl RegistryExitCode {
    /// Every exit code, in numeric order.
    pub const ALL: [RegistryExitCode; 8] = [
        Self::BadSignature,
        Self::WrongRegistry,
        Self::WrongSeqno,
        Self::Expired,
        Self::BadKind,
        Self::AlreadyRegistered,
        Self::NotRegistered,
        Self::UnknownOp,
    ];

    /// The numeric code.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The named code for a number, if it is one of the registry's.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Domain of the TDX image value.
const TDX_IMAGE_DOMAIN: &[u8] = b"cocoon/registry/image/tdx/v1\0";
/// Domain of the SEV-SNP image value.
const SNP_IMAGE_DOMAIN: &[u8] = b"cocoon/registry/image/sev-snp/v1\0";

/// The `image-tdx` value: `SHA-256("cocoon/registry/image/tdx/v1\0" ‖ MRTD ‖ RTMR0 ‖ RTMR1
/// ‖ RTMR2)`, the registers a manifest pins for a TDX image (RTMR3 holds the runtime
/// config, registered as its own values).
pub fn tdx_image_value(mrtd: &[u8; 48], rtmr: [&[u8; 48]; 3]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(TDX_IMAGE_DOMAIN);
    context.update(mrtd);
    for register in rtmr {
        context.update(register);
    }
    digest32(context)
}

/// The `image-sev-snp` value: `SHA-256("cocoon/registry/image/sev-snp/v1\0" ‖
/// MEASUREMENT)`.
pub fn snp_image_value(measurement: &[u8; 48]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(SNP_IMAGE_DOMAIN);
    context.update(measurement);
    digest32(context)
}

fn digest32(context: ring::digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The key of an entry in the contract's map: the representation hash of the cell
/// `kind:uint8 value:uint256` (what `get_entry` computes too).
pub fn entry_key(kind: EntryKind, value: &[u8; 32]) -> Result<[u8; 32]> {
    let mut b = CellBuilder::new();
    b.store_u8(kind.code())?;
    b.store_u256(&HashBytes(*value))?;
    Ok(*b.build()?.repr_hash().as_array())
}

// ---- persistent data ----

/// `Entry = kind:uint8 value:uint256 added_at:uint32 removed_at:uint32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// What the value is.
    pub kind: EntryKind,
    /// The value.
    pub value: [u8; 32],
    /// When it was (last) added.
    pub added_at: u32,
    /// When it was removed; 0 while registered.
    pub removed_at: u32,
}

impl CellLayout for Entry {
    const NAME: &'static str = "Entry";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u8(self.kind.code())?;
        store_key(b, &self.value)?;
        b.store_u32(self.added_at)?;
        b.store_u32(self.removed_at)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            kind: load_kind(s)?,
            value: load_key(s)?,
            added_at: s.load_u32()?,
            removed_at: s.load_u32()?,
        })
    }
}

/// `Event = action:uint8 kind:uint8 value:uint256 at:uint32`: one line of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// [`ACTION_ADD`] or [`ACTION_REMOVE`].
    pub action: u8,
    /// What the value is.
    pub kind: EntryKind,
    /// The value.
    pub value: [u8; 32],
    /// When.
    pub at: u32,
}

impl Event {
    /// `add` or `remove`.
    pub fn action_name(&self) -> &'static str {
        if self.action == ACTION_ADD {
            "add"
        } else {
            "remove"
        }
    }
}

fn load_action(s: &mut CellSlice<'_>) -> Result<u8> {
    match s.load_u8()? {
        a @ (ACTION_ADD | ACTION_REMOVE) => Ok(a),
        other => Err(Error::WrongTag {
            what: "registry action",
            expected: u32::from(ACTION_ADD),
            found: u32::from(other),
        }),
    }
}

impl CellLayout for Event {
    const NAME: &'static str = "Event";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u8(self.action)?;
        b.store_u8(self.kind.code())?;
        store_key(b, &self.value)?;
        b.store_u32(self.at)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            action: load_action(s)?,
            kind: load_kind(s)?,
            value: load_key(s)?,
            at: s.load_u32()?,
        })
    }
}

/// Adapter so a [`CellLayout`] can be a dictionary value.
#[derive(Clone, Copy)]
struct DictValue<T>(T);

fn cell_error(e: Error) -> tycho_types::error::Error {
    match e {
        Error::Cell(e) => e,
        _ => tycho_types::error::Error::InvalidData,
    }
}

impl<T: CellLayout> Store for DictValue<T> {
    fn store_into(
        &self,
        builder: &mut CellBuilder,
        _: &dyn CellContext,
    ) -> std::result::Result<(), tycho_types::error::Error> {
        self.0.store(builder).map_err(cell_error)
    }
}

impl<'a, T: CellLayout> Load<'a> for DictValue<T> {
    fn load_from(
        slice: &mut CellSlice<'a>,
    ) -> std::result::Result<Self, tycho_types::error::Error> {
        T::load(slice).map(DictValue).map_err(cell_error)
    }
}

/// The registry's persistent data (`RegistryData` of REGISTRY.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryData {
    /// The publisher's Ed25519 public key.
    pub publisher: PublicKey,
    /// The next request's seqno.
    pub seqno: u32,
    /// How many entries are registered now.
    pub active: u32,
    /// How many events the history holds (indices 0 .. event_count − 1).
    pub event_count: u32,
    /// Every entry ever added, by [`entry_key`].
    pub entries: BTreeMap<[u8; 32], Entry>,
    /// The history, by index.
    pub events: BTreeMap<u32, Event>,
}

impl RegistryData {
    /// The initial data: what the address is derived from.
    pub fn initial(publisher: PublicKey) -> Self {
        Self {
            publisher,
            ..Self::default()
        }
    }
}

impl CellLayout for RegistryData {
    const NAME: &'static str = "RegistryData";
    const CANONICAL: bool = false;

    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        store_key(b, &self.publisher)?;
        b.store_u32(self.seqno)?;
        b.store_u32(self.active)?;
        b.store_u32(self.event_count)?;
        let mut entries = Dict::<HashBytes, DictValue<Entry>>::new();
        for (key, entry) in &self.entries {
            entries.set(HashBytes(*key), DictValue(*entry))?;
        }
        entries.store_into(b, Cell::empty_context())?;
        let mut events = Dict::<u32, DictValue<Event>>::new();
        for (index, event) in &self.events {
            events.set(*index, DictValue(*event))?;
        }
        events.store_into(b, Cell::empty_context())?;
        Ok(())
    }

    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        let publisher = load_key(s)?;
        let seqno = s.load_u32()?;
        let active = s.load_u32()?;
        let event_count = s.load_u32()?;
        let mut entries = BTreeMap::new();
        for item in Dict::<HashBytes, DictValue<Entry>>::load_from(s)?.iter() {
            let (key, DictValue(entry)) = item?;
            entries.insert(key.0, entry);
        }
        let mut events = BTreeMap::new();
        for item in Dict::<u32, DictValue<Event>>::load_from(s)?.iter() {
            let (index, DictValue(event)) = item?;
            events.insert(index, event);
        }
        Ok(Self {
            publisher,
            seqno,
            active,
            event_count,
            entries,
            events,
        })
    }
}

/// `StateInit { code: ^registry code, data: ^RegistryData::initial(publisher) }`.
pub fn registry_state_init(publisher: &PublicKey) -> Result<StateInit> {
    Ok(StateInit {
        split_depth: None,
        special: None,
        code: Some(registry_code()),
        data: Some(RegistryData::initial(*publisher).to_cell()?),
        libraries: Dict::new(),
    })
}

/// The registry's address: derived from the committed code and the publisher key alone.
pub fn registry_address(publisher: &PublicKey) -> Result<StdAddr> {
    state_init_address(&registry_state_init(publisher)?)
}

// ---- signed requests ----

/// What a publisher request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublisherAction {
    /// `add#01 kind:uint8 value:uint256`: register a value (again, if it was removed).
    Add {
        /// What it is.
        kind: EntryKind,
        /// The value.
        value: [u8; 32],
    },
    /// `remove#02 kind:uint8 value:uint256`: withdraw a registered value.
    Remove {
        /// What it is.
        kind: EntryKind,
        /// The value.
        value: [u8; 32],
    },
}

impl CellLayout for PublisherAction {
    const NAME: &'static str = "PublisherAction";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        let (action, kind, value) = match self {
            Self::Add { kind, value } => (ACTION_ADD, kind, value),
            Self::Remove { kind, value } => (ACTION_REMOVE, kind, value),
        };
        b.store_u8(action)?;
        b.store_u8(kind.code())?;
        store_key(b, value)
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        let action = load_action(s)?;
        let kind = load_kind(s)?;
        let value = load_key(s)?;
        Ok(if action == ACTION_ADD {
            Self::Add { kind, value }
        } else {
            Self::Remove { kind, value }
        })
    }
}

/// `PublisherRequest = tag:uint32 registry:MsgAddressInt seqno:uint32 valid_until:uint32
/// action:PublisherAction` (signed by the publisher key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublisherRequest {
    /// The registry.
    pub registry: StdAddr,
    /// Must equal the registry's `seqno`.
    pub seqno: u32,
    /// Unix time after which it is refused.
    pub valid_until: u32,
    /// What to do.
    pub action: PublisherAction,
}

impl PublisherRequest {
    /// Signs it and wraps it in a `publish` message body.
    pub fn sign(self, publisher: &Ed25519KeyPair, query_id: u64) -> Result<PublishMessage> {
        let signature = sign_payload(&self.to_cell()?, publisher);
        Ok(PublishMessage {
            query_id,
            signature,
            request: self,
        })
    }
}

impl CellLayout for PublisherRequest {
    const NAME: &'static str = "PublisherRequest";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(TAG_PUBLISHER_REQUEST)?;
        store_addr(b, &self.registry)?;
        b.store_u32(self.seqno)?;
        b.store_u32(self.valid_until)?;
        self.action.store(b)
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "PublisherRequest tag", TAG_PUBLISHER_REQUEST)?;
        Ok(Self {
            registry: load_addr(s)?,
            seqno: s.load_u32()?,
            valid_until: s.load_u32()?,
            action: PublisherAction::load(s)?,
        })
    }
}

/// `publish#50554253 query_id:uint64 signature:bits512 request:^PublisherRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishMessage {
    /// Query id.
    pub query_id: u64,
    /// Ed25519 over the request cell's hash, by the publisher key.
    pub signature: Signature,
    /// The request.
    pub request: PublisherRequest,
}

impl PublishMessage {
    /// Checks the signature under the publisher key.
    pub fn verify(&self, publisher: &PublicKey) -> Result<()> {
        verify_signed(&self.request.to_cell()?, &self.signature, publisher)
    }
}

impl CellLayout for PublishMessage {
    const NAME: &'static str = "publish";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(OP_PUBLISH)?;
        b.store_u64(self.query_id)?;
        b.store_raw(&self.signature, 512)?;
        b.store_reference(self.request.to_cell()?)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "publish op", OP_PUBLISH)?;
        Ok(Self {
            query_id: s.load_u64()?,
            signature: load_signature(s)?,
            request: load_child(s)?,
        })
    }
}

// ---- readers ----

/// `get_registry()`: `(publisher, seqno, active, event_count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryState {
    /// The publisher key.
    pub publisher: PublicKey,
    /// The next request's seqno.
    pub seqno: u32,
    /// Entries registered now.
    pub active: u32,
    /// Events in the history.
    pub event_count: u32,
}

/// `get_entry(kind, value)`: where a value stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// The registry never had it.
    NeverRegistered,
    /// Registered since `added_at`.
    Registered {
        /// When it was (last) added.
        added_at: u32,
    },
    /// Added, then removed.
    Removed {
        /// When it was (last) added.
        added_at: u32,
        /// When it was removed.
        removed_at: u32,
    },
}

fn bad_result(method: &str, stack: &[StackValue]) -> Error {
    Error::Invalid {
        what: "registry get method result",
        reason: format!("{method} returned {stack:?}"),
    }
}

fn stack_u32(method: &str, stack: &[StackValue], index: usize) -> Result<u32> {
    stack
        .get(index)
        .and_then(StackValue::as_int)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad_result(method, stack))
}

fn stack_u256(method: &str, stack: &[StackValue], index: usize) -> Result<[u8; 32]> {
    stack
        .get(index)
        .and_then(StackValue::as_u256_bytes)
        .ok_or_else(|| bad_result(method, stack))
}

fn u256_arg(value: &[u8; 32]) -> StackValue {
    StackValue::int(BigInt::from_bytes_be(Sign::Plus, value))
}

/// The registry's counters, or `None` when no contract is deployed at `registry`.
pub async fn read_registry(chain: &dyn Chain, registry: &StdAddr) -> Result<Option<RegistryState>> {
    if chain.account_state(registry).await?.status != AccountStatus::Active {
        return Ok(None);
    }
    let method = "get_registry";
    let stack = chain.run_get_method(registry, method, &[]).await?;
    Ok(Some(RegistryState {
        publisher: stack_u256(method, &stack, 0)?,
        seqno: stack_u32(method, &stack, 1)?,
        active: stack_u32(method, &stack, 2)?,
        event_count: stack_u32(method, &stack, 3)?,
    }))
}

/// Where `value` of `kind` stands in the (deployed) registry.
pub async fn read_entry(
    chain: &dyn Chain,
    registry: &StdAddr,
    kind: EntryKind,
    value: &[u8; 32],
) -> Result<EntryStatus> {
    let method = "get_entry";
    let args = [StackValue::int(kind.code()), u256_arg(value)];
    let stack = chain.run_get_method(registry, method, &args).await?;
    let status = stack_u32(method, &stack, 0)?;
    let added_at = stack_u32(method, &stack, 1)?;
    let removed_at = stack_u32(method, &stack, 2)?;
    match status {
        0 => Ok(EntryStatus::NeverRegistered),
        1 => Ok(EntryStatus::Registered { added_at }),
        2 => Ok(EntryStatus::Removed {
            added_at,
            removed_at,
        }),
        _ => Err(bad_result(method, &stack)),
    }
}

/// Event `index` of the history, `None` past its end.
pub async fn read_event(
    chain: &dyn Chain,
    registry: &StdAddr,
    index: u32,
) -> Result<Option<Event>> {
    let method = "get_event";
    let stack = chain
        .run_get_method(registry, method, &[StackValue::int(index)])
        .await?;
    let action = stack_u32(method, &stack, 0)?;
    if action == 0 {
        return Ok(None);
    }
    let kind = stack_u32(method, &stack, 1)?;
    Ok(Some(Event {
        action: u8::try_from(action)
            .ok()
            .filter(|a| matches!(*a, ACTION_ADD | ACTION_REMOVE))
            .ok_or_else(|| bad_result(method, &stack))?,
        kind: u8::try_from(kind)
            .ok()
            .and_then(EntryKind::from_code)
            .ok_or_else(|| bad_result(method, &stack))?,
        value: stack_u256(method, &stack, 2)?,
        at: stack_u32(method, &stack, 3)?,
    }))
}

/// Most events [`read_history`] reads in one call (one get method each).
pub const MAX_HISTORY: u32 = 1000;

/// Events `from ..` (at most `limit`, capped at [`MAX_HISTORY`]), oldest first.
pub async fn read_history(
    chain: &dyn Chain,
    registry: &StdAddr,
    from: u32,
    limit: u32,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let end = from.saturating_add(limit.min(MAX_HISTORY));
    for index in from..end {
        match read_event(chain, registry, index).await? {
            Some(event) => events.push(event),
            None => break,
        }
    }
    Ok(events)
}

/// The current entries, derived from the history (an entry is registered when its last
/// event is an add), in the order they were (last) added.
pub fn current_entries(history: &[Event]) -> Vec<Entry> {
    let mut by_value: BTreeMap<(EntryKind, [u8; 32]), Entry> = BTreeMap::new();
    for event in history {
        let entry = by_value.entry((event.kind, event.value)).or_insert(Entry {
            kind: event.kind,
            value: event.value,
            added_at: event.at,
            removed_at: 0,
        });
        if event.action == ACTION_ADD {
            entry.added_at = event.at;
            entry.removed_at = 0;
        } else {
            entry.removed_at = event.at;
        }
    }
    let mut current: Vec<Entry> = by_value
        .into_values()
        .filter(|e| e.removed_at == 0)
        .collect();
    current.sort_by_key(|e| e.added_at);
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
    }

    #[test]
    fn onchain_registry_code_decodes_and_matches_its_committed_hash() {
        let committed = include_str!("../contracts/build/registry.code-hash").trim();
        assert_eq!(registry_code_hash_hex(), committed);
    }

    #[test]
    fn onchain_registry_layouts_round_trip() {
        let publisher = crate::layout::public_key(&key(7));
        let registry = registry_address(&publisher).unwrap();
        for action in [
            PublisherAction::Add {
                kind: EntryKind::ImageTdx,
                value: [0xaa; 32],
            },
            PublisherAction::Remove {
                kind: EntryKind::PriceTable,
                value: [0x01; 32],
            },
        ] {
            let request = PublisherRequest {
                registry: registry.clone(),
                seqno: 3,
                valid_until: 1_800_000_300,
                action,
            };
            let message = request.clone().sign(&key(7), 42).unwrap();
            message.verify(&publisher).unwrap();
            assert!(message.verify(&crate::layout::public_key(&key(8))).is_err());
            let parsed = PublishMessage::from_boc(&message.to_boc().unwrap()).unwrap();
            assert_eq!(parsed, message);
            assert_eq!(
                PublisherRequest::from_cell(&request.to_cell().unwrap()).unwrap(),
                request
            );
        }
        let mut data = RegistryData::initial(publisher);
        let entry = Entry {
            kind: EntryKind::ModelSha256,
            value: [3; 32],
            added_at: 10,
            removed_at: 0,
        };
        data.entries
            .insert(entry_key(entry.kind, &entry.value).unwrap(), entry);
        data.events.insert(
            0,
            Event {
                action: ACTION_ADD,
                kind: entry.kind,
                value: entry.value,
                at: 10,
            },
        );
        data.active = 1;
        data.event_count = 1;
        assert_eq!(
            RegistryData::from_cell(&data.to_cell().unwrap()).unwrap(),
            data
        );
    }

    #[test]
    fn onchain_registry_parsers_refuse_unknown_kinds_and_actions() {
        let mut b = CellBuilder::new();
        b.store_u8(ACTION_ADD).unwrap();
        b.store_u8(9).unwrap();
        b.store_u256(&HashBytes([0; 32])).unwrap();
        assert!(PublisherAction::from_cell(&b.build().unwrap()).is_err());
        let mut b = CellBuilder::new();
        b.store_u8(3).unwrap();
        b.store_u8(1).unwrap();
        b.store_u256(&HashBytes([0; 32])).unwrap();
        assert!(PublisherAction::from_cell(&b.build().unwrap()).is_err());
        assert!(EntryKind::from_name("image").is_err());
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::from_name(kind.name()).unwrap(), kind);
        }
    }

    #[test]
    fn onchain_registry_address_depends_on_the_publisher_only() {
        let a = registry_address(&[1; 32]).unwrap();
        assert_eq!(a, registry_address(&[1; 32]).unwrap());
        assert_ne!(a, registry_address(&[2; 32]).unwrap());
    }

    #[test]
    fn onchain_registry_current_entries_follow_the_history() {
        let event = |action, value: u8, at| Event {
            action,
            kind: EntryKind::ModelSha256,
            value: [value; 32],
            at,
        };
        let history = [
            event(ACTION_ADD, 1, 10),
            event(ACTION_ADD, 2, 11),
            event(ACTION_REMOVE, 1, 12),
            event(ACTION_ADD, 1, 13),
            event(ACTION_REMOVE, 2, 14),
        ];
        let current = current_entries(&history);
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].value, [1; 32]);
        assert_eq!(current[0].added_at, 13);
    }
}
