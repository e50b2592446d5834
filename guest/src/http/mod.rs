//! The HTTP side of the guest, in floors: [`state`], [`body`] and [`error`] at the
//! bottom, the [`handlers`] on them, the [`router`] (the one route table) on the
//! handlers, and the listeners ([`server`]) on the router.
//!
//! Every error leaves as OpenAI's JSON error object with a fitting status code, so SDKs
//! raise their usual exception types. Generation is admitted through a bounded queue:
//! past it, new requests get `429` with `Retry-After` instead of piling up. The host's
//! internal API is served only on its own listener; the public port answers 404 there.

pub mod body;
pub mod error;
pub mod handlers;
pub mod router;
pub mod server;
pub mod state;
pub mod stream_buffer;

pub use error::ApiError;
