//! RTMR1 and RTMR2 of a directly booted kernel (QEMU `-kernel/-initrd/-append` + TDVF).
//!
//! The event sequence, checked against a real TDX guest's CCEL log and read from edk2
//! (`X86QemuLoadImageLib`, `TdTcg2Dxe`) and the Linux EFI stub:
//!
//! RTMR1 (PCR 2-6):
//! 1. EV_EFI_BOOT_SERVICES_APPLICATION: the Authenticode SHA-384 of the kernel as the
//!    firmware received it (see [`super::qemu_header`] for when QEMU edits it);
//! 2. EV_EFI_ACTION "Calling EFI Application from Boot Option" (ReadyToBoot);
//! 3. EV_SEPARATOR `00000000`;
//! 4. EV_EFI_ACTION "Exit Boot Services Invocation";
//! 5. EV_EFI_ACTION "Exit Boot Services Returned with Success".
//!
//! RTMR2 (PCR 8-15), measured by the kernel's EFI stub (Linux 6.9+ measures into the
//! TDX CC protocol; earlier kernels leave RTMR2 at zero):
//! 1. EV_EVENT_TAG "LOADED_IMAGE::LoadOptions": SHA-384 of the load options exactly as
//!    TDVF built them: the QEMU command line, then `" initrd=initrd"` when an initrd is
//!    given, each byte widened to a UTF-16LE code unit, plus a UTF-16 NUL; nothing when
//!    both are empty;
//! 2. EV_EVENT_TAG "Linux initrd": SHA-384 of the initrd file, when one is given.

use sha2::{Digest, Sha384};

use crate::error::{Error, Result};
use crate::tdx::{authenticode, qemu_header};

/// Why RTMR0 is not predicted.
pub const RTMR0_NOT_PREDICTED: &str =
    "RTMR0 measures the TD HOB (its memory map depends on the guest memory size and \
     layout), the configuration firmware volume (CFV) with its UEFI variables, the \
     Secure Boot variables, the ACPI tables QEMU generates for the exact machine (vCPU \
     count, memory, devices, PCI layout) and the boot variables; reproducing QEMU's ACPI \
     generation is not implemented, so take RTMR0 from a measured boot of the same VM \
     shape (same QEMU, firmware, vCPUs, memory and devices) and pass it as --tdx-rtmr0";

/// One measured event: which RTMR (0-3), what it is, and the digest extended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEvent {
    pub rtmr: u8,
    pub description: String,
    pub digest: [u8; 48],
}

/// How the kernel bytes reach the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelHeader {
    /// Unchanged (QEMU 10.0+ for confidential guests).
    Unpatched,
    /// Setup header patched by an older QEMU for a q35 guest with this much RAM (bytes).
    LegacyPatched { memory: u64 },
}

/// What QEMU is told with `-kernel/-initrd/-append`.
#[derive(Debug, Clone)]
pub struct DirectBoot<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
    pub header: KernelHeader,
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// The EFI load options TDVF gives the kernel (UTF-16LE with NUL), or `None` when it
/// gives none (empty command line and no initrd).
pub fn load_options(cmdline: &str, has_initrd: bool) -> Result<Option<Vec<u8>>> {
    if cmdline.contains('\0') {
        return Err(Error::Usage(
            "the kernel command line contains a NUL byte".into(),
        ));
    }
    let mut text = cmdline.as_bytes().to_vec();
    if has_initrd {
        text.extend_from_slice(b" initrd=initrd");
    }
    if text.is_empty() {
        return Ok(None);
    }
    // UnicodeSPrintAsciiFormat("%a") widens each byte to one CHAR16.
    let mut out: Vec<u8> = text.iter().flat_map(|b| [*b, 0]).collect();
    out.extend_from_slice(&[0, 0]);
    Ok(Some(out))
}

