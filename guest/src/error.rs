//! The guest's error type (start-up and engine failures; API errors are `api::ApiError`).

/// Result with the guest's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model: {0}")]
    Model(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("evidence: {0}")]
    Evidence(#[from] cocoon_attestation::Error),
    /// The TEE interface failed or gave evidence that does not match the guest's state.
    #[error("TEE: {0}")]
    Tee(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
