//! The crate's one error type.
//!
//! Every failure names the file or structure that was wrong and why, because the person
//! reading it is publishing reference values: "measurement failed" is useless to them,
//! "OVMF.fd has no SNP kernel-hashes section, so --kernel cannot be measured" is not.

use std::path::PathBuf;

/// Everything that can go wrong while predicting measurements.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (missing, unreadable, a directory...).
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The firmware's GUIDed footer table (the OVMF table at the end of the image) is
    /// absent or malformed.
    #[error("firmware {}: {detail}", path.display())]
    FirmwareTable { path: PathBuf, detail: String },
    /// The OVMF image carries no SEV metadata, so it cannot launch an SEV-SNP guest.
    #[error(
        "firmware {}: no SEV metadata (GUID dc886566-984a-4798-a75e-5585a7bf67cc) in its \
         footer table; it is not an SEV-SNP capable OVMF",
        path.display()
    )]
    NoSevMetadata { path: PathBuf },
    /// A kernel was given but the OVMF cannot measure one.
    #[error(
        "firmware {}: a kernel was given but this OVMF has no {missing}, so QEMU's \
         kernel-hashes cannot be measured; build OvmfPkg/AmdSev/AmdSevX64.dsc or boot \
         without --kernel",
        path.display()
    )]
    NoSnpKernelHashes {
        path: PathBuf,
        missing: &'static str,
    },
    /// `--vcpu-type` names no vCPU model the measurement knows.
    #[error("unknown vCPU type '{given}'; known types: {known}")]
    UnknownVcpuType { given: String, known: String },
    /// The `sev` crate refused the inputs.
    #[error("SEV-SNP launch digest: {0}")]
    Snp(String),
    /// The firmware has no TDVF metadata, so it cannot launch a TDX guest.
    #[error(
        "firmware {}: no TDVF metadata (GUID e47a6535-984a-4798-865e-4685a7bf8ec2) in its \
         footer table; it is not a TDX firmware (build OvmfPkg/IntelTdx/IntelTdxX64.dsc)",
        path.display()
    )]
    NoTdvfMetadata { path: PathBuf },
    /// The TDVF descriptor or one of its sections is malformed.
    #[error("firmware {}: TDVF metadata: {detail}", path.display())]
    Tdvf { path: PathBuf, detail: String },
    /// The kernel is not a PE/COFF image the firmware could measure.
    #[error("kernel is not a measurable PE/COFF image: {0}")]
    Pe(String),
    /// The kernel's x86 boot-protocol setup header is unusable.
    #[error("kernel setup header: {0}")]
    KernelHeader(String),
    /// A TCG event log is malformed.
    #[error("event log, byte {offset}: {detail}")]
    EventLog { offset: usize, detail: String },
    /// RTMR0 cannot be predicted from the artifacts (see `tdx::rtmr::RTMR0_NOT_PREDICTED`).
    #[error("RTMR0 is not predicted: {0}")]
    Rtmr0NotPredicted(&'static str),
    /// A command-line value is invalid or inconsistent.
    #[error("{0}")]
    Usage(String),
    /// The attestation library refused something (quote, manifest).
    #[error(transparent)]
    Attestation(#[from] cocoon_attestation::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads a whole file, naming it in the error.
pub fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}
