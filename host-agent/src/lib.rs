//! The Cocoon host agent: everything that runs on the operator's host, outside the TEE.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod config_file;
pub mod error;
pub mod http_call;
pub mod ledger;
pub mod listen;
pub mod relay;
pub mod settle;
#[cfg(test)]
pub(crate) mod test_meter;
pub mod vm;

pub use error::{Error, Result};
