//! The one error type of `cocoon-init`: each variant says which boot step failed.

use std::path::PathBuf;

/// A boot step that failed; the message is what the operator reads on the console.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading kernel module {module}: {source}")]
    Module {
        module: String,
        source: std::io::Error,
    },
    #[error("dm-verity device {name}: {source}")]
    DeviceMapper {
        name: String,
        source: std::io::Error,
    },
    #[error("network interface {interface}: {detail}")]
    Network { interface: String, detail: String },
    #[error("{what} did not appear within {seconds} s (is the disk attached?)")]
    Timeout { what: String, seconds: u64 },
    #[error("{0}")]
    Boot(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
