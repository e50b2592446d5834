//! The Cocoon guest: the server that runs inside the confidential VM.
//!
//! At start it loads the model, makes its TLS key, asks the TEE for evidence that binds
//! the key and the measured configuration, and serves the OpenAI API over HTTPS that
//! terminates here, inside the trust boundary. Nothing outside the guest sees a prompt.
// Unsafe code only in `tee::sys` (the guest-device ioctls and the vsock socket) and
// `engine::sys` (the device-mapper table ioctl and statfs), which allow it locally;
// everywhere else it is an error.
#![deny(unsafe_code)]

pub mod api;
pub mod api_error;
pub mod config;
pub mod engine;
pub mod error;
pub mod generate;
pub mod identity;
pub mod inference;
pub mod internal_api;
pub mod meter;
pub mod openai;
pub mod openapi;
pub mod render;
pub mod sampling;
pub mod server;
pub mod stop;
pub mod stream_buffer;
pub mod tee;
pub mod tokens;
pub mod watchdog;

pub use error::{Error, Result};
