//! The kernel interfaces the evidence backends use, behind small traits so that the
//! backends' logic runs unchanged against a fake kernel in tests. This layer owns the
//! traits; the backends (`configfs_tsm`, `tdx_guest`, `sev_guest`, `tsm_mr`) implement
//! their logic on them and never the other way round.
//!
//! configfs-tsm and tsm-mr are filesystems whose files do not behave like files:
//! `mkdir` in configfs creates the attribute files, a read of `outblob` asks the TEE for
//! a report, a write to an RTMR attribute extends the register. A temporary directory
//! cannot do that, so the few filesystem operations go through [`KernelFs`], the device
//! ioctls through [`TdxDevice`] and [`SevGuestDevice`], and a [`Platform`] opens them
//! all: [`Host`] is the real kernel, tests bring their own.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use super::sys::{SnpExtReportReq, SnpIoctlError, SnpReportReq, SnpReportResp, TdxReportReq};
use crate::{Error, Result};

/// The filesystem operations configfs-tsm and tsm-mr need.
pub trait KernelFs: Send + Sync {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Writes `data` with one `write` on a file that exists (no create, no truncate):
    /// configfs commits a binary attribute when it is closed, and a tsm-mr register takes
    /// exactly one 48-byte write at offset 0.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFs;

impl KernelFs for HostFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let written = file.write(data)?;
        if written != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// A kernel guest device, open for its ioctls (`/dev/tdx_guest` or `/dev/sev-guest`:
/// the trait the caller uses picks the ioctl).
pub struct HostDevice {
    pub(crate) file: File,
    path: PathBuf,
}

impl HostDevice {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `TDX_CMD_GET_REPORT0` on some device: the real one, or a fake in tests.
pub trait TdxDevice: Send + Sync {
    fn get_report0(&self, req: &mut TdxReportReq) -> io::Result<()>;
    fn path(&self) -> &Path;
}

impl TdxDevice for HostDevice {
    fn get_report0(&self, req: &mut TdxReportReq) -> io::Result<()> {
        super::sys::tdx_get_report0(&self.file, req)
    }

    fn path(&self) -> &Path {
        HostDevice::path(self)
    }
}

/// `SNP_GET_EXT_REPORT` on some device: the real one, or a fake in tests. `certs` is the
/// certificate buffer; its length is what the request's `certs_len` says.
pub trait SevGuestDevice: Send + Sync {
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        resp: &mut SnpReportResp,
        certs: &mut [u8],
    ) -> Result<(), SnpIoctlError>;
    fn path(&self) -> &Path;
}

impl SevGuestDevice for HostDevice {
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        resp: &mut SnpReportResp,
        certs: &mut [u8],
    ) -> Result<(), SnpIoctlError> {
        super::sys::snp_get_ext_report(&self.file, req, resp, certs)
    }

    fn path(&self) -> &Path {
        HostDevice::path(self)
    }
}

/// Where the TEE interfaces are and how to open them.
pub trait Platform: Send + Sync {
    fn fs(&self) -> Arc<dyn KernelFs>;
    fn open_tdx_guest(&self, path: &Path) -> io::Result<Box<dyn TdxDevice>>;
    fn open_sev_guest(&self, path: &Path) -> io::Result<Box<dyn SevGuestDevice>>;
}

/// The running kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Platform for Host {
    fn fs(&self) -> Arc<dyn KernelFs> {
        Arc::new(HostFs)
    }

    fn open_tdx_guest(&self, path: &Path) -> io::Result<Box<dyn TdxDevice>> {
        Ok(Box::new(HostDevice::open(path)?))
    }

    fn open_sev_guest(&self, path: &Path) -> io::Result<Box<dyn SevGuestDevice>> {
        Ok(Box::new(HostDevice::open(path)?))
    }
}

/// How often a busy interface is asked again, and how long to wait in between (the
/// wait grows linearly with the attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }
}

/// One try of a retried operation.
pub(crate) enum Attempt<T> {
    Done(T),
    /// Transient failure: try again (the reason is reported if every try fails).
    Retry(String),
}

impl RetryPolicy {
    /// Runs `attempt` until it is done, fails for good, or the attempts are used up.
    pub(crate) fn run<T>(
        &self,
        interface: &str,
        mut attempt: impl FnMut() -> Result<Attempt<T>>,
    ) -> Result<T> {
        let mut last = String::from("no attempt was made (retry policy allows 0)");
        for n in 0..self.attempts {
            if n > 0 {
                std::thread::sleep(self.backoff * n);
            }
            match attempt()? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry(why) => last = why,
            }
        }
        Err(Error::TeeInterface {
            interface: interface.into(),
            detail: format!("gave up after {} attempts; last: {last}", self.attempts),
        })
    }
}

/// EBUSY, EAGAIN (= EWOULDBLOCK) and EINTR: the interface may answer if asked again.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
    )
}

/// An interface error for `path`.
pub(crate) fn interface_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::TeeInterface {
        interface: path.display().to_string(),
        detail: detail.into(),
    }
}
