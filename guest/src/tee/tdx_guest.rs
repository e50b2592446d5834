//! TDX without configfs-tsm: the TDREPORT from `/dev/tdx_guest` (`TDX_CMD_GET_REPORT0`,
//! Linux ≥ 6.2), turned into a quote by the host's Quote Generation Service over vsock;
//! RTMR3 is extended through tsm-mr (`tsm_mr`).
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

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::tdx::td_report::TdReport;

use super::platform::{
    interface_error, is_transient, Attempt, RetryPolicy, TdxDevice, TdxReportReq,
};
use super::qgs::QgsClient;
use super::sys::TDX_CMD_GET_REPORT0;
use super::tsm_mr::TsmMrRtmr;
use super::{check_device_output, ConfigRegister, Evidence, EvidenceProvider, ParsedEvidence};
use crate::{Error, Result};

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
