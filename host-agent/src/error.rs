//! The host agent's one error type: every failure a caller can act on, each naming the
//! thing it is about (the config file and key, the PCI address, the QEMU binary, the
//! guest's address), so the operator never has to guess which of many parts failed.

use std::path::PathBuf;

/// Everything that can go wrong in the host agent's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("{file}: cannot read: {source}")]
    ConfigRead {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or a key is unknown, missing or of the wrong
    /// type (the parser's message names the key and shows the line).
    #[error("{file}: {message}")]
    ConfigSyntax { file: PathBuf, message: String },
    /// A key has a value the agent refuses.
    #[error("{file}: `{key}`: {message}")]
    ConfigValue {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// A GPU cannot be passed through as configured.
    #[error("VFIO pre-flight for GPU {address}: {message}")]
    Vfio { address: String, message: String },
    /// QEMU could not be started.
    #[error("cannot start QEMU ({binary}): {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    /// The guest's `/healthz` did not answer 200.
    #[error("health probe of {address}: {detail}")]
    Health { address: String, detail: String },
    /// The guest's attestation did not verify under the operator's policy.
    #[error("attestation of the guest at {address}: {detail}")]
    Attestation { address: String, detail: String },
    /// The operator's attestation policy could not be loaded.
    #[error("attestation policy: {0}")]
    Policy(#[from] cocoon_attestation::Error),
    /// The relay could not listen.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A call to a guest's internal API (receipt collection) failed.
    #[error("internal API of the guest at {address}: {detail}")]
    Collect { address: String, detail: String },
    /// A task of the agent stopped abnormally.
    #[error("{0}")]
    Task(String),
    /// The receipt ledger (a SQLite file) could not be opened, migrated, read or written,
    /// or was asked for something inconsistent with what it holds.
    #[error("ledger {path}: {detail}")]
    Ledger { path: PathBuf, detail: String },
    /// The relay could not reach a guest (refused, unresolvable, or too slow to accept).
    #[error("cannot connect to the guest at {address}: {detail}")]
    GuestConnect { address: String, detail: String },
    /// The supervisor used up its restarts (the message says how and why).
    #[error("{0}")]
    GaveUp(String),
    /// A token file (the admin token, a guest's host token) cannot be read, is empty, or
    /// holds a token too easy to guess.
    #[error("token file {file}: {message}")]
    AdminToken { file: PathBuf, message: String },
    /// The admin API would be served without a token where that is refused.
    #[error("admin API on {listen}: {message}")]
    AdminUnauthenticated {
        listen: std::net::SocketAddr,
        message: String,
    },
    /// An admin request names a guest the agent does not know (the admin API answers 404).
    #[error("no guest named `{name}`")]
    UnknownGuest { name: String },
    /// The admin API could not be reached, refused a request, or answered something the
    /// client cannot use (the CLI's client; `detail` says which).
    #[error("admin API at {address}: {detail}")]
    AdminClient { address: String, detail: String },
    /// The chain (embedded or over a TON HTTP API) could not be read or written, or answered
    /// something settlement cannot use.
    #[error("chain: {0}")]
    Chain(String),
    /// Settlement could not be set up or run (the wallet, the local chain's state file).
    #[error("billing: {0}")]
    Billing(String),
    /// No inclusion proof can be made for a receipt (unknown, not settled yet, or the
    /// ledger's receipts do not make the root the guest signed); the admin API answers 404.
    #[error("receipt {id}: {detail}")]
    NoProof { id: String, detail: String },
    /// Exported receipts could not be written out.
    #[error("cannot write the exported receipts: {0}")]
    ExportWrite(#[source] std::io::Error),
}

/// `Result` with the host agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
