//! Evidence through Linux configfs-tsm (`/sys/kernel/config/tsm/report`, Linux ≥ 6.7),
//! the one interface that serves both TDX (`tdx_guest`: the kernel gets the quote from
//! the host's quoting service itself) and SEV-SNP (`sev_guest`: the report, plus the
//! host's certificate table in `auxblob`).
//!
//! The protocol (Documentation/ABI/testing/configfs-tsm-report and
//! drivers/virt/coco/guest/report.c): `mkdir` an entry, which creates its attributes;
//! read `provider`; write up to 64 bytes to `inblob`; read `outblob` (the kernel asks
//! the TEE then) and `auxblob`; `rmdir` the entry. `generation` counts the writes to the
//! entry: if it moved by more than our own writes between the first read and the last,
//! somebody else wrote to the entry and the blobs may answer their request, so the
//! report is discarded and asked for again (a bounded number of times). Each request
//! uses a fresh, uniquely named entry, which is removed whatever happens.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;

use super::platform::{interface_error, is_transient, Attempt, KernelFs, RetryPolicy};
use super::tsm_mr::TsmMrRtmr;
use super::{check_device_output, ConfigRegister, Evidence, EvidenceProvider};
use crate::{Error, Result};

/// Size of the `inblob` the guest writes (the TDX and SNP providers require exactly 64).
pub const INBLOB_LEN: usize = 64;

/// The TSM behind configfs-tsm, from the entry's `provider` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsmProvider {
    TdxGuest,
    SevGuest,
    Other(String),
}

impl TsmProvider {
    fn parse(bytes: &[u8]) -> Self {
        match String::from_utf8_lossy(bytes).trim() {
            "tdx_guest" => Self::TdxGuest,
            "sev_guest" => Self::SevGuest,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::TdxGuest => "tdx_guest",
            Self::SevGuest => "sev_guest",
            Self::Other(name) => name,
        }
    }

    /// What this provider's `outblob` is, if the guest understands it.
    pub fn kind(&self) -> Option<EvidenceKind> {
        match self {
            Self::TdxGuest => Some(EvidenceKind::Tdx),
            Self::SevGuest => Some(EvidenceKind::SevSnp),
            Self::Other(_) => None,
        }
    }
}

/// What one report entry returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    pub provider: TsmProvider,
    pub outblob: Vec<u8>,
    /// `auxblob`, when the provider has one (SEV-SNP: the certificate table).
    pub auxblob: Option<Vec<u8>>,
}

/// A configfs-tsm report directory.
pub struct ConfigfsTsm {
    fs: Arc<dyn KernelFs>,
    dir: PathBuf,
    retry: RetryPolicy,
}

/// A report entry; removed when dropped, so no exit path leaves one behind.
struct Entry<'a> {
    fs: &'a dyn KernelFs,
    path: PathBuf,
}

impl Entry<'_> {
    fn attr(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.fs.remove_dir(&self.path) {
            tracing::warn!(entry = %self.path.display(), "cannot remove the configfs-tsm entry: {e}");
        }
    }
}

