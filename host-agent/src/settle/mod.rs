//! Escrow settlement (`[billing]` in the agent's config): turning the vouchers the guests
//! sign into charges the escrows pay, and telling the guests what the escrows hold.
//!
//! Why it lives in the host agent: the guest has no network and holds no money; the host
//! has both, but is not trusted. So the guest signs vouchers (cumulative, per escrow, under
//! its attested key), the client signs an authorization of that key with a cap, and the
//! escrow contract checks both: all the agent can do is deliver them, or fail to. What it
//! must get right is never losing a voucher (stored with its receipt before the guest may
//! drop it, see `ledger::vouchers`), never paying gas twice for the same charge, and
//! knowing what landed from the escrows' own counters, never from "message sent".
//!
//! - [`config`]: `[billing]`; [`chain_setup`]: the chain (embedded, kept in a state file,
//!   optionally served over the TON HTTP API on loopback; or a TON HTTP API) and the wallet;
//! - [`decide`]: when to settle and what goes into one message (pure);
//! - [`escrow`]: reading `get_escrow`, `get_guest`, `get_prices`;
//! - [`settler`]: the settlement loop (confirm, expire, fail, batch, store, send);
//! - [`escrow_loop`]: reporting escrow state to each guest;
//! - [`metrics`].

pub mod chain_setup;
pub mod config;
pub mod decide;
pub mod escrow;
pub mod escrow_loop;
pub mod metrics;
pub mod settler;

#[cfg(test)]
mod tests;
