//! Every cell layout of `billing/PROTOCOL.md`, built and parsed in one place.
//!
//! The escrow contract, the guest (which signs vouchers), the client (which signs
//! authorizations and owner requests) and the host agent (which sends charges) must agree on
//! these bits exactly: a signature is over the representation hash of a cell, so one bit of
//! difference is a refused charge. Each layout is a plain struct with a builder
//! ([`CellLayout::to_cell`]) and a strict parser ([`CellLayout::from_cell`]): the parser
//! rejects wrong tags, trailing bits or references, addresses with anycast and non-minimal
//! encodings (it rebuilds the cell and compares hashes), so whatever parses re-encodes to the
//! very cell that was signed.
//!
//! Untrusted bytes (a header, a BoC from the host) go through [`decode_boc`], which bounds
//! size, cell count and depth before any cell is built, and never panics.
//!
//! One deviation from the first version of PROTOCOL.md: a `Voucher` with every field inline
//! is 1078 bits, more than a cell holds (1023), so the three token counters live in a
//! referenced [`TokenCounts`] cell (`tokens:^TokenCounts`).

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use tycho_types::boc::de::{BocHeader, Options};
use tycho_types::cell::{
    Cell, CellBuilder, CellContext, CellFamily as _, CellSlice, HashBytes, Load, Store,
};
use tycho_types::dict::Dict;
use tycho_types::models::{StateInit, StdAddr};
use tycho_types::num::Tokens;

use crate::{Error, Result};

/// An Ed25519 public key (32 bytes).
pub type PublicKey = [u8; 32];
/// An Ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// What the escrow keeps for storage while it is open: 0.01 TON, in nanoton.
pub const STORAGE_RESERVE: u128 = 10_000_000;

/// Divisor of the price table: prices are per million tokens.
pub const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

/// The HTTP header a client sends its [`SignedAuthorization`] in (base64url, no padding, of
/// the BoC of the cell).
pub const AUTHORIZATION_HEADER: &str = "x-cocoon-escrow-authorization";

/// 32-bit tags that open each signed payload.
pub mod tag {
    /// `Voucher` ("VOUC").
    pub const VOUCHER: u32 = 0x564f_5543;
    /// `Authorization` ("AUTH").
    pub const AUTHORIZATION: u32 = 0x4155_5448;
    /// `OwnerRequest` ("OWNR").
    pub const OWNER_REQUEST: u32 = 0x4f57_4e52;
}

/// 32-bit op codes of message bodies.
pub mod op {
    /// `top_up#544f5055`: adds the message value (a deploy is a top-up with StateInit).
    pub const TOP_UP: u32 = 0x544f_5055;
    /// `charge#43484752`: pays out a voucher under an authorization.
    pub const CHARGE: u32 = 0x4348_4752;
    /// `owner#4f574e52`: a signed owner request.
    pub const OWNER: u32 = 0x4f57_4e52;
    /// `refund#52465544`: after `unlock_at`, everything to `refund_to`.
    pub const REFUND: u32 = 0x5246_5544;
    /// `payout#5041594f`: the body of what the escrow sends to a payout address.
    pub const PAYOUT: u32 = 0x5041_594f;
}

/// 8-bit tags of [`OwnerAction`].
pub mod action {
    /// `set_stake#01`.
    pub const SET_STAKE: u8 = 0x01;
    /// `withdraw#02`.
    pub const WITHDRAW: u8 = 0x02;
    /// `request_close#03`.
    pub const REQUEST_CLOSE: u8 = 0x03;
}

/// The escrow contract's exit codes (the compute phase's exit code of a refused message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ExitCode {
    /// `voucher.seq` not above the stored one, or the charge would go down.
    VoucherNotNewer = 1000,
    /// The voucher's signature does not verify under `voucher.guest_key`.
    BadVoucherSignature = 1001,
    /// The authorization's (or owner request's) signature does not verify under `owner`.
    BadOwnerSignature = 1002,
    /// The voucher (or owner request) names another escrow.
    WrongEscrow = 1003,
    /// The authorization names another escrow.
    WrongAuthorizationEscrow = 1004,
    /// The authorization is for another guest key than the voucher's.
    GuestKeyMismatch = 1005,
    /// The voucher's cumulative charge is above the authorization's cap.
    CapExceeded = 1006,
    /// `now ≥ expires_at + close_delay`, or a charge from `unlock_at` on (the escrow is
    /// closing and its refund is due).
    AuthorizationExpired = 1007,
    /// The escrow does not hold the charge (above its storage reserve).
    InsufficientBalance = 1008,
    /// A message without a body or with op 0: the escrow takes money only through `top_up`.
    PlainTransferRefused = 1009,
    /// `request.seqno ≠ owner_seqno`.
    WrongOwnerSeqno = 1010,
    /// `now > valid_until` of an owner request.
    OwnerRequestExpired = 1011,
    /// Not enough free balance for a withdrawal or a stake.
    InsufficientFreeBalance = 1012,
    /// Refund while not closing or before `unlock_at`, or a final charge while not closing
    /// (checked after every other charge condition).
    NotUnlocked = 1013,
    /// Already closing (second `request_close`, or a `top_up` after it).
    AlreadyClosing = 1014,
    /// A stake may only go up (lowering it only by closing).
    StakeDecrease = 1015,
    /// A `to` or `refund_to` address the escrow cannot pay (not `addr_std` on workchain 0
    /// or −1).
    BadAddress = 1016,
    /// Unknown op.
    UnknownOp = 0xffff,
}

impl ExitCode {
    /// Every exit code, in numeric order.
    pub const ALL: [ExitCode; 18] = [
        Self::VoucherNotNewer,
        Self::BadVoucherSignature,
        Self::BadOwnerSignature,
        Self::WrongEscrow,
        Self::WrongAuthorizationEscrow,
        Self::GuestKeyMismatch,
        Self::CapExceeded,
        Self::AuthorizationExpired,
        Self::InsufficientBalance,
        Self::PlainTransferRefused,
        Self::WrongOwnerSeqno,
        Self::OwnerRequestExpired,
        Self::InsufficientFreeBalance,
        Self::NotUnlocked,
        Self::AlreadyClosing,
        Self::StakeDecrease,
        Self::BadAddress,
        Self::UnknownOp,
    ];

    /// The numeric code.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The named code for a number, if it is one of the escrow's.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Limits for decoding an untrusted BoC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BocLimits {
    /// Most bytes of the serialized BoC.
    pub max_bytes: usize,
    /// Most cells in it.
    pub max_cells: usize,
    /// Most depth of the root's tree (a leaf has depth 0).
    pub max_depth: u16,
}

