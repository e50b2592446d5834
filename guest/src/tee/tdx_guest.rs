//! TDX without configfs-tsm: the TDREPORT from `/dev/tdx_guest` (`TDX_CMD_GET_REPORT0`,
//! Linux ≥ 6.2), turned into a quote by the host's Quote Generation Service over vsock;
//! and, for every TDX backend, the extension of RTMR3 through tsm-mr.
//!
//! Kernels 6.2–6.6 have the device but no configfs-tsm (and no upstream quote ioctl),
//! so the quote comes from the QGS the way Intel's `libtdx_attest` gets it. The QGS is
//! host software: before the TDREPORT leaves the guest its REPORTDATA is checked, and
//! the quote that comes back must be over this very TDREPORT (same REPORTDATA, MRTD,
//! RTMRs, attributes), or it is refused.
//!
//! RTMR3 records the measured config. The kernel lets user space extend it through the
//! tsm-mr attribute `/sys/class/misc/tdx_guest/measurements/rtmr3:sha384` (Linux ≥ 6.16,
//! Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest): a 48-byte write at
//! offset 0 extends, a read returns the current value. Without it the guest refuses to
//! start: an RTMR3 left unextended would make every verifier refuse it anyway, and
//! failing here says why.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_attestation::event_log::rtmr_extend;
use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::tdx::td_report::TdReport;

use super::kernel::{interface_error, is_transient, Attempt, HostDevice, KernelFs, RetryPolicy};
use super::qgs::QgsClient;
pub use super::sys::TdxReportReq;
use super::sys::TDX_CMD_GET_REPORT0;
use super::CONFIG_RTMR;
use super::{check_device_output, ConfigRegister, Evidence, EvidenceProvider, ParsedEvidence};
use crate::{Error, Result};

/// The TDX guest device.
pub const DEFAULT_DEVICE: &str = "/dev/tdx_guest";
/// The tsm-mr attribute of RTMR3.
pub const DEFAULT_RTMR3: &str = "/sys/class/misc/tdx_guest/measurements/rtmr3:sha384";

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

/// A TDREPORT over `report_data`, retrying while the device is busy.
pub fn td_report(
    device: &dyn TdxDevice,
    report_data: &ReportData,
    retry: &RetryPolicy,
) -> Result<(Vec<u8>, TdReport)> {
    let path = device.path();
    let raw = retry.run(&path.display().to_string(), || {
        let mut req = TdxReportReq {
            reportdata: *report_data,
            tdreport: [0; 1024],
        };
        match device.get_report0(&mut req) {
            Ok(()) => Ok(Attempt::Done(req.tdreport.to_vec())),
            Err(e) if is_transient(&e) => Ok(Attempt::Retry(format!("TDX_CMD_GET_REPORT0: {e}"))),
            Err(e) => Err(interface_error(
                path,
                match e.raw_os_error() {
                    Some(libc::ENOTTY) | Some(libc::EINVAL) => format!(
                        "not a TDX guest device: TDX_CMD_GET_REPORT0 ({TDX_CMD_GET_REPORT0:#x}) \
                         gave {e}"
                    ),
                    Some(libc::EIO) => format!(
                        "TDCALL[TDG.MR.REPORT] failed ({e}): the TDX module refused the report"
                    ),
                    _ => format!("TDX_CMD_GET_REPORT0 failed: {e}"),
                },
            )),
        }
    })?;
    let report = TdReport::parse(&raw)
        .map_err(|e| interface_error(path, format!("the device returned no TDREPORT: {e}")))?;
    if report.report_data != *report_data {
        return Err(Error::ReportDataMismatch {
            what: "TDREPORT",
            observed: hex::encode(report.report_data),
            requested: hex::encode(report_data),
        });
    }
    Ok((raw, report))
}

/// TDX quotes from `/dev/tdx_guest` and the QGS.
pub struct TdxGuestTee {
    device: Box<dyn TdxDevice>,
    qgs: QgsClient,
    rtmr3: TsmMrRtmr,
    retry: RetryPolicy,
}

impl TdxGuestTee {
    pub fn new(
        device: Box<dyn TdxDevice>,
        qgs: QgsClient,
        rtmr3: TsmMrRtmr,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            device,
            qgs,
            rtmr3,
            retry,
        }
    }
}

impl EvidenceProvider for TdxGuestTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Tdx
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let (raw_report, report) = td_report(self.device.as_ref(), report_data, &self.retry)?;
        let quote = self.qgs.get_quote(&raw_report)?;
        let evidence = check_device_output(EvidenceKind::Tdx, quote, None, report_data)?;
        if let ParsedEvidence::Tdx(quote) = &evidence.parsed {
            report
                .check_quote_body(&quote.body)
                .map_err(|e| Error::TeeInterface {
                    interface: self.qgs.address().to_string(),
                    detail: format!("the QGS returned a quote for another TD: {e}"),
                })?;
        }
        Ok(evidence)
    }

    fn extend_config_register(&self, digest: &[u8; 48]) -> Result<ConfigRegister> {
        self.rtmr3.extend(digest)
    }
}

/// RTMR3 through the tsm-mr sysfs attribute.
pub struct TsmMrRtmr {
    fs: Arc<dyn KernelFs>,
    path: PathBuf,
}

impl TsmMrRtmr {
    pub fn new(fs: Arc<dyn KernelFs>, path: impl Into<PathBuf>) -> Self {
        Self {
            fs,
            path: path.into(),
        }
    }

    fn read(&self) -> Result<[u8; 48]> {
        let value = self
            .fs
            .read(&self.path)
            .map_err(|e| interface_error(&self.path, format!("cannot read RTMR3: {e}")))?;
        value.as_slice().try_into().map_err(|_| {
            interface_error(
                &self.path,
                format!(
                    "RTMR3 read {} bytes, expected 48: this is not the tsm-mr rtmr3:sha384 \
                     attribute",
                    value.len()
                ),
            )
        })
    }

    /// Extends RTMR3 with `digest`, then reads it back: the new value must be
    /// SHA-384(old || digest), or something else is writing the register.
    pub fn extend(&self, digest: &[u8; 48]) -> Result<ConfigRegister> {
        if !self.fs.exists(&self.path) {
            return Err(interface_error(
                &self.path,
                "RTMR3 cannot be extended: the kernel has no tsm-mr interface (Linux ≥ \
                 6.16 with the tdx_guest driver provides it); the guest will not serve \
                 with an unextended RTMR3, which every verifier would refuse",
            ));
        }
        let before = self.read()?;
        self.fs
            .write(&self.path, digest)
            .map_err(|e| interface_error(&self.path, format!("extending RTMR3 failed: {e}")))?;
        let after = self.read()?;
        let expected = rtmr_extend(&before, digest);
        if after != expected {
            return Err(interface_error(
                &self.path,
                format!(
                    "RTMR3 is {} after the extension, expected SHA-384(previous || digest) = \
                     {}: the write did not extend the register (not a tsm-mr attribute?) or \
                     another process extended it at the same time",
                    hex::encode(after),
                    hex::encode(expected)
                ),
            ));
        }
        Ok(ConfigRegister::TdxRtmr(CONFIG_RTMR))
    }
}
