//! The guest's error type (start-up and engine failures; API errors are `api::ApiError`).

/// How to go on without a TEE, where this build can.
const NO_TEE_HINT: &str = if cfg!(feature = "simulated") {
    ", or pass --tee simulated for development without a TEE"
} else {
    ""
};

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
    /// A TEE interface (configfs-tsm, `/dev/tdx_guest`, `/dev/sev-guest`, tsm-mr, the
    /// QGS) is missing, refused the request, or answered something unusable.
    #[error("TEE interface {interface}: {detail}")]
    TeeInterface { interface: String, detail: String },
    /// The evidence does not carry the REPORTDATA the guest asked for.
    #[error(
        "the {what}'s REPORTDATA is {observed} but {requested} was requested: the \
         interface returned evidence for another request"
    )]
    ReportDataMismatch {
        what: &'static str,
        observed: String,
        requested: String,
    },
    /// `--tee auto` found no TEE interface at all.
    #[error(
        "no TEE interface found (tried {tried}); inside a TDX or SEV-SNP guest check the \
         kernel drivers (tdx_guest / sev_guest) and configfs{hint}",
        hint = NO_TEE_HINT
    )]
    NoTee { tried: String },
    /// A GPU start check failed: the guest does not serve.
    #[error("GPU check '{check}' failed: {detail}")]
    Gpu {
        /// The check's name (`cc_mode`, `dev_tools`, …: the GPU module's `GpuCheck`).
        check: &'static str,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