impl BocLimits {
    /// For signed payloads and message bodies (a `charge` body is 6 cells, depth 3).
    pub const PAYLOAD: Self = Self {
        max_bytes: 4096,
        max_cells: 64,
        max_depth: 16,
    };
    /// For account data and larger messages (a dictionary of 256-bit keys is up to 257 deep).
    pub const STATE: Self = Self {
        max_bytes: 1 << 20,
        max_cells: 1 << 16,
        max_depth: 512,
    };
}

/// Decodes a single-root BoC within `limits`: the byte size and cell count are checked
/// before any cell is built, the depth after.
pub fn decode_boc(bytes: &[u8], limits: &BocLimits) -> Result<Cell> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::BocTooLarge {
            what: "bytes",
            found: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let header = BocHeader::decode(bytes, &Options::exact(1))?;
    let cells = header.cells().len();
    if cells > limits.max_cells {
        return Err(Error::BocTooLarge {
            what: "cells",
            found: cells,
            max: limits.max_cells,
        });
    }
    let root = *header
        .roots()
        .first()
        .ok_or(Error::Boc(tycho_types::boc::de::Error::RootCellNotFound))?;
    let processed = header.finalize(Cell::empty_context())?;
    let cell = processed
        .get(root)
        .ok_or(Error::Boc(tycho_types::boc::de::Error::RootCellNotFound))?;
    let depth = cell.repr_depth();
    if depth > limits.max_depth {
        return Err(Error::BocTooLarge {
            what: "depth",
            found: usize::from(depth),
            max: usize::from(limits.max_depth),
        });
    }
    Ok(cell)
}

/// Encodes a cell tree as a BoC (single root, no index, no CRC).
pub fn encode_boc(cell: &Cell) -> Vec<u8> {
    tycho_types::boc::Boc::encode(cell)
}

/// base64url without padding (the header encoding).
pub fn base64url_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding (padding is tolerated), refusing input that would
/// decode to more than `max_bytes`.
pub fn base64url_decode(text: &str, max_bytes: usize) -> Result<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    // 4 characters carry 3 bytes.
    let decoded_len = trimmed.len() / 4 * 3 + (trimmed.len() % 4) * 3 / 4;
    if decoded_len > max_bytes {
        return Err(Error::BocTooLarge {
            what: "bytes",
            found: decoded_len,
            max: max_bytes,
        });
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|e| Error::Base64(e.to_string()))
}

/// A layout with a builder and a strict parser.
pub trait CellLayout: Sized {
    /// Name for errors.
    const NAME: &'static str;
    /// Whether [`CellLayout::from_cell`] checks that the cell re-encodes identically (true
    /// for everything that is signed or sent; false for contract state, whose dictionary
    /// encoding is the contract's business).
    const CANONICAL: bool = true;

    /// Appends the layout's bits and references.
    fn store(&self, builder: &mut CellBuilder) -> Result<()>;
    /// Reads the layout from the front of a slice.
    fn load(slice: &mut CellSlice<'_>) -> Result<Self>;

    /// Builds the cell.
    fn to_cell(&self) -> Result<Cell> {
        let mut builder = CellBuilder::new();
        self.store(&mut builder)?;
        Ok(builder.build()?)
    }

    /// Parses a whole cell: nothing may follow the layout, and (if [`Self::CANONICAL`]) the
    /// cell must be the one [`CellLayout::to_cell`] builds from the result.
    fn from_cell(cell: &Cell) -> Result<Self> {
        let mut slice = cell.as_slice()?;
        let value = Self::load(&mut slice)?;
        if !slice.is_empty() {
            return Err(Error::TrailingData(Self::NAME));
        }
        if Self::CANONICAL && value.to_cell()?.repr_hash() != cell.repr_hash() {
            return Err(Error::NonCanonical(Self::NAME));
        }
        Ok(value)
    }

    /// The BoC of the cell.
    fn to_boc(&self) -> Result<Vec<u8>> {
        Ok(encode_boc(&self.to_cell()?))
    }

    /// Parses an untrusted BoC within [`BocLimits::PAYLOAD`].
    fn from_boc(bytes: &[u8]) -> Result<Self> {
        Self::from_boc_with(bytes, &BocLimits::PAYLOAD)
    }

    /// Parses an untrusted BoC within `limits`.
    fn from_boc_with(bytes: &[u8], limits: &BocLimits) -> Result<Self> {
        Self::from_cell(&decode_boc(bytes, limits)?)
    }
}

// ---- field helpers ----

fn store_coins(builder: &mut CellBuilder, value: u128) -> Result<()> {
    if value > Tokens::MAX.into_inner() {
        return Err(Error::AmountTooLarge(value));
    }
    Tokens::new(value).store_into(builder, Cell::empty_context())?;
    Ok(())
}

fn load_coins(slice: &mut CellSlice<'_>) -> Result<u128> {
    Ok(Tokens::load_from(slice)?.into_inner())
}

pub(crate) fn store_addr(builder: &mut CellBuilder, addr: &StdAddr) -> Result<()> {
    if addr.anycast.is_some() {
        return Err(Error::Anycast);
    }
    addr.store_into(builder, Cell::empty_context())?;
    Ok(())
}

pub(crate) fn load_addr(slice: &mut CellSlice<'_>) -> Result<StdAddr> {
    let addr = StdAddr::load_from(slice)?;
    if addr.anycast.is_some() {
        return Err(Error::Anycast);
    }
    Ok(addr)
}

/// `MsgAddress` restricted to `addr_none` (None) or `addr_std` without anycast.
fn store_opt_addr(builder: &mut CellBuilder, addr: Option<&StdAddr>) -> Result<()> {
    match addr {
        Some(addr) => store_addr(builder, addr),
        None => Ok(builder.store_zeros(2)?),
    }
}

fn load_opt_addr(slice: &mut CellSlice<'_>) -> Result<Option<StdAddr>> {
    // addr_none$00; addr_std$10 (addr_extern$01 and addr_var$11 are refused).
    match slice.get_small_uint(0, 2)? {
        0b00 => {
            slice.skip_first(2, 0)?;
            Ok(None)
        }
        0b10 => Ok(Some(load_addr(slice)?)),
        other => Err(Error::WrongTag {
            what: "MsgAddress",
            expected: 0b10,
            found: u32::from(other),
        }),
    }
}

pub(crate) fn store_key(builder: &mut CellBuilder, key: &PublicKey) -> Result<()> {
    Ok(builder.store_u256(&HashBytes(*key))?)
}

pub(crate) fn load_key(slice: &mut CellSlice<'_>) -> Result<PublicKey> {
    Ok(slice.load_u256()?.0)
}

pub(crate) fn load_signature(slice: &mut CellSlice<'_>) -> Result<Signature> {
    let mut signature = [0u8; 64];
    slice.load_raw(&mut signature, 512)?;
    Ok(signature)
}

pub(crate) fn expect_u32(
    slice: &mut CellSlice<'_>,
    what: &'static str,
    expected: u32,
) -> Result<()> {
    let found = slice.load_u32()?;
    if found != expected {
        return Err(Error::WrongTag {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

pub(crate) fn load_child<T: CellLayout>(slice: &mut CellSlice<'_>) -> Result<T> {
    T::from_cell(&slice.load_reference_cloned()?)
}

// ---- signatures ----

/// Ed25519 signature over the cell's 32-byte representation hash (TON's
/// `check_signature(cell_hash(payload), sig, key)`).
pub fn sign_payload(cell: &Cell, key: &Ed25519KeyPair) -> Signature {
    let mut signature = [0u8; 64];
    signature.copy_from_slice(key.sign(cell.repr_hash().as_slice()).as_ref());
    signature
}

/// Checks an Ed25519 signature over the cell's representation hash.
pub fn verify_signed(cell: &Cell, signature: &Signature, key: &PublicKey) -> Result<()> {
    UnparsedPublicKey::new(&ED25519, key)
        .verify(cell.repr_hash().as_slice(), signature)
        .map_err(|_| Error::BadSignature)
}

/// The public key of a ring key pair, as the layouts store it.
pub fn public_key(key: &Ed25519KeyPair) -> PublicKey {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.public_key().as_ref());
    out
}

// ---- prices and charges ----

/// `Prices = prompt_per_million:uint64 cached_per_million:uint64 completion_per_million:uint64`
/// (nanoton per million tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prices {
    /// Per million prompt tokens not served from the prefix cache.
    pub prompt_per_million: u64,
    /// Per million prompt tokens served from the prefix cache.
    pub cached_per_million: u64,
    /// Per million completion tokens.
    pub completion_per_million: u64,
}

impl CellLayout for Prices {
    const NAME: &'static str = "Prices";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u64(self.prompt_per_million)?;
        b.store_u64(self.cached_per_million)?;
        b.store_u64(self.completion_per_million)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            prompt_per_million: s.load_u64()?,
            cached_per_million: s.load_u64()?,
            completion_per_million: s.load_u64()?,
        })
    }
}

