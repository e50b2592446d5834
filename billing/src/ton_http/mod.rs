//! The TON HTTP API (toncenter v2 routes): a client for the real network and a loopback server
//! over the local chain.
//!
//! Why toncenter v2: it is the API every TON provider answers (toncenter, self-hosted
//! `ton-http-api`, most commercial RPCs), it needs no TON C++ library (`tonlib-sys` cannot
//! build offline), and four routes cover what billing needs: `sendBoc`,
//! `getAddressInformation`, `runGetMethod`, `getTransactions`.
//!
//! - [`client`]: [`client::TonHttpClient`], a [`Chain`](crate::chain::Chain) over HTTP(S).
//! - `server` (with feature `local-chain`): the same routes answered from a
//!   [`SharedLocalChain`](crate::chain::SharedLocalChain), so the client is tested against a
//!   real HTTP server, and `cocoon-client` can reach the host agent's embedded chain.
//!
//! The JSON shapes both sides share are in `wire`.

pub mod client;
#[cfg(feature = "local-chain")]
pub mod server;
mod wire;

pub use client::{TonHttpClient, TonHttpConfig};
#[cfg(feature = "local-chain")]
pub use server::{spawn_server, ServerHandle, ServerLimits};

#[cfg(all(test, feature = "local-chain"))]
mod tests;
