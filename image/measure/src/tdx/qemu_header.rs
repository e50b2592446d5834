//! QEMU's edits to a kernel's x86 setup header, and when they change RTMR1.
//!
//! For `-kernel`, QEMU writes boot-protocol fields (loader type, heap end, command-line
//! address, initrd address and size) into the setup header it hands the firmware.
//! Upstream QEMU stopped doing that for confidential guests (QEMU 10.0, `cgs` set): the
//! firmware then sees the file unchanged, and the kernel's Authenticode hash is that of
//! the file. Older TDX QEMU builds (e.g. the 8.2/9.x TDX trees) still patch the header,
//! and the initrd address they write depends on the guest memory size, so RTMR1 does
//! too. This module reproduces that legacy patch for a q35 machine.

use crate::bytes;
use crate::error::{Error, Result};

/// QEMU q35's ACPI data reservation below 4 GiB (`acpi_data_size`: 0x20000 + 0x8000).
pub const Q35_ACPI_DATA_SIZE: u64 = 0x28000;
/// Loader type QEMU writes (`0xB0`: QEMU, revision 0).
const LOADER_QEMU: u8 = 0xb0;
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 0x40;

fn header(detail: impl Into<String>) -> Error {
    Error::KernelHeader(detail.into())
}

/// Guest RAM below 4 GiB on q35 for `memory` bytes (QEMU splits at 2 GiB when the guest
/// has at least 2.75 GiB, else at 2.75 GiB).
pub fn q35_below_4g(memory: u64) -> u64 {
    let lowmem = if memory >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    };
    memory.min(lowmem)
}

/// The kernel bytes the firmware sees from a QEMU that patches the header, for a q35
/// guest with `memory` bytes of RAM and an initrd of `initrd_size` bytes (0: none).
pub fn legacy_patch(
    kernel: &[u8],
    cmdline: &str,
    initrd_size: u64,
    memory: u64,
) -> Result<Vec<u8>> {
    let mut k = kernel.to_vec();
    let protocol = match bytes::slice(&k, 0x202, 4) {
        Some(b"HdrS") => bytes::u16_le(&k, 0x206).unwrap_or(0),
        _ => return Err(header("no 'HdrS' boot-protocol signature at byte 0x202")),
    };
    let loadflags = bytes::array::<1>(&k, 0x211).map_or(0, |[b]| b);
    if protocol < 0x202 || loadflags & LOADED_HIGH == 0 {
        return Err(header(format!(
            "boot protocol {protocol:#x} / loadflags {loadflags:#x}: only protocol 2.02+ bzImages are modelled"
        )));
    }
    if cmdline.contains("vga=") {
        return Err(header(
            "'vga=' on the command line makes QEMU patch the video mode, which is not modelled",
        ));
    }
    let (real_addr, cmdline_addr) = (0x10000u32, 0x20000u32);
    let xlf = bytes::u16_le(&k, 0x236).unwrap_or(0);
    let mut initrd_max: u64 = if protocol >= 0x20c && xlf & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
        u64::from(u32::MAX)
    } else if protocol >= 0x203 {
        u64::from(bytes::u32_le(&k, 0x22c).ok_or_else(|| header("truncated setup header"))?)
    } else {
        0x37ff_ffff
    };
    let usable = q35_below_4g(memory)
        .checked_sub(Q35_ACPI_DATA_SIZE)
        .filter(|u| *u > 0)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{memory} bytes of memory is too little for a q35 guest"
            ))
        })?;
    if initrd_max >= usable {
        initrd_max = usable - 1;
    }
    let mut put = |at: usize, value: &[u8]| -> Result<()> {
        k.get_mut(at..at + value.len())
            .ok_or_else(|| header("truncated setup header"))?
            .copy_from_slice(value);
        Ok(())
    };
    put(0x228, &cmdline_addr.to_le_bytes())?;
    put(0x210, &[LOADER_QEMU])?;
    put(0x211, &[loadflags | CAN_USE_HEAP])?;
    let heap_end = u16::try_from(cmdline_addr - real_addr - 0x200).unwrap_or(u16::MAX);
    put(0x224, &heap_end.to_le_bytes())?;
    if initrd_size > 0 {
        if initrd_size >= initrd_max {
            return Err(Error::Usage(format!(
                "initrd of {initrd_size} bytes does not fit below {initrd_max:#x} (QEMU refuses it)"
            )));
        }
        let addr = u32::try_from((initrd_max - initrd_size) & !4095).unwrap_or(0);
        put(0x218, &addr.to_le_bytes())?;
        put(
            0x21c,
            &u32::try_from(initrd_size).unwrap_or(u32::MAX).to_le_bytes(),
        )?;
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(protocol: u16, xlf: u16) -> Vec<u8> {
        let mut k = vec![0u8; 0x1000];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        k[0x211] = LOADED_HIGH;
        k[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[0x236..0x238].copy_from_slice(&xlf.to_le_bytes());
        k
    }

    fn initrd_addr(k: &[u8]) -> u32 {
        u32::from_le_bytes(k[0x218..0x21c].try_into().unwrap())
    }

    #[test]
    fn patch_matches_qemu_arithmetic() {
        let k = legacy_patch(&bzimage(0x20f, 0x40), "console=ttyS0", 0x10_0000, 4 << 30).unwrap();
        assert_eq!(k[0x210], 0xb0);
        assert_eq!(k[0x211], 0x81);
        assert_eq!(&k[0x224..0x226], &0xfe00u16.to_le_bytes());
        assert_eq!(&k[0x228..0x22c], &0x20000u32.to_le_bytes());
        // 4 GiB guest: 2 GiB below 4G, minus ACPI, minus one, minus the initrd, page down.
        assert_eq!(
            initrd_addr(&k),
            ((0x8000_0000u64 - 0x28000 - 1 - 0x10_0000) & !4095) as u32
        );
        assert_eq!(&k[0x21c..0x220], &0x10_0000u32.to_le_bytes());
        // Without XLF_CAN_BE_LOADED_ABOVE_4G the header's initrd_addr_max applies, and
        // every guest of 2.75 GiB or more gets the same address.
        let a = legacy_patch(&bzimage(0x20f, 0), "", 4096, 3 << 30).unwrap();
        let b = legacy_patch(&bzimage(0x20f, 0), "", 4096, 64 << 30).unwrap();
        assert_eq!(initrd_addr(&a), initrd_addr(&b));
        let c = legacy_patch(&bzimage(0x20f, 0), "", 4096, 1 << 30).unwrap();
        assert_eq!(
            initrd_addr(&c),
            ((0x4000_0000u64 - 0x28000 - 1 - 4096) & !4095) as u32
        );
    }

    #[test]
    fn unsupported_kernels_are_refused() {
        assert!(legacy_patch(&[0u8; 0x300], "", 0, 1 << 30)
            .unwrap_err()
            .to_string()
            .contains("HdrS"));
        assert!(legacy_patch(&bzimage(0x201, 0), "", 0, 1 << 30)
            .unwrap_err()
            .to_string()
            .contains("2.02"));
        assert!(legacy_patch(&bzimage(0x20f, 0), "vga=791", 0, 1 << 30)
            .unwrap_err()
            .to_string()
            .contains("vga"));
        assert!(legacy_patch(&bzimage(0x20f, 0), "", 1 << 31, 1 << 30)
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
        assert!(legacy_patch(&bzimage(0x20f, 0), "", 0, 0x1000).is_err());
    }
}
