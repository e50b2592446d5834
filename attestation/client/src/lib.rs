//! What a Cocoon client runs: attested TLS sessions to a guest, the collateral fetching
//! they need, and the arguments shared by the `cocoon-verify` and `cocoon-client` CLIs.
//!
//! All verification is `cocoon_attestation::Verifier`'s; this crate adds the I/O around
//! it (TCP, TLS, HTTP, Intel PCS / PCCS, AMD KDS) and, for `--allow-simulated` only, the
//! development anchors of `cocoon-attestation-dev`.
#![forbid(unsafe_code)]

pub mod amount;
pub mod args;
pub mod config;
pub mod escrow;
pub mod fetcher;
pub mod guest_account;
pub mod keys;
pub mod local;
pub mod onchain;
pub mod owner;
pub mod proxy;
pub mod publisher;
pub mod registry;
pub mod session;
pub mod wallet;

pub use session::{
    connect_and_verify_session, connect_attested, open_attested_session, AttestedConnection,
    Attestor, Endpoint, SessionBody, SessionVerified,
};