/// A name no other request uses: process id, a per-process counter and the time.
fn entry_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "cocoon-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl ConfigfsTsm {
    pub fn new(fs: Arc<dyn KernelFs>, dir: impl Into<PathBuf>, retry: RetryPolicy) -> Self {
        Self {
            fs,
            dir: dir.into(),
            retry,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the report directory exists (configfs mounted, TSM reports built in).
    pub fn is_present(&self) -> bool {
        self.fs.exists(&self.dir)
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        interface_error(&self.dir, detail)
    }

    /// Creates an entry, or says why to try again.
    fn create(&self) -> Result<Attempt<Entry<'_>>> {
        let path = self.dir.join(entry_name());
        match self.fs.create_dir(&path) {
            Ok(()) => Ok(Attempt::Done(Entry {
                fs: self.fs.as_ref(),
                path,
            })),
            Err(e) if is_transient(&e) || e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(Attempt::Retry(format!("mkdir {}: {e}", path.display())))
            }
            Err(e) => Err(self.err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => format!(
                    "configfs-tsm not available ({e}): needs Linux ≥ 6.7 with \
                     CONFIG_TSM_REPORTS and configfs mounted at /sys/kernel/config"
                ),
                Some(libc::ENXIO) => format!(
                    "no TSM provider is registered ({e}): the tdx_guest or sev_guest \
                     driver is not loaded"
                ),
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    format!("cannot create a report entry ({e}): the guest must run as root")
                }
                _ => format!("cannot create a report entry {}: {e}", path.display()),
            })),
        }
    }

    /// Reads an attribute the kernel creates with every entry.
    fn read_attr(&self, entry: &Entry<'_>, name: &str) -> Result<Vec<u8>> {
        let path = entry.attr(name);
        self.fs.read(&path).map_err(|e| {
            self.err(if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} is missing ({e}): mkdir did not create the report attributes, so \
                     this directory is not configfs-tsm",
                    path.display()
                )
            } else {
                format!("cannot read {}: {e}", path.display())
            })
        })
    }

    fn read_provider(&self, entry: &Entry<'_>) -> Result<TsmProvider> {
        Ok(TsmProvider::parse(&self.read_attr(entry, "provider")?))
    }

    fn read_generation(&self, entry: &Entry<'_>) -> Result<u64> {
        let raw = self.read_attr(entry, "generation")?;
        let text = String::from_utf8_lossy(&raw);
        text.trim().parse().map_err(|_| {
            self.err(format!(
                "{}/generation is not a number: {:?}",
                entry.path.display(),
                text
            ))
        })
    }

    /// The provider, from a probe entry (removed again).
    pub fn provider(&self) -> Result<TsmProvider> {
        self.retry.run(&self.dir.display().to_string(), || {
            Ok(match self.create()? {
                Attempt::Done(entry) => Attempt::Done(self.read_provider(&entry)?),
                Attempt::Retry(why) => Attempt::Retry(why),
            })
        })
    }

    /// A report over `inblob`, at `privlevel` when given (SEV-SNP VMPL).
    pub fn report(&self, inblob: &[u8; INBLOB_LEN], privlevel: Option<u32>) -> Result<TsmReport> {
        self.retry.run(&self.dir.display().to_string(), || {
            let entry = match self.create()? {
                Attempt::Done(entry) => entry,
                Attempt::Retry(why) => return Ok(Attempt::Retry(why)),
            };
            self.report_once(&entry, inblob, privlevel)
        })
    }

    fn report_once(
        &self,
        entry: &Entry<'_>,
        inblob: &[u8; INBLOB_LEN],
        privlevel: Option<u32>,
    ) -> Result<Attempt<TsmReport>> {
        let provider = self.read_provider(entry)?;
        let before = self.read_generation(entry)?;
        let mut writes = 0u64;
        if let Some(level) = privlevel {
            let path = entry.attr("privlevel");
            match self.fs.write(&path, format!("{level}\n").as_bytes()) {
                Ok(()) => writes += 1,
                Err(e) if is_transient(&e) => {
                    return Ok(Attempt::Retry(format!("write {}: {e}", path.display())))
                }
                Err(e) => {
                    return Err(self.err(format!(
                        "{} refused privilege level {level} ({e}): it must be between \
                         privlevel_floor and 3, and the provider must support it",
                        path.display()
                    )))
                }
            }
        }
        let path = entry.attr("inblob");
        match self.fs.write(&path, inblob) {
            Ok(()) => writes += 1,
            Err(e) if is_transient(&e) => {
                return Ok(Attempt::Retry(format!("write {}: {e}", path.display())))
            }
            Err(e) => return Err(self.err(format!("cannot write {}: {e}", path.display()))),
        }
        let outblob = match self.read_blob(entry, "outblob")? {
            Attempt::Done(blob) => blob,
            Attempt::Retry(why) => return Ok(Attempt::Retry(why)),
        };
        let auxblob = if provider == TsmProvider::SevGuest && self.fs.exists(&entry.attr("auxblob"))
        {
            match self.read_blob(entry, "auxblob")? {
                Attempt::Done(blob) => Some(blob),
                Attempt::Retry(why) => return Ok(Attempt::Retry(why)),
            }
        } else {
            None
        };
        let after = self.read_generation(entry)?;
        if after != before + writes {
            return Ok(Attempt::Retry(format!(
                "generation of {} went from {before} to {after} across our {writes} \
                 write(s): another writer changed the request, so the report was discarded",
                entry.path.display()
            )));
        }
        Ok(Attempt::Done(TsmReport {
            provider,
            outblob,
            auxblob,
        }))
    }

    /// Reads `outblob` or `auxblob`: this is when the kernel asks the TEE.
    fn read_blob(&self, entry: &Entry<'_>, name: &str) -> Result<Attempt<Vec<u8>>> {
        let path = entry.attr(name);
        match self.fs.read(&path) {
            Ok(blob) => Ok(Attempt::Done(blob)),
            Err(e) if is_transient(&e) => {
                Ok(Attempt::Retry(format!("read {}: {e}", path.display())))
            }
            Err(e) => Err(self.err(match e.raw_os_error() {
                Some(libc::EFBIG) => format!(
                    "{} is larger than configfs-tsm's maximum ({e})",
                    path.display()
                ),
                Some(libc::EINVAL) => format!(
                    "the provider refused the request reading {} ({e})",
                    path.display()
                ),
                Some(libc::ENOENT) => format!(
                    "{} is missing ({e}): this directory is not configfs-tsm",
                    path.display()
                ),
                _ => format!("cannot read {}: {e}", path.display()),
            })),
        }
    }
}

