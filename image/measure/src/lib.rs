//! `cocoon-measure`: predicts a Cocoon guest's TEE measurements from its artifacts.
//!
//! Clients decide whether an endpoint runs a published image by comparing its quote or
//! report with reference values. Those values must come from the release's artifacts,
//! computed before any machine boots them, not copied from a machine the operator
//! controls. This crate computes them offline: the SEV-SNP launch digest ([`snp`]), the
//! TDX MRTD and the RTMR1/RTMR2 of a directly booted kernel ([`tdx`]), replays TDX event
//! logs ([`event_log`]), and writes the manifest a publisher signs ([`manifest`]).
#![forbid(unsafe_code)]

pub mod bytes;
pub mod cli;
pub mod error;
pub mod event_log;
pub mod manifest;
pub mod ovmf;
pub mod snp;
pub mod tdx;

pub use error::{Error, Result};
