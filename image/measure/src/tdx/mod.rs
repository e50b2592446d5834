//! Intel TDX: MRTD from the firmware, RTMR1/RTMR2 from a directly booted kernel.
//!
//! A TD's build-time register MRTD covers exactly what the host page-adds before the TD
//! starts, which TDVF declares in its metadata ([`tdvf`], [`mrtd`]). The runtime
//! registers are extended by software inside the TD: TDVF measures the kernel image
//! into RTMR1 ([`authenticode`]), and the kernel's EFI stub measures its command line
//! and initrd into RTMR2 ([`rtmr`]). RTMR0 (firmware configuration: TD HOB, ACPI
//! tables, CFV) is not predicted; [`rtmr::RTMR0_NOT_PREDICTED`] says why.

pub mod authenticode;
pub mod mrtd;
pub mod qemu_header;
pub mod rtmr;
pub mod tdvf;

use std::path::Path;

use serde::Serialize;

use crate::error::{read_file, Result};

/// Predicted TDX registers (hex). `None`: not predicted (RTMR0 always; RTMR1/2 without
/// a directly booted kernel, since then the boot loader decides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxPrediction {
    pub mrtd: String,
    pub rtmr0: Option<String>,
    pub rtmr1: Option<String>,
    pub rtmr2: Option<String>,
}

/// Predicts MRTD from the firmware at `firmware` and RTMR1/RTMR2 from `boot`, returning
/// the events that make up RTMR1/RTMR2 too.
pub fn predict(
    firmware: &Path,
    boot: Option<&rtmr::DirectBoot<'_>>,
    order: mrtd::PageAddOrder,
) -> Result<(TdxPrediction, Vec<rtmr::BootEvent>)> {
    let image = read_file("TDX firmware", firmware)?;
    let tdvf = tdvf::Tdvf::parse(&image, firmware)?;
    let mrtd = mrtd::compute(&tdvf, &image, order)?;
    let events = boot.map(rtmr::events).transpose()?;
    let register = |i: u8| events.as_deref().map(|e| hex::encode(rtmr::replay(e, i)));
    let prediction = TdxPrediction {
        mrtd: hex::encode(mrtd),
        rtmr0: None,
        rtmr1: register(1),
        rtmr2: register(2),
    };
    Ok((prediction, events.unwrap_or_default()))
}