/// `ceil(((prompt − min(cached,prompt))·pp + min(cached,prompt)·cp + completion·kp) / 1e6)`,
/// exactly as the escrow computes it (and as the guest's `PriceTable::charge`). Exact for
/// every input: the three products are divided separately and their remainders added, so
/// nothing overflows.
pub fn charge_for(prices: &Prices, prompt: u64, cached: u64, completion: u64) -> u128 {
    let cached = cached.min(prompt);
    let terms = [
        u128::from(prompt - cached) * u128::from(prices.prompt_per_million),
        u128::from(cached) * u128::from(prices.cached_per_million),
        u128::from(completion) * u128::from(prices.completion_per_million),
    ];
    let quotient: u128 = terms.iter().map(|t| t / TOKENS_PER_PRICE_UNIT).sum();
    let remainder: u128 = terms.iter().map(|t| t % TOKENS_PER_PRICE_UNIT).sum();
    quotient + remainder.div_ceil(TOKENS_PER_PRICE_UNIT)
}

// ---- escrow state ----

/// `GuestState = seq:uint64 charged:Coins receipts_root:uint256`: the last voucher paid
/// for a guest key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GuestState {
    /// Sequence of the last voucher paid.
    pub seq: u64,
    /// Cumulative charge paid under that key (nanoton).
    pub charged: u128,
    /// That voucher's receipts root (RFC 6962 tree head over receipts 1..seq).
    pub receipts_root: [u8; 32],
}

impl CellLayout for GuestState {
    const NAME: &'static str = "GuestState";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u64(self.seq)?;
        store_coins(b, self.charged)?;
        store_key(b, &self.receipts_root)
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            seq: s.load_u64()?,
            charged: load_coins(s)?,
            receipts_root: load_key(s)?,
        })
    }
}

/// Adapter so a [`GuestState`] can be a dictionary value.
#[derive(Clone, Copy)]
struct GuestValue(GuestState);

impl Store for GuestValue {
    fn store_into(
        &self,
        builder: &mut CellBuilder,
        _: &dyn CellContext,
    ) -> std::result::Result<(), tycho_types::error::Error> {
        self.0.store(builder).map_err(|e| match e {
            Error::Cell(e) => e,
            _ => tycho_types::error::Error::InvalidData,
        })
    }
}

impl<'a> Load<'a> for GuestValue {
    fn load_from(
        slice: &mut CellSlice<'a>,
    ) -> std::result::Result<Self, tycho_types::error::Error> {
        GuestState::load(slice)
            .map(GuestValue)
            .map_err(|e| match e {
                Error::Cell(e) => e,
                _ => tycho_types::error::Error::InvalidData,
            })
    }
}

/// The escrow's persistent data (`EscrowData` of PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EscrowData {
    /// Owner's Ed25519 public key.
    pub owner: PublicKey,
    /// Seconds between `request_close` and the forced refund.
    pub close_delay: u32,
    /// The guest's price table.
    pub prices: Prices,
    /// Stake (nanoton).
    pub stake: u128,
    /// Everything charged so far (nanoton).
    pub total_charged: u128,
    /// Next owner request's seqno.
    pub owner_seqno: u32,
    /// 0: open; otherwise closing, refund allowed from then.
    pub unlock_at: u32,
    /// Where a refund goes (`addr_none` until `request_close`).
    pub refund_to: Option<StdAddr>,
    /// Per guest key, the last voucher paid.
    pub guests: BTreeMap<PublicKey, GuestState>,
}

impl EscrowData {
    /// The initial data: what the address is derived from.
    pub fn initial(owner: PublicKey, close_delay: u32, prices: Prices) -> Self {
        Self {
            owner,
            close_delay,
            prices,
            ..Self::default()
        }
    }
}

