//! The agent's admin API: status, guests, usage, receipt export, drain and metrics, on a
//! listener of its own, and the client the CLI calls it with.
//!
//! It has a listener of its own so that nothing an inference client reaches (the relay's
//! public port) can reach it, and it answers only to a bearer token (`/metrics`
//! included: usage per account and guest health are the operator's business). What it
//! serves comes from an [`AdminBackend`], which the daemon implements over its ledger and
//! supervisor; this module is the HTTP layer only, so it is tested against an in-memory
//! backend.
//!
//! - [`auth`]: the token, from a file, judged hard to guess, compared in constant time.
//! - [`server`]: the listener (limits and timeouts); `routes`: the requests.
//! - [`client`]: the CLI's HTTP/1.1 client; [`table`] renders its answers for people.

pub mod auth;
pub mod client;
mod idle;
pub mod percent;
mod reply;
mod routes;
pub mod server;
pub mod table;
pub mod token;

pub use auth::AdminAuth;
pub use client::{AdminClient, ExportSummary, ReceiptPage};
pub use routes::{DEFAULT_RECEIPTS_PAGE, MAX_RECEIPTS_PAGE, NEXT_SINCE_HEADER, OPENMETRICS};
pub use server::{serve_admin, serve_admin_with, AdminLimits};

/// What the admin API serves; the daemon implements it over its ledger and supervisor.
///
/// Calls may block (SQLite): the server runs each one on tokio's blocking pool. An error
/// is answered 500 with its message, except [`crate::Error::UnknownGuest`], which is 404.
pub trait AdminBackend: Send + Sync + 'static {
    /// Agent status: version, uptime, guests summary, ledger totals.
    fn status(&self) -> crate::Result<serde_json::Value>;
    /// Guests with their health, verification result (tee, measurements, measured config digest, receipt key), drained flag, collector state.
    fn guests(&self) -> crate::Result<serde_json::Value>;
    /// Per-account usage (all accounts, or one).
    fn usage(&self, account: Option<&str>) -> crate::Result<serde_json::Value>;
    /// Stored receipts with ledger id > since, ascending, at most limit; each a JSON object with an integer "id".
    fn export_receipts(&self, since: i64, limit: usize) -> crate::Result<Vec<serde_json::Value>>;
    /// Drain (no new connections; open ones finish) or undrain a guest by name. Unknown name → an error variant that maps to 404.
    fn set_drained(&self, guest: &str, drained: bool) -> crate::Result<serde_json::Value>;
    /// Prometheus text exposition (OpenMetrics text from prometheus-client's encode).
    fn metrics(&self) -> crate::Result<String>;
    /// The inclusion proof of a settled receipt (by ledger id or request id), as
    /// `{"proof": ReceiptProof, "receipt": JWS}`; an unknown or unsettled one is
    /// [`crate::Error::NoProof`] (404).
    fn receipt_proof(&self, id: &str) -> crate::Result<serde_json::Value> {
        Err(crate::Error::NoProof {
            id: id.to_string(),
            detail: "this agent keeps no receipts".into(),
        })
    }
    /// The newest settlements (escrow charges), newest first, with their items.
    fn settlements(&self, limit: usize) -> crate::Result<serde_json::Value> {
        let _ = limit;
        Ok(serde_json::json!({ "object": "list", "billing": false, "data": [] }))
    }
}
