//! SEV-SNP without configfs-tsm: `SNP_GET_EXT_REPORT` on `/dev/sev-guest` (Linux ≥
//! 5.19), which returns the firmware's `MSG_REPORT_RSP` and the host's certificate table.
//!
//! The certificate buffer must be whole pages. If the host's table does not fit, the
//! kernel fails the ioctl with `EIO`, sets the VMM error in `exitinfo2` to
//! `SNP_GUEST_VMM_ERR_INVALID_LEN` and writes the needed length into `certs_len`; the
//! request is then repeated once with a buffer of that size. A busy host
//! (`SNP_GUEST_VMM_ERR_BUSY`, `EBUSY`, `EAGAIN`) is asked again a bounded number of
//! times. `ENOTTY` means the file is not the SEV guest device — or, on a real guest,
//! that the kernel disabled the VMPCK after a failed request, which needs a reboot.
//!
//! SEV-SNP has no guest-extendable measurement register: the measured config is bound
//! through REPORTDATA and the launch-time HOST_DATA that `self_check` verifies.

use std::io;

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::snp::ext_report::ReportResponse;

use super::platform::{
    interface_error, Attempt, RetryPolicy, SevGuestDevice, SnpExtReportReq, SnpIoctlError,
    SnpReportReq, SnpReportResp,
};
use super::sys::SNP_GET_EXT_REPORT;
use super::{check_device_output, ConfigRegister, Evidence, EvidenceProvider};
use crate::Result;
/// Shift of the VMM error in `exitinfo2`.
pub const SNP_GUEST_VMM_ERR_SHIFT: u32 = 32;
/// VMM error: the certificate buffer is too small (`certs_len` says how large).
pub const SNP_GUEST_VMM_ERR_INVALID_LEN: u32 = 1;
/// VMM error: the host is busy.
pub const SNP_GUEST_VMM_ERR_BUSY: u32 = 2;
/// The certificate buffer tried first: `SEV_FW_BLOB_MAX_SIZE` (16 KiB), the most the
/// kernel accepts, which holds a VCEK, ASK and ARK.
pub const FIRST_CERTS_LEN: usize = 0x4000;
/// Largest certificate buffer the guest agrees to allocate when the kernel asks.
pub const MAX_CERTS_LEN: usize = 1 << 20;
const PAGE_SIZE: usize = 4096;

impl SnpIoctlError {
    pub fn vmm_error(&self) -> u32 {
        (self.exitinfo2 >> SNP_GUEST_VMM_ERR_SHIFT) as u32
    }

    pub fn fw_error(&self) -> u32 {
        self.exitinfo2 as u32
    }
}

/// SEV-SNP reports and certificates from `/dev/sev-guest`.
pub struct SevGuestTee {
    device: Box<dyn SevGuestDevice>,
    vmpl: u32,
    retry: RetryPolicy,
}

impl SevGuestTee {
    /// `vmpl` is the privilege level the report is requested for (0 unless the guest
    /// runs under an SVSM).
    pub fn new(device: Box<dyn SevGuestDevice>, vmpl: u32, retry: RetryPolicy) -> Self {
        Self {
            device,
            vmpl,
            retry,
        }
    }

    /// One report: the raw `MSG_REPORT_RSP` bytes and the certificate buffer.
    fn ext_report(&self, report_data: &ReportData) -> Result<(Box<SnpReportResp>, Vec<u8>)> {
        let path = self.device.path();
        let mut certs_len = FIRST_CERTS_LEN;
        let mut resized = false;
        self.retry.run(&path.display().to_string(), || {
            let mut req = SnpExtReportReq {
                data: SnpReportReq {
                    user_data: *report_data,
                    vmpl: self.vmpl,
                    rsvd: [0; 28],
                },
                certs_address: 0,
                certs_len: certs_len as u32,
            };
            let mut resp = Box::new(SnpReportResp { data: [0; 4000] });
            let mut certs = vec![0u8; certs_len];
            let error = match self.device.get_ext_report(&mut req, &mut resp, &mut certs) {
                Ok(()) => return Ok(Attempt::Done((resp, certs))),
                Err(error) => error,
            };
            let described = format!(
                "SNP_GET_EXT_REPORT ({SNP_GET_EXT_REPORT:#x}) failed: {} (firmware error \
                 {:#x}, VMM error {:#x})",
                io::Error::from_raw_os_error(error.errno),
                error.fw_error(),
                error.vmm_error()
            );
            match (error.errno, error.vmm_error()) {
                (_, SNP_GUEST_VMM_ERR_INVALID_LEN) if !resized => {
                    let needed = req.certs_len as usize;
                    if needed <= certs_len
                        || !needed.is_multiple_of(PAGE_SIZE)
                        || needed > MAX_CERTS_LEN
                    {
                        return Err(interface_error(
                            path,
                            format!(
                                "the host's certificate table does not fit in {certs_len} \
                                 bytes and the kernel asks for {needed}, which is not a \
                                 larger whole number of pages up to {MAX_CERTS_LEN}"
                            ),
                        ));
                    }
                    certs_len = needed;
                    resized = true;
                    Ok(Attempt::Retry(format!(
                        "certificate buffer too small, retrying with {needed} bytes"
                    )))
                }
                (_, SNP_GUEST_VMM_ERR_BUSY) | (libc::EBUSY, _) | (libc::EAGAIN, _) => {
                    Ok(Attempt::Retry(described))
                }
                (libc::ENOTTY, _) => Err(interface_error(
                    path,
                    format!(
                        "not an SEV guest device, or its VMPCK is disabled after an \
                         earlier failed request: {described}"
                    ),
                )),
                _ => Err(interface_error(path, described)),
            }
        })
    }
}

impl EvidenceProvider for SevGuestTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SevSnp
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let (resp, certs) = self.ext_report(report_data)?;
        let report = ReportResponse::parse(&resp.data)
            .map_err(|e| interface_error(self.device.path(), e.to_string()))?
            .report;
        check_device_output(EvidenceKind::SevSnp, report, Some(&certs), report_data)
    }

    fn extend_config_register(&self, _digest: &[u8; 48]) -> Result<ConfigRegister> {
        Ok(ConfigRegister::None)
    }
}