impl CellLayout for EscrowData {
    const NAME: &'static str = "EscrowData";
    const CANONICAL: bool = false;

    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        store_key(b, &self.owner)?;
        b.store_u32(self.close_delay)?;
        b.store_reference(self.prices.to_cell()?)?;
        store_coins(b, self.stake)?;
        store_coins(b, self.total_charged)?;
        b.store_u32(self.owner_seqno)?;
        b.store_u32(self.unlock_at)?;
        store_opt_addr(b, self.refund_to.as_ref())?;
        let mut guests = Dict::<HashBytes, GuestValue>::new();
        for (key, state) in &self.guests {
            guests.set(HashBytes(*key), GuestValue(*state))?;
        }
        guests.store_into(b, Cell::empty_context())?;
        Ok(())
    }

    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        let owner = load_key(s)?;
        let close_delay = s.load_u32()?;
        let prices = load_child::<Prices>(s)?;
        let stake = load_coins(s)?;
        let total_charged = load_coins(s)?;
        let owner_seqno = s.load_u32()?;
        let unlock_at = s.load_u32()?;
        let refund_to = load_opt_addr(s)?;
        let dict = Dict::<HashBytes, GuestValue>::load_from(s)?;
        let mut guests = BTreeMap::new();
        for entry in dict.iter() {
            let (key, GuestValue(state)) = entry?;
            guests.insert(key.0, state);
        }
        Ok(Self {
            owner,
            close_delay,
            prices,
            stake,
            total_charged,
            owner_seqno,
            unlock_at,
            refund_to,
            guests,
        })
    }
}

/// `StateInit { code: ^code, data: ^data }` (no split depth, no special, no libraries).
pub fn escrow_state_init(code: &Cell, data: &EscrowData) -> Result<StateInit> {
    Ok(StateInit {
        split_depth: None,
        special: None,
        code: Some(code.clone()),
        data: Some(data.to_cell()?),
        libraries: Dict::new(),
    })
}

/// The cell of a StateInit.
pub fn state_init_cell(state_init: &StateInit) -> Result<Cell> {
    Ok(CellBuilder::build_from(state_init)?)
}

/// The address (workchain 0) of the StateInit: its representation hash.
pub fn state_init_address(state_init: &StateInit) -> Result<StdAddr> {
    Ok(StdAddr::new(0, *state_init_cell(state_init)?.repr_hash()))
}

/// The escrow's address: derived from the code, the owner key and the guest's measured
/// `close_delay` and `prices` alone.
pub fn escrow_address(
    code: &Cell,
    owner_key: &PublicKey,
    close_delay: u32,
    prices: &Prices,
) -> Result<StdAddr> {
    let data = EscrowData::initial(*owner_key, close_delay, *prices);
    state_init_address(&escrow_state_init(code, &data)?)
}

// ---- signed payloads ----

/// `TokenCounts = prompt:uint64 cached:uint64 completion:uint64` (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenCounts {
    /// Prompt tokens.
    pub prompt: u64,
    /// Of which served from the prefix cache.
    pub cached: u64,
    /// Completion tokens.
    pub completion: u64,
}

impl CellLayout for TokenCounts {
    const NAME: &'static str = "TokenCounts";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u64(self.prompt)?;
        b.store_u64(self.cached)?;
        b.store_u64(self.completion)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            prompt: s.load_u64()?,
            cached: s.load_u64()?,
            completion: s.load_u64()?,
        })
    }
}

/// `ReceiptCommitment = receipts_root:uint256 model:uint256`: what a voucher commits to
/// besides the counts: the RFC 6962 Merkle tree head over the account's receipts
/// `1..=seq` under the guest key (`cocoon_attestation::receipt_tree`), and the SHA-256 of
/// the model that served them (the measured config's `model.sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReceiptCommitment {
    /// Tree head over receipts `1..=seq`.
    pub receipts_root: [u8; 32],
    /// The model's SHA-256.
    pub model: [u8; 32],
}

impl CellLayout for ReceiptCommitment {
    const NAME: &'static str = "ReceiptCommitment";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        store_key(b, &self.receipts_root)?;
        store_key(b, &self.model)
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            receipts_root: load_key(s)?,
            model: load_key(s)?,
        })
    }
}

/// `Voucher = tag:uint32 escrow:MsgAddressInt guest_key:uint256 seq:uint64
/// tokens:^TokenCounts payout:MsgAddressInt commitment:^ReceiptCommitment` (signed by the
/// guest key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voucher {
    /// The escrow it pays from.
    pub escrow: StdAddr,
    /// The guest key that signs it.
    pub guest_key: PublicKey,
    /// The account's receipt sequence under this key.
    pub seq: u64,
    /// Cumulative token counts under this key.
    pub tokens: TokenCounts,
    /// Where the charge goes.
    pub payout: StdAddr,
    /// The receipts it settles, committed.
    pub commitment: ReceiptCommitment,
}

impl Voucher {
    /// What the escrow pays in total for this voucher at `prices`.
    pub fn charge(&self, prices: &Prices) -> u128 {
        charge_for(
            prices,
            self.tokens.prompt,
            self.tokens.cached,
            self.tokens.completion,
        )
    }

    /// Signs it with the guest key (which must be `guest_key`).
    pub fn sign(self, guest: &Ed25519KeyPair) -> Result<SignedVoucher> {
        if public_key(guest) != self.guest_key {
            return Err(Error::KeyMismatch("voucher guest_key"));
        }
        let signature = sign_payload(&self.to_cell()?, guest);
        Ok(SignedVoucher {
            signature,
            voucher: self,
        })
    }
}

impl CellLayout for Voucher {
    const NAME: &'static str = "Voucher";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(tag::VOUCHER)?;
        store_addr(b, &self.escrow)?;
        store_key(b, &self.guest_key)?;
        b.store_u64(self.seq)?;
        b.store_reference(self.tokens.to_cell()?)?;
        store_addr(b, &self.payout)?;
        b.store_reference(self.commitment.to_cell()?)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "Voucher tag", tag::VOUCHER)?;
        Ok(Self {
            escrow: load_addr(s)?,
            guest_key: load_key(s)?,
            seq: s.load_u64()?,
            tokens: load_child(s)?,
            payout: load_addr(s)?,
            commitment: load_child(s)?,
        })
    }
}

/// `SignedVoucher = signature:bits512 payload:^Voucher`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedVoucher {
    /// Ed25519 over the voucher cell's hash, by `voucher.guest_key`.
    pub signature: Signature,
    /// The payload.
    pub voucher: Voucher,
}

impl SignedVoucher {
    /// Checks the signature under `voucher.guest_key`.
    pub fn verify(&self) -> Result<()> {
        verify_signed(
            &self.voucher.to_cell()?,
            &self.signature,
            &self.voucher.guest_key,
        )
    }
}

impl CellLayout for SignedVoucher {
    const NAME: &'static str = "SignedVoucher";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_raw(&self.signature, 512)?;
        b.store_reference(self.voucher.to_cell()?)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            signature: load_signature(s)?,
            voucher: load_child(s)?,
        })
    }
}

