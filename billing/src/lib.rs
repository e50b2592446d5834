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
//! - [`chain`]: the [`chain::Chain`] trait, what the client and the host agent need from a
//!   chain (send a BoC, account state, get methods, wallet seqno, transactions), with an
//!   implementation over the local chain (feature `local-chain`).
//! - [`registry`]: the registry contract's cells, address and readers: a publisher's
//!   on-chain list of reference values (`billing/REGISTRY.md`).
//! - `ton_http` (feature `ton-http`): a TON HTTP API client (toncenter v2 routes) that
//!   implements [`chain::Chain`] for the real network, and, with `local-chain`, a loopback
//!   server answering the same routes from a local chain.
//!
//! The crate has no `unsafe` code: everything here handles money or untrusted bytes, and the
//! cell libraries it builds on already encapsulate what needs it.
#![forbid(unsafe_code)]

pub mod address;
pub mod chain;
pub mod layout;
#[cfg(feature = "local-chain")]
pub mod local_chain;
pub mod record;
pub mod registry;
#[cfg(feature = "ton-http")]
pub mod ton_http;
#[cfg(feature = "wallet")]
pub mod wallet;

/// The escrow contract's compiled code, as committed in `contracts/build/escrow.boc` (built
/// by `make contracts`, checked by `make contracts-check`). Compiled into every binary
/// that derives escrow addresses, so the guest's measured image fixes the code its clients'
/// escrows run.
const ESCROW_CODE_BOC: &[u8] = include_bytes!("../contracts/build/escrow.boc");

/// The escrow contract's code cell.
pub fn escrow_code() -> address::Cell {
    static CODE: std::sync::OnceLock<address::Cell> = std::sync::OnceLock::new();
    CODE.get_or_init(|| {
        // The BoC is part of this binary, not input; the test below decodes it on every
        // build of the tests, so a corrupt file never reaches a release.
        tycho_types::boc::Boc::decode(ESCROW_CODE_BOC)
            .expect("billing/contracts/build/escrow.boc is a valid BoC (checked by tests)")
    })
    .clone()
}

/// Hex of the escrow code cell's representation hash (what `escrow.code-hash` holds).
pub fn escrow_code_hash_hex() -> String {
    hex::encode(escrow_code().repr_hash().as_array())
}

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
    /// A get method ended with an exit code other than 0 or 1 (TVM's two successes).
    #[error("get method {method} failed with exit code {exit_code}")]
    GetMethodFailed {
        /// The method's name.
        method: String,
        /// TVM's exit code.
        exit_code: i32,
    },
    /// A request to a TON HTTP API failed: transport, timeout, size or a malformed answer.
    #[error("{url}: {reason}")]
    Http {
        /// The URL requested (without the API key, which travels in a header).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A TON HTTP API answered with an error (`{"ok":false,"error":...,"code":...}`).
    #[error("{url}: TON API error {code}: {message}")]
    Api {
        /// The URL requested.
        url: String,
        /// The API's code (HTTP-like: 400, 404, 429, 500...).
        code: i64,
        /// The API's `error` text.
        message: String,
    },
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod code_tests {
    #[test]
    fn billing_escrow_code_decodes_and_matches_its_committed_hash() {
        let committed = include_str!("../contracts/build/escrow.code-hash").trim();
        assert_eq!(super::escrow_code_hash_hex(), committed);
    }
}
