//! Escrow billing on TON for Cocoon (`billing/PROTOCOL.md`).
//!
//! - [`layout`]: every cell the escrow contract, the guest, the client and the host agent
//!   exchange, with strict parsers for untrusted input. No feature gate and light
//!   dependencies, because the guest (inside the TEE) builds vouchers with it.
//! - `local_chain` (feature `local-chain`): an in-process TON chain that runs real
//!   bytecode with the real executor and fees, so tests and the embedded default need no
//!   network.
//! - `wallet` (feature `wallet`): the operator's wallet v5r1, building external messages
//!   that carry batches of charges.
//!
//! The crate has no `unsafe` code: everything here handles money or untrusted bytes, and the
//! cell libraries it builds on already encapsulate what needs it.
#![forbid(unsafe_code)]

pub mod layout;
#[cfg(feature = "local-chain")]
pub mod local_chain;
#[cfg(feature = "wallet")]
pub mod wallet;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A BoC or header above the limits for untrusted input.
    #[error("BoC too large: {found} {what}, at most {max}")]
    BocTooLarge {
        /// Which limit: `bytes`, `cells` or `depth`.
        what: &'static str,
        /// What the input had.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed BoC.
    #[error("invalid BoC: {0}")]
    Boc(#[from] tycho_types::boc::de::Error),
    /// A cell too short, too long or otherwise malformed for its layout.
    #[error("cell layout: {0}")]
    Cell(#[from] tycho_types::error::Error),
    /// A tag, op or action that is not the expected one.
    #[error("wrong {what}: expected {expected:#x}, found {found:#x}")]
    WrongTag {
        /// What was read.
        what: &'static str,
        /// What the layout wants.
        expected: u32,
        /// What the cell had.
        found: u32,
    },
    /// A message op the escrow does not know.
    #[error("unknown op {0:#010x}")]
    UnknownOp(u32),
    /// Bits or references after the end of a layout.
    #[error("{0}: trailing data after the layout")]
    TrailingData(&'static str),
    /// A cell that parses but does not re-encode to itself (non-minimal encoding).
    #[error("{0}: non-canonical encoding")]
    NonCanonical(&'static str),
    /// An address with anycast (the protocol uses plain `addr_std`).
    #[error("anycast addresses are not supported")]
    Anycast,
    /// An amount above what `Coins` holds (2^120 − 1).
    #[error("amount {0} does not fit in Coins")]
    AmountTooLarge(u128),
    /// An Ed25519 signature that does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A payload signed with a key other than the one it names.
    #[error("signing key is not the {0}")]
    KeyMismatch(&'static str),
    /// Malformed base64url.
    #[error("invalid base64url: {0}")]
    Base64(String),
    /// A malformed key, mnemonic or address.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was parsed.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An external message the contract did not accept (nothing changed).
    #[error("external message not accepted (exit code {exit_code:?})")]
    ExternalNotAccepted {
        /// The compute phase's exit code, if it ran.
        exit_code: Option<i32>,
    },
    /// The local chain refused or could not run something.
    #[error("local chain: {0}")]
    Chain(String),
    /// The wallet library failed.
    #[error("wallet: {0}")]
    Wallet(String),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