/// `Authorization = tag:uint32 escrow:MsgAddressInt guest_key:uint256 cap:Coins
/// expires_at:uint32` (signed by the owner key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authorization {
    /// The escrow it lets the guest charge.
    pub escrow: StdAddr,
    /// The guest key it authorizes.
    pub guest_key: PublicKey,
    /// Most cumulative charge under this key (nanoton).
    pub cap: u128,
    /// Unix time it expires (charges are accepted until `expires_at + close_delay`).
    pub expires_at: u32,
}

impl Authorization {
    /// Signs it with the owner key.
    pub fn sign(self, owner: &Ed25519KeyPair) -> Result<SignedAuthorization> {
        let signature = sign_payload(&self.to_cell()?, owner);
        Ok(SignedAuthorization {
            signature,
            authorization: self,
        })
    }
}

impl CellLayout for Authorization {
    const NAME: &'static str = "Authorization";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(tag::AUTHORIZATION)?;
        store_addr(b, &self.escrow)?;
        store_key(b, &self.guest_key)?;
        store_coins(b, self.cap)?;
        b.store_u32(self.expires_at)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "Authorization tag", tag::AUTHORIZATION)?;
        Ok(Self {
            escrow: load_addr(s)?,
            guest_key: load_key(s)?,
            cap: load_coins(s)?,
            expires_at: s.load_u32()?,
        })
    }
}

/// `SignedAuthorization = signature:bits512 payload:^Authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedAuthorization {
    /// Ed25519 over the authorization cell's hash, by the owner key.
    pub signature: Signature,
    /// The payload.
    pub authorization: Authorization,
}

impl SignedAuthorization {
    /// Checks the signature under the owner key.
    pub fn verify(&self, owner: &PublicKey) -> Result<()> {
        verify_signed(&self.authorization.to_cell()?, &self.signature, owner)
    }

    /// The value of the `x-cocoon-escrow-authorization` header: base64url (no padding) of
    /// the BoC.
    pub fn to_header_value(&self) -> Result<String> {
        Ok(base64url_encode(&self.to_boc()?))
    }

    /// Parses the header value (untrusted: bounded by [`BocLimits::PAYLOAD`]). The
    /// signature is not checked here: call [`SignedAuthorization::verify`].
    pub fn from_header_value(value: &str) -> Result<Self> {
        let bytes = base64url_decode(value, BocLimits::PAYLOAD.max_bytes)?;
        Self::from_boc(&bytes)
    }
}

impl CellLayout for SignedAuthorization {
    const NAME: &'static str = "SignedAuthorization";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_raw(&self.signature, 512)?;
        b.store_reference(self.authorization.to_cell()?)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        Ok(Self {
            signature: load_signature(s)?,
            authorization: load_child(s)?,
        })
    }
}

/// `OwnerAction`: what a signed owner request does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnerAction {
    /// `set_stake#01 stake:Coins`: raise the stake.
    SetStake {
        /// The new stake (nanoton).
        stake: u128,
    },
    /// `withdraw#02 amount:Coins to:MsgAddressInt`: take out free balance.
    Withdraw {
        /// Amount (nanoton).
        amount: u128,
        /// Destination.
        to: StdAddr,
    },
    /// `request_close#03 refund_to:MsgAddressInt`: start closing.
    RequestClose {
        /// Where the refund goes.
        refund_to: StdAddr,
    },
}

impl CellLayout for OwnerAction {
    const NAME: &'static str = "OwnerAction";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        match self {
            Self::SetStake { stake } => {
                b.store_u8(action::SET_STAKE)?;
                store_coins(b, *stake)
            }
            Self::Withdraw { amount, to } => {
                b.store_u8(action::WITHDRAW)?;
                store_coins(b, *amount)?;
                store_addr(b, to)
            }
            Self::RequestClose { refund_to } => {
                b.store_u8(action::REQUEST_CLOSE)?;
                store_addr(b, refund_to)
            }
        }
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        match s.load_u8()? {
            action::SET_STAKE => Ok(Self::SetStake {
                stake: load_coins(s)?,
            }),
            action::WITHDRAW => Ok(Self::Withdraw {
                amount: load_coins(s)?,
                to: load_addr(s)?,
            }),
            action::REQUEST_CLOSE => Ok(Self::RequestClose {
                refund_to: load_addr(s)?,
            }),
            other => Err(Error::WrongTag {
                what: "OwnerAction",
                expected: u32::from(action::SET_STAKE),
                found: u32::from(other),
            }),
        }
    }
}

/// `OwnerRequest = tag:uint32 escrow:MsgAddressInt seqno:uint32 valid_until:uint32
/// action:OwnerAction` (signed by the owner key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerRequest {
    /// The escrow.
    pub escrow: StdAddr,
    /// Must equal the escrow's `owner_seqno`.
    pub seqno: u32,
    /// Unix time after which it is refused.
    pub valid_until: u32,
    /// What to do.
    pub action: OwnerAction,
}

impl OwnerRequest {
    /// Signs it and wraps it in an `owner` message body.
    pub fn sign(self, owner: &Ed25519KeyPair, query_id: u64) -> Result<OwnerMessage> {
        let signature = sign_payload(&self.to_cell()?, owner);
        Ok(OwnerMessage {
            query_id,
            signature,
            request: self,
        })
    }
}

impl CellLayout for OwnerRequest {
    const NAME: &'static str = "OwnerRequest";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(tag::OWNER_REQUEST)?;
        store_addr(b, &self.escrow)?;
        b.store_u32(self.seqno)?;
        b.store_u32(self.valid_until)?;
        self.action.store(b)
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "OwnerRequest tag", tag::OWNER_REQUEST)?;
        Ok(Self {
            escrow: load_addr(s)?,
            seqno: s.load_u32()?,
            valid_until: s.load_u32()?,
            action: OwnerAction::load(s)?,
        })
    }
}

// ---- message bodies ----

/// `top_up#544f5055 query_id:uint64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TopUp {
    /// Query id.
    pub query_id: u64,
}

impl CellLayout for TopUp {
    const NAME: &'static str = "top_up";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(op::TOP_UP)?;
        b.store_u64(self.query_id)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "top_up op", op::TOP_UP)?;
        Ok(Self {
            query_id: s.load_u64()?,
        })
    }
}

/// `refund#52465544 query_id:uint64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Refund {
    /// Query id.
    pub query_id: u64,
}

impl CellLayout for Refund {
    const NAME: &'static str = "refund";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(op::REFUND)?;
        b.store_u64(self.query_id)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "refund op", op::REFUND)?;
        Ok(Self {
            query_id: s.load_u64()?,
        })
    }
}