/// The RTMR1 and RTMR2 events of `boot`, in extension order.
pub fn events(boot: &DirectBoot<'_>) -> Result<Vec<BootEvent>> {
    let kernel = match boot.header {
        KernelHeader::Unpatched => authenticode::sha384(boot.kernel)?,
        KernelHeader::LegacyPatched { memory } => {
            let initrd_size = boot.initrd.map_or(0, |i| i.len() as u64);
            let patched =
                qemu_header::legacy_patch(boot.kernel, boot.cmdline, initrd_size, memory)?;
            authenticode::sha384(&patched)?
        }
    };
    let action = |text: &str| BootEvent {
        rtmr: 1,
        description: format!("EV_EFI_ACTION \"{text}\""),
        digest: sha384(text.as_bytes()),
    };
    let mut out = vec![
        BootEvent {
            rtmr: 1,
            description: "EV_EFI_BOOT_SERVICES_APPLICATION kernel (Authenticode SHA-384)".into(),
            digest: kernel,
        },
        action("Calling EFI Application from Boot Option"),
        BootEvent {
            rtmr: 1,
            description: "EV_SEPARATOR 00000000".into(),
            digest: sha384(&[0, 0, 0, 0]),
        },
        action("Exit Boot Services Invocation"),
        action("Exit Boot Services Returned with Success"),
    ];
    if let Some(options) = load_options(boot.cmdline, boot.initrd.is_some())? {
        out.push(BootEvent {
            rtmr: 2,
            description: "EV_EVENT_TAG LOADED_IMAGE::LoadOptions (UTF-16LE command line)".into(),
            digest: sha384(&options),
        });
    }
    if let Some(initrd) = boot.initrd {
        out.push(BootEvent {
            rtmr: 2,
            description: "EV_EVENT_TAG Linux initrd".into(),
            digest: sha384(initrd),
        });
    }
    Ok(out)
}

/// The value of `rtmr` after `events`, starting from zero.
pub fn replay(events: &[BootEvent], rtmr: u8) -> [u8; 48] {
    events
        .iter()
        .filter(|e| e.rtmr == rtmr)
        .fold([0u8; 48], |acc, e| {
            cocoon_attestation::event_log::rtmr_extend(&acc, &e.digest)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::authenticode::tests::sample_pe;

    #[test]
    fn load_options_follow_tdvf() {
        let opts = load_options("console=ttyS0", true).unwrap().unwrap();
        let text: Vec<u16> = opts
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&text).unwrap(),
            "console=ttyS0 initrd=initrd\0"
        );
        assert_eq!(
            load_options("a", false).unwrap().unwrap(),
            vec![b'a', 0, 0, 0]
        );
        assert_eq!(load_options("", false).unwrap(), None);
        assert_eq!(load_options("", true).unwrap().unwrap().len(), 2 * 15);
        // Bytes are widened, not UTF-8 decoded (UnicodeSPrintAsciiFormat).
        assert_eq!(
            load_options("é", false).unwrap().unwrap(),
            vec![0xc3, 0, 0xa9, 0, 0, 0]
        );
        assert!(load_options("a\0b", false).is_err());
    }

    #[test]
    fn event_sequence_and_replay() {
        let kernel = sample_pe(0);
        let boot = DirectBoot {
            kernel: &kernel,
            initrd: Some(b"initrd bytes"),
            cmdline: "root=/dev/vda",
            header: KernelHeader::Unpatched,
        };
        let list = events(&boot).unwrap();
        let rtmr1: Vec<_> = list.iter().filter(|e| e.rtmr == 1).collect();
        assert_eq!(rtmr1.len(), 5);
        assert_eq!(rtmr1[0].digest, authenticode::sha384(&kernel).unwrap());
        // Digests of the fixed events, as they appear in the real CCEL log (gotdx).
        assert!(hex::encode(rtmr1[1].digest).starts_with("77a0dab2312b4e1e57a84d86"));
        assert!(hex::encode(rtmr1[2].digest).starts_with("394341b7182cd227c5c6b07e"));
        assert!(hex::encode(rtmr1[3].digest).starts_with("214b0bef1379756011344877"));
        assert!(hex::encode(rtmr1[4].digest).starts_with("0a2e01c85deae718a530ad8c"));
        let rtmr2: Vec<_> = list.iter().filter(|e| e.rtmr == 2).collect();
        assert_eq!(rtmr2.len(), 2);
        assert_eq!(rtmr2[1].digest, sha384(b"initrd bytes"));
        let mut want = [0u8; 48];
        for e in &rtmr2 {
            let mut h = Sha384::new();
            h.update(want);
            h.update(e.digest);
            want = h.finalize().into();
        }
        assert_eq!(replay(&list, 2), want);
        assert_eq!(replay(&list, 3), [0u8; 48]);
        // A non-PE kernel is refused, not hashed as a file.
        let bad = DirectBoot {
            kernel: b"not a kernel",
            ..boot
        };
        assert!(events(&bad).unwrap_err().to_string().contains("PE"));
    }
}
