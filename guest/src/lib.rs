//! The Cocoon guest: the server that runs inside the confidential VM.
//!
//! At start it loads the model, makes its TLS key, asks the TEE for evidence that binds
//! the key and the measured configuration, and serves the OpenAI API over HTTPS that
//! terminates here, inside the trust boundary. Nothing outside the guest sees a prompt.
//!
//! The floors, bottom up: `config`, `tee` (evidence), `engine` (mistral.rs, generation),
//! `openai` (wire types, validation, rendering: no HTTP), `http` (state and bodies, then
//! handlers, then the route table, then the listeners), and `cli`/`boot` (start-up).
//! Nothing under `engine/` or `openai/` imports `http/`.
// Unsafe code only in `tee::sys` (the guest-device ioctls and the vsock socket) and
// `engine::sys` (the device-mapper table ioctl and statfs), which allow it locally;
// everywhere else it is an error.
#![deny(unsafe_code)]

pub mod boot;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod escrow;
pub mod gpu;
pub mod http;
pub mod identity;
pub mod kv;
pub mod meter;
pub mod openai;
pub mod registry_check;
pub mod tee;
pub mod watchdog;

pub use engine::tokens;
pub use error::{Error, Result};
