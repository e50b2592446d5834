//! Creating a read-only device-mapper device from one target: what `dmsetup create`
//! does, in three ioctls on `/dev/mapper/control` (`DM_DEV_CREATE`, `DM_TABLE_LOAD`,
//! `DM_DEV_SUSPEND` without the suspend flag, which resumes the device and makes the
//! loaded table live). `include/uapi/linux/dm-ioctl.h` defines the structures; their sizes
//! and offsets are asserted at compile time.

#![allow(unsafe_code)]

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;

use crate::{Error, Result};

/// `struct dm_ioctl` (interface version 4).
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; 128],
    uuid: [u8; 129],
    data: [u8; 7],
}

const _: () = {
    assert!(size_of::<DmIoctl>() == 312);
    assert!(offset_of!(DmIoctl, flags) == 28);
    assert!(offset_of!(DmIoctl, dev) == 40);
    assert!(offset_of!(DmIoctl, name) == 48);
    assert!(offset_of!(DmIoctl, uuid) == 176);
};

/// `struct dm_target_spec` (40 bytes), followed by the NUL-terminated parameters.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; 16],
}

const _: () = {
    assert!(size_of::<DmTargetSpec>() == 40);
    assert!(offset_of!(DmTargetSpec, next) == 20);
    assert!(offset_of!(DmTargetSpec, target_type) == 24);
};

const fn iowr(nr: u64) -> u64 {
    (3 << 30) | ((size_of::<DmIoctl>() as u64) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u64 = iowr(3);
const DM_DEV_SUSPEND: u64 = iowr(6);
const DM_TABLE_LOAD: u64 = iowr(9);
const DM_READONLY_FLAG: u32 = 1;

/// The control device.
pub const CONTROL: &str = "/dev/mapper/control";

/// The buffer of one ioctl call: the header, then `payload`, in u64 words for alignment.
fn request(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> Result<Vec<u64>> {
    if name.is_empty() || name.len() >= 128 {
        return Err(Error::Boot(format!(
            "device-mapper name '{name}' is not 1-127 bytes"
        )));
    }
    let total = size_of::<DmIoctl>() + payload.len();
    let mut header = DmIoctl {
        version: [4, 0, 0],
        data_size: u32::try_from(total)
            .map_err(|_| Error::Boot("device-mapper table too large".into()))?,
        data_start: size_of::<DmIoctl>() as u32,
        target_count,
        open_count: 0,
        flags,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; 128],
        uuid: [0; 129],
        data: [0; 7],
    };
    header.name[..name.len()].copy_from_slice(name.as_bytes());
    let mut words = vec![0u64; total.div_ceil(8)];
    // SAFETY: `words` holds at least `total >= size_of::<DmIoctl>()` bytes, u64-aligned
    // (DmIoctl needs 8); DmIoctl is plain old data.
    unsafe { std::ptr::write(words.as_mut_ptr().cast::<DmIoctl>(), header) };
    // SAFETY: the byte view covers exactly the allocation of `words`.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    bytes[size_of::<DmIoctl>()..total].copy_from_slice(payload);
    Ok(words)
}

fn call(control: &File, op: &'static str, name: &str, nr: u64, buf: &mut [u64]) -> Result<DmIoctl> {
    // SAFETY: `buf` starts with a valid DmIoctl whose data_size does not exceed the
    // buffer; the kernel reads and writes at most data_size bytes of it.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), nr as _, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(Error::DeviceMapper {
            op,
            name: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the buffer still starts with a DmIoctl (the kernel wrote one back).
    Ok(unsafe { std::ptr::read(buf.as_ptr().cast::<DmIoctl>()) })
}

/// The `dm_target_spec` + parameters payload of a one-target table.
fn one_target(kind: &str, sectors: u64, params: &str) -> Result<Vec<u8>> {
    if kind.len() >= 16 {
        return Err(Error::Boot(format!("target type '{kind}' too long")));
    }
    let mut target_type = [0u8; 16];
    target_type[..kind.len()].copy_from_slice(kind.as_bytes());
    let params_len = (params.len() + 1).next_multiple_of(8);
    let spec = DmTargetSpec {
        sector_start: 0,
        length: sectors,
        status: 0,
        next: 0,
        target_type,
    };
    let mut out = vec![0u8; size_of::<DmTargetSpec>() + params_len];
    out[0..8].copy_from_slice(&spec.sector_start.to_ne_bytes());
    out[8..16].copy_from_slice(&spec.length.to_ne_bytes());
    out[16..20].copy_from_slice(&spec.status.to_ne_bytes());
    out[20..24].copy_from_slice(&spec.next.to_ne_bytes());
    out[24..40].copy_from_slice(&spec.target_type);
    out[40..40 + params.len()].copy_from_slice(params.as_bytes());
    Ok(out)
}

/// Creates the read-only device `name` with one `kind` target of `sectors` sectors and
/// `params`, makes it live, and returns its device number.
pub fn create_read_only(name: &str, kind: &str, sectors: u64, params: &str) -> Result<u64> {
    let control = File::options()
        .read(true)
        .write(true)
        .open(CONTROL)
        .map_err(|e| Error::io(CONTROL, e))?;
    let created = call(
        &control,
        "create",
        name,
        DM_DEV_CREATE,
        &mut request(name, 0, 0, &[])?,
    )?;
    let table = one_target(kind, sectors, params)?;
    call(
        &control,
        "table load",
        name,
        DM_TABLE_LOAD,
        &mut request(name, DM_READONLY_FLAG, 1, &table)?,
    )?;
    call(
        &control,
        "resume",
        name,
        DM_DEV_SUSPEND,
        &mut request(name, 0, 0, &[])?,
    )?;
    Ok(created.dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // _IOWR(0xfd, 3 / 6 / 9, struct dm_ioctl) as the C macros compute them.
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_DEV_SUSPEND, 0xc138_fd06);
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
    }

    #[test]
    fn a_table_load_request_has_the_layout_dmsetup_sends() {
        let table = one_target("verity", 800, "1 /dev/vda /dev/vda").unwrap();
        assert_eq!(table.len(), 40 + 24);
        let words = request("root", DM_READONLY_FLAG, 1, &table).unwrap();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        assert_eq!([u32_at(0), u32_at(4), u32_at(8)], [4, 0, 0]);
        assert_eq!(u32_at(12) as usize, 312 + 64, "data_size");
        assert_eq!(u32_at(16), 312, "data_start");
        assert_eq!(u32_at(20), 1, "target_count");
        assert_eq!(u32_at(28), DM_READONLY_FLAG);
        assert_eq!(&bytes[48..53], b"root\0");
        let spec = &bytes[312..];
        assert_eq!(u64::from_ne_bytes(spec[8..16].try_into().unwrap()), 800);
        assert_eq!(&spec[24..31], b"verity\0");
        assert_eq!(&spec[40..59], b"1 /dev/vda /dev/vda");
        assert_eq!(spec[59], 0);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(request("", 0, 0, &[]).is_err());
        assert!(request(&"x".repeat(128), 0, 0, &[]).is_err());
    }
}