/// `charge#43484752 query_id:uint64 final:Bool voucher:^SignedVoucher
/// authorization:^SignedAuthorization`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Charge {
    /// Query id.
    pub query_id: u64,
    /// Final charge of a closing escrow: afterwards the rest goes to `refund_to`.
    pub is_final: bool,
    /// The voucher.
    pub voucher: SignedVoucher,
    /// The owner's authorization of the voucher's guest key.
    pub authorization: SignedAuthorization,
}

impl CellLayout for Charge {
    const NAME: &'static str = "charge";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(op::CHARGE)?;
        b.store_u64(self.query_id)?;
        b.store_bit(self.is_final)?;
        b.store_reference(self.voucher.to_cell()?)?;
        b.store_reference(self.authorization.to_cell()?)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "charge op", op::CHARGE)?;
        Ok(Self {
            query_id: s.load_u64()?,
            is_final: s.load_bit()?,
            voucher: load_child(s)?,
            authorization: load_child(s)?,
        })
    }
}

/// `owner#4f574e52 query_id:uint64 signature:bits512 request:^OwnerRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerMessage {
    /// Query id.
    pub query_id: u64,
    /// Ed25519 over the request cell's hash, by the owner key.
    pub signature: Signature,
    /// The request.
    pub request: OwnerRequest,
}

impl OwnerMessage {
    /// Checks the signature under the owner key.
    pub fn verify(&self, owner: &PublicKey) -> Result<()> {
        verify_signed(&self.request.to_cell()?, &self.signature, owner)
    }
}

impl CellLayout for OwnerMessage {
    const NAME: &'static str = "owner";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(op::OWNER)?;
        b.store_u64(self.query_id)?;
        b.store_raw(&self.signature, 512)?;
        b.store_reference(self.request.to_cell()?)?;
        Ok(())
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "owner op", op::OWNER)?;
        Ok(Self {
            query_id: s.load_u64()?,
            signature: load_signature(s)?,
            request: load_child(s)?,
        })
    }
}

/// `payout#5041594f query_id:uint64 owner:uint256`: what a charge sends to the payout address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Payout {
    /// The charge's query id.
    pub query_id: u64,
    /// The escrow owner's key (the account that paid).
    pub owner: PublicKey,
}

impl CellLayout for Payout {
    const NAME: &'static str = "payout";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        b.store_u32(op::PAYOUT)?;
        b.store_u64(self.query_id)?;
        store_key(b, &self.owner)
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        expect_u32(s, "payout op", op::PAYOUT)?;
        Ok(Self {
            query_id: s.load_u64()?,
            owner: load_key(s)?,
        })
    }
}

/// Any message the escrow accepts, by op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EscrowMessage {
    /// `top_up`.
    TopUp(TopUp),
    /// `charge`.
    Charge(Box<Charge>),
    /// `owner`.
    Owner(Box<OwnerMessage>),
    /// `refund`.
    Refund(Refund),
}

