//! RTMR3 through the kernel's tsm-mr attribute
//! `/sys/class/misc/tdx_guest/measurements/rtmr3:sha384` (Linux ≥ 6.16,
//! Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest): a 48-byte write at
//! offset 0 extends, a read returns the current value. Every TDX backend records the
//! measured config there.

use std::path::PathBuf;
use std::sync::Arc;

use cocoon_attestation::event_log::rtmr_extend;

use super::platform::{interface_error, KernelFs};
use super::{ConfigRegister, CONFIG_RTMR};
use crate::Result;

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
