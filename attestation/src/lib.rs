//! Evidence formats, RA-TLS certificates and verifiers for the Cocoon appliance.
//!
//! A client must be able to decide, before it sends a single prompt, whether the TLS
//! endpoint it reached is our guest running inside a TEE. This crate holds everything that
//! decision needs and nothing that performs I/O in the verification core: the evidence
//! formats (TDX quotes, simulated evidence in the same binary layout), the binding between
//! evidence and a TLS key (`report_data`), the X.509 extension that carries the evidence
//! (`ratls`), and the verifier that checks it (`verify`).
//!
//! Simulated evidence exists so that CI runs the same code as real hardware; it is always
//! labelled as such and refused unless the caller explicitly allows it.
#![forbid(unsafe_code)]

pub mod account;
pub mod client;
pub mod collateral;
pub mod dev_pki;
pub mod error;
pub mod event_log;
pub mod evidence;
pub mod manifest;
pub mod oid;
mod pkcs8;
pub mod policy;
pub mod policy_args;
pub mod ratls;
pub mod receipt;
pub mod report_data;
pub mod simulated;
pub mod snp;
pub mod tdx;
pub mod tls;
pub mod verdict;
pub mod verify;

pub use error::{Error, Result};