impl CellLayout for EscrowMessage {
    const NAME: &'static str = "escrow message";
    fn store(&self, b: &mut CellBuilder) -> Result<()> {
        match self {
            Self::TopUp(m) => m.store(b),
            Self::Charge(m) => m.store(b),
            Self::Owner(m) => m.store(b),
            Self::Refund(m) => m.store(b),
        }
    }
    fn load(s: &mut CellSlice<'_>) -> Result<Self> {
        match s.get_u32(0)? {
            op::TOP_UP => Ok(Self::TopUp(TopUp::load(s)?)),
            op::CHARGE => Ok(Self::Charge(Box::new(Charge::load(s)?))),
            op::OWNER => Ok(Self::Owner(Box::new(OwnerMessage::load(s)?))),
            op::REFUND => Ok(Self::Refund(Refund::load(s)?)),
            other => Err(Error::UnknownOp(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
    }

    fn addr(byte: u8) -> StdAddr {
        StdAddr::new(0, HashBytes([byte; 32]))
    }

    fn prices() -> Prices {
        Prices {
            prompt_per_million: 1_000_000,
            cached_per_million: 250_000,
            completion_per_million: 3_000_000,
        }
    }

    /// A stand-in for the contract code (the address derivation only hashes it).
    fn code() -> Cell {
        let mut b = CellBuilder::new();
        b.store_u32(0xC0DE).expect("store");
        b.build().expect("build")
    }

    fn voucher(guest: &Ed25519KeyPair) -> Voucher {
        Voucher {
            escrow: addr(1),
            guest_key: public_key(guest),
            seq: 7,
            tokens: TokenCounts {
                prompt: 1000,
                cached: 200,
                completion: 50,
            },
            payout: addr(2),
            commitment: ReceiptCommitment {
                receipts_root: [0xA5; 32],
                model: [0x5A; 32],
            },
        }
    }

    fn authorization(guest: &Ed25519KeyPair) -> Authorization {
        Authorization {
            escrow: addr(1),
            guest_key: public_key(guest),
            cap: 5_000_000_000,
            expires_at: 1_900_000_000,
        }
    }

    fn round_trip<T: CellLayout + PartialEq + std::fmt::Debug>(value: &T) {
        let cell = value.to_cell().expect("build");
        assert_eq!(&T::from_cell(&cell).expect("parse"), value);
        let boc = value.to_boc().expect("boc");
        assert_eq!(
            &T::from_boc_with(&boc, &BocLimits::STATE).expect("boc parse"),
            value
        );
    }

    #[test]
    fn billing_layout_prices_and_guest_state_round_trip() {
        round_trip(&prices());
        round_trip(&GuestState {
            seq: u64::MAX,
            charged: Tokens::MAX.into_inner(),
            receipts_root: [0xFF; 32],
        });
        round_trip(&ReceiptCommitment {
            receipts_root: [1; 32],
            model: [2; 32],
        });
        round_trip(&TokenCounts {
            prompt: 1,
            cached: 2,
            completion: 3,
        });
    }

    #[test]
    fn billing_layout_escrow_data_round_trip() {
        let initial = EscrowData::initial([9; 32], 86_400, prices());
        round_trip(&initial);
        let mut full = initial.clone();
        full.stake = 1_000_000_000;
        full.total_charged = 12345;
        full.owner_seqno = 3;
        full.unlock_at = 1_800_000_000;
        full.refund_to = Some(addr(5));
        for i in 0..20u8 {
            full.guests.insert(
                [i; 32],
                GuestState {
                    seq: u64::from(i),
                    charged: u128::from(i) * 1000,
                    receipts_root: [i; 32],
                },
            );
        }
        round_trip(&full);
        // The initial data is the 11-field layout with empty tail.
        let cell = initial.to_cell().expect("cell");
        assert_eq!(cell.references().count(), 1);
    }

    #[test]
    fn billing_layout_voucher_round_trip() {
        let guest = key(1);
        let v = voucher(&guest);
        round_trip(&v);
        let signed = v.sign(&guest).expect("sign");
        round_trip(&signed);
        signed.verify().expect("verify");
    }

    #[test]
    fn billing_layout_authorization_round_trip_and_header() {
        let owner = key(2);
        let signed = authorization(&key(1)).sign(&owner).expect("sign");
        round_trip(&signed.authorization);
        round_trip(&signed);
        signed.verify(&public_key(&owner)).expect("verify");
        let header = signed.to_header_value().expect("header");
        assert!(!header.contains('=') && !header.contains('+') && !header.contains('/'));
        assert_eq!(
            SignedAuthorization::from_header_value(&header).expect("parse"),
            signed
        );
    }

    #[test]
    fn billing_layout_owner_request_round_trip() {
        let owner = key(2);
        for action in [
            OwnerAction::SetStake {
                stake: 2_000_000_000,
            },
            OwnerAction::Withdraw {
                amount: 1,
                to: addr(3),
            },
            OwnerAction::RequestClose { refund_to: addr(4) },
        ] {
            round_trip(&action);
            let request = OwnerRequest {
                escrow: addr(1),
                seqno: 4,
                valid_until: 1_900_000_000,
                action,
            };
            round_trip(&request);
            let message = request.sign(&owner, 99).expect("sign");
            round_trip(&message);
            message.verify(&public_key(&owner)).expect("verify");
            round_trip(&EscrowMessage::Owner(Box::new(message)));
        }
    }

    #[test]
    fn billing_layout_message_bodies_round_trip() {
        let guest = key(1);
        let owner = key(2);
        let charge = Charge {
            query_id: 42,
            is_final: true,
            voucher: voucher(&guest).sign(&guest).expect("sign"),
            authorization: authorization(&guest).sign(&owner).expect("sign"),
        };
        round_trip(&charge);
        round_trip(&EscrowMessage::Charge(Box::new(charge.clone())));
        round_trip(&TopUp { query_id: 1 });
        round_trip(&EscrowMessage::TopUp(TopUp { query_id: 1 }));
        round_trip(&Refund { query_id: 2 });
        round_trip(&EscrowMessage::Refund(Refund { query_id: 2 }));
        round_trip(&Payout {
            query_id: 3,
            owner: [7; 32],
        });
        // Op codes are where PROTOCOL.md puts them.
        let cell = charge.to_cell().expect("cell");
        assert_eq!(
            cell.as_slice().expect("slice").load_u32().expect("op"),
            op::CHARGE
        );
        assert!(charge.to_boc().expect("boc").len() < BocLimits::PAYLOAD.max_bytes);
    }

    #[test]
    fn billing_layout_rejects_wrong_tags() {
        let guest = key(1);
        let auth_cell = authorization(&guest).to_cell().expect("cell");
        assert!(matches!(
            Voucher::from_cell(&auth_cell),
            Err(Error::WrongTag { .. })
        ));
        let top_up = TopUp { query_id: 1 }.to_cell().expect("cell");
        assert!(matches!(
            Refund::from_cell(&top_up),
            Err(Error::WrongTag { .. })
        ));
        let mut b = CellBuilder::new();
        b.store_u32(0x1234_5678).expect("store");
        b.store_u64(0).expect("store");
        let unknown = b.build().expect("build");
        assert!(matches!(
            EscrowMessage::from_cell(&unknown),
            Err(Error::UnknownOp(0x1234_5678))
        ));
        // Unknown owner action.
        let mut b = CellBuilder::new();
        b.store_u8(9).expect("store");
        let bad_action = b.build().expect("build");
        assert!(matches!(
            OwnerAction::from_cell(&bad_action),
            Err(Error::WrongTag { .. })
        ));
    }

    #[test]
    fn billing_layout_rejects_trailing_and_non_canonical() {
        let mut b = CellBuilder::new();
        TopUp { query_id: 1 }.store(&mut b).expect("store");
        b.store_bit_one().expect("store");
        let trailing = b.build().expect("build");
        assert!(matches!(
            TopUp::from_cell(&trailing),
            Err(Error::TrailingData(_))
        ));

        // GuestState with `charged` = 5 stored in 2 bytes instead of 1.
        let mut b = CellBuilder::new();
        b.store_u64(1).expect("store");
        b.store_small_uint(2, 4).expect("store");
        b.store_u16(5).expect("store");
        b.store_raw(&[0u8; 32], 256).expect("store");
        let padded = b.build().expect("build");
        assert!(matches!(
            GuestState::from_cell(&padded),
            Err(Error::NonCanonical(_))
        ));
    }

    #[test]
    fn billing_layout_rejects_bad_boc() {
        let guest = key(1);
        let boc = voucher(&guest)
            .sign(&guest)
            .expect("sign")
            .to_boc()
            .expect("boc");
        // Truncated.
        for len in [0, 3, 10, boc.len() - 1] {
            assert!(SignedVoucher::from_boc(&boc[..len]).is_err(), "len {len}");
        }
        // Garbage.
        assert!(matches!(
            SignedVoucher::from_boc(b"not a boc at all"),
            Err(Error::Boc(_))
        ));
        let mut flipped = boc.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            // Never panics; may or may not parse.
            let _ = SignedVoucher::from_boc(&flipped);
            flipped[i] ^= 0xff;
        }
        // Oversized.
        let big = vec![0u8; BocLimits::PAYLOAD.max_bytes + 1];
        assert!(matches!(
            SignedVoucher::from_boc(&big),
            Err(Error::BocTooLarge { what: "bytes", .. })
        ));
        // Too many cells / too deep: a chain of 40 cells.
        let mut cell = CellBuilder::new().build().expect("leaf");
        for _ in 0..40 {
            let mut b = CellBuilder::new();
            b.store_reference(cell).expect("ref");
            cell = b.build().expect("build");
        }
        let chain = encode_boc(&cell);
        assert!(matches!(
            decode_boc(&chain, &BocLimits::PAYLOAD),
            Err(Error::BocTooLarge { what: "depth", .. })
        ));
        let few_cells = BocLimits {
            max_cells: 10,
            ..BocLimits::PAYLOAD
        };
        assert!(matches!(
            decode_boc(&chain, &few_cells),
            Err(Error::BocTooLarge { what: "cells", .. })
        ));
        assert!(decode_boc(&chain, &BocLimits::STATE).is_ok());
        // Header: bad base64, oversized.
        assert!(matches!(
            SignedAuthorization::from_header_value("!!!"),
            Err(Error::Base64(_))
        ));
        let long = "A".repeat(BocLimits::PAYLOAD.max_bytes * 2);
        assert!(matches!(
            SignedAuthorization::from_header_value(&long),
            Err(Error::BocTooLarge { .. })
        ));
    }

    #[test]
    fn billing_layout_signatures_fail_when_a_field_changes() {
        let guest = key(1);
        let owner = key(2);
        let signed = voucher(&guest).sign(&guest).expect("sign");
        signed.verify().expect("verify");
        let mut changed = signed.clone();
        changed.voucher.seq += 1;
        assert!(matches!(changed.verify(), Err(Error::BadSignature)));
        let mut changed = signed.clone();
        changed.voucher.tokens.completion += 1;
        assert!(changed.verify().is_err());
        let mut changed = signed.clone();
        changed.voucher.payout = addr(3);
        assert!(changed.verify().is_err());
        let mut changed = signed.clone();
        changed.signature[0] ^= 1;
        assert!(changed.verify().is_err());
        // Signing with another key than the voucher's guest_key is refused.
        assert!(matches!(
            voucher(&guest).sign(&owner),
            Err(Error::KeyMismatch(_))
        ));

        let auth = authorization(&guest).sign(&owner).expect("sign");
        auth.verify(&public_key(&owner)).expect("verify");
        assert!(auth.verify(&public_key(&guest)).is_err());
        let mut changed = auth.clone();
        changed.authorization.cap += 1;
        assert!(changed.verify(&public_key(&owner)).is_err());
        let mut changed = auth.clone();
        changed.authorization.expires_at += 1;
        assert!(changed.verify(&public_key(&owner)).is_err());

        let message = OwnerRequest {
            escrow: addr(1),
            seqno: 0,
            valid_until: 10,
            action: OwnerAction::SetStake { stake: 5 },
        }
        .sign(&owner, 1)
        .expect("sign");
        message.verify(&public_key(&owner)).expect("verify");
        let mut changed = message.clone();
        changed.request.action = OwnerAction::SetStake { stake: 6 };
        assert!(changed.verify(&public_key(&owner)).is_err());
        // The signature is over the payload's representation hash.
        let cell = message.request.to_cell().expect("cell");
        verify_signed(&cell, &message.signature, &public_key(&owner)).expect("hash");
    }

    #[test]
    fn billing_layout_escrow_address_changes_with_each_input() {
        let code = code();
        let base = escrow_address(&code, &[1; 32], 86_400, &prices()).expect("addr");
        assert_eq!(base.workchain, 0);
        assert_eq!(
            base,
            escrow_address(&code, &[1; 32], 86_400, &prices()).expect("addr")
        );
        let mut others = vec![
            escrow_address(&code, &[2; 32], 86_400, &prices()).expect("addr"),
            escrow_address(&code, &[1; 32], 86_401, &prices()).expect("addr"),
        ];
        for i in 0..3 {
            let mut p = prices();
            match i {
                0 => p.prompt_per_million += 1,
                1 => p.cached_per_million += 1,
                _ => p.completion_per_million += 1,
            }
            others.push(escrow_address(&code, &[1; 32], 86_400, &p).expect("addr"));
        }
        let mut other_code = CellBuilder::new();
        other_code.store_u32(0xC0DF).expect("store");
        others.push(
            escrow_address(
                &other_code.build().expect("code"),
                &[1; 32],
                86_400,
                &prices(),
            )
            .expect("addr"),
        );
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "input {i}");
        }
        // The address is the StateInit's hash.
        let init = escrow_state_init(&code, &EscrowData::initial([1; 32], 86_400, prices()))
            .expect("init");
        assert_eq!(
            base.address,
            *state_init_cell(&init).expect("cell").repr_hash()
        );
    }

