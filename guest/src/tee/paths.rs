//! Where the kernel's TEE interfaces are: their default paths, and [`TeePaths`], which
//! tests point into a temporary directory.

use std::path::PathBuf;

use super::qgs::QgsAddress;

/// The configfs-tsm report directory.
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";
/// The TDX guest device.
pub const TDX_GUEST_DEVICE: &str = "/dev/tdx_guest";
/// The tsm-mr attribute of RTMR3.
pub const TDX_RTMR3: &str = "/sys/class/misc/tdx_guest/measurements/rtmr3:sha384";
/// The SEV guest device.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// Where each interface lives (the kernel's paths by default; tests point them into a
/// temporary directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeePaths {
    /// configfs-tsm report directory (Linux ≥ 6.7).
    pub tsm_report_dir: PathBuf,
    /// The TDX guest device (Linux ≥ 6.2).
    pub tdx_guest: PathBuf,
    /// The SEV guest device (Linux ≥ 5.19).
    pub sev_guest: PathBuf,
    /// The tsm-mr attribute that extends RTMR3 (Linux ≥ 6.16).
    pub rtmr3: PathBuf,
    /// Where the quote generation service listens, for `/dev/tdx_guest` without
    /// configfs-tsm.
    pub qgs: QgsAddress,
}

impl Default for TeePaths {
    fn default() -> Self {
        Self {
            tsm_report_dir: TSM_REPORT_DIR.into(),
            tdx_guest: TDX_GUEST_DEVICE.into(),
            sev_guest: SEV_GUEST_DEVICE.into(),
            rtmr3: TDX_RTMR3.into(),
            qgs: QgsAddress::default(),
        }
    }
}