/// An evidence provider on configfs-tsm: TDX quotes (RTMR3 through tsm-mr) or SEV-SNP
/// reports with their certificate table.
pub struct ConfigfsTee {
    tsm: ConfigfsTsm,
    kind: EvidenceKind,
    privlevel: Option<u32>,
    /// TDX only: where RTMR3 is extended.
    rtmr3: Option<TsmMrRtmr>,
}

impl ConfigfsTee {
    /// A TDX provider on `tsm`, whose provider must be `tdx_guest`.
    pub fn tdx(tsm: ConfigfsTsm, rtmr3: TsmMrRtmr) -> Self {
        Self {
            tsm,
            kind: EvidenceKind::Tdx,
            privlevel: None,
            rtmr3: Some(rtmr3),
        }
    }

    /// An SEV-SNP provider on `tsm`, whose provider must be `sev_guest`; `privlevel` is
    /// the VMPL to request (the kernel's default when `None`).
    pub fn sev_snp(tsm: ConfigfsTsm, privlevel: Option<u32>) -> Self {
        Self {
            tsm,
            kind: EvidenceKind::SevSnp,
            privlevel,
            rtmr3: None,
        }
    }
}

impl EvidenceProvider for ConfigfsTee {
    fn kind(&self) -> EvidenceKind {
        self.kind
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let report = self.tsm.report(report_data, self.privlevel)?;
        if report.provider.kind() != Some(self.kind) {
            return Err(self.tsm.err(format!(
                "the provider is {}, not the {} this backend was set up for",
                report.provider.name(),
                self.kind.tee_name()
            )));
        }
        check_device_output(
            self.kind,
            report.outblob,
            report.auxblob.as_deref(),
            report_data,
        )
    }

    fn extend_config_register(&self, digest: &[u8; 48]) -> Result<ConfigRegister> {
        match &self.rtmr3 {
            Some(rtmr3) => rtmr3.extend(digest),
            None => Ok(ConfigRegister::None),
        }
    }
}