    #[test]
    fn billing_layout_charge_for_matches_formula() {
        let p = prices();
        // (800·1e6 + 200·250e3 + 50·3e6) / 1e6 = 800 + 50 + 150
        assert_eq!(charge_for(&p, 1000, 200, 50), 1000);
        // Cached above prompt counts as prompt.
        assert_eq!(charge_for(&p, 10, 50, 0), charge_for(&p, 10, 10, 0));
        // Rounded up, once.
        let tiny = Prices {
            prompt_per_million: 1,
            cached_per_million: 1,
            completion_per_million: 1,
        };
        assert_eq!(charge_for(&tiny, 1, 0, 0), 1);
        assert_eq!(charge_for(&tiny, 1, 1, 1), 1);
        assert_eq!(charge_for(&tiny, 1_000_000, 0, 1), 2);
        assert_eq!(charge_for(&tiny, 0, 0, 0), 0);
        // The extremes do not overflow and are exact.
        let max = Prices {
            prompt_per_million: u64::MAX,
            cached_per_million: u64::MAX,
            completion_per_million: u64::MAX,
        };
        let m = u128::from(u64::MAX);
        let exact = (m * m / 1_000_000) * 2 + (2 * (m * m % 1_000_000)).div_ceil(1_000_000);
        assert_eq!(charge_for(&max, u64::MAX, 0, u64::MAX), exact);
        // The same as the guest's PriceTable::charge for ordinary values.
        for (pr, ca, co) in [(123_457u64, 999u64, 77_777u64), (5, 9, 3), (0, 0, 1)] {
            let c = ca.min(pr);
            let w = u128::from(pr - c) * u128::from(p.prompt_per_million)
                + u128::from(c) * u128::from(p.cached_per_million)
                + u128::from(co) * u128::from(p.completion_per_million);
            assert_eq!(charge_for(&p, pr, ca, co), w.div_ceil(1_000_000));
        }
    }

    #[test]
    fn billing_layout_exit_codes_and_coins_limits() {
        assert_eq!(ExitCode::VoucherNotNewer.code(), 1000);
        assert_eq!(ExitCode::StakeDecrease.code(), 1015);
        assert_eq!(ExitCode::BadAddress.code(), 1016);
        assert_eq!(ExitCode::UnknownOp.code(), 0xffff);
        for code in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ExitCode::from_code(0), None);
        let too_big = GuestState {
            seq: 0,
            charged: 1u128 << 120,
            receipts_root: [0; 32],
        };
        assert!(matches!(too_big.to_cell(), Err(Error::AmountTooLarge(_))));
        // Anycast addresses are refused.
        let mut any = addr(1);
        any.anycast = Some(Box::new(
            tycho_types::models::Anycast::from_slice(
                &CellBuilder::build_from(0b1010u8)
                    .expect("cell")
                    .as_slice()
                    .expect("s"),
            )
            .expect("anycast"),
        ));
        let v = Voucher {
            escrow: any,
            ..voucher(&key(1))
        };
        assert!(matches!(v.to_cell(), Err(Error::Anycast)));
    }
}
