//! Device-mapper ioctls on `/dev/mapper/control`, for the image's init (create a
//! read-only dm-verity device from the measured command line) and the guest (prove the
//! model is on such a device by reading its live table back).
//!
//! `include/uapi/linux/dm-ioctl.h` defines the structures: each is `#[repr(C)]` with its
//! size and field offsets asserted at compile time, and each unsafe block says why it is
//! sound. Reading the kernel's answer (target specs and parameter strings) is
//! bounds-checked safe code; deciding what a table means is the callers' business.
#![deny(unsafe_op_in_unsafe_fn)]

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;

/// The control device.
pub const CONTROL: &str = "/dev/mapper/control";

/// `struct dm_ioctl` (device-mapper interface version 4).
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

impl DmIoctl {
    /// A version-4 request header: `data_size` bytes in all, the payload right after
    /// the header.
    fn new(data_size: u32, target_count: u32, flags: u32, dev: u64) -> Self {
        Self {
            version: [4, 0, 0],
            data_size,
            data_start: size_of::<DmIoctl>() as u32,
            target_count,
            open_count: 0,
            flags,
            event_nr: 0,
            padding: 0,
            dev,
            name: [0; 128],
            uuid: [0; 129],
            data: [0; 7],
        }
    }
}

/// `struct dm_target_spec`, followed in the buffer by its NUL-terminated parameters.
const TARGET_SPEC_SIZE: usize = 40;
const SPEC_SECTOR_START: usize = 0;
const SPEC_LENGTH: usize = 8;
const SPEC_NEXT: usize = 20;
const SPEC_TYPE: usize = 24;
const SPEC_TYPE_LEN: usize = 16;

/// `DM_TABLE_STATUS = _IOWR(0xfd, 12, struct dm_ioctl)`: read|write (3) in bits 30-31,
/// the size in bits 16-29, the type in bits 8-15, the number in bits 0-7.
const DM_TABLE_STATUS: u64 = (3 << 30) | ((size_of::<DmIoctl>() as u64) << 16) | (0xfd << 8) | 12;
/// Return the table (the target parameters) rather than the targets' status.
const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
/// Set by the kernel when the answer did not fit.
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

/// One target of a device-mapper table, as `dmsetup table` prints it:
/// `START LENGTH TYPE PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmTarget {
    pub start: u64,
    pub length: u64,
    pub kind: String,
    pub params: String,
}

/// The live table of the device-mapper device `dev` (an `st_dev` / `st_rdev` value;
/// glibc's encoding is the kernel's `huge_encode_dev`). Needs `CAP_SYS_ADMIN`.
pub fn table(dev: u64) -> io::Result<Vec<DmTarget>> {
    let control = OpenOptions::new().read(true).write(true).open(CONTROL)?;
    let mut size = 16 * 1024;
    loop {
        // u64 words: the kernel structures need 8-byte alignment.
        let mut buf = vec![0u64; size / 8];
        let header = DmIoctl::new(size as u32, 0, DM_STATUS_TABLE_FLAG, dev);
        // SAFETY: `buf` is at least `size_of::<DmIoctl>()` bytes, 8-byte aligned, and
        // `DmIoctl` is plain old data; we write one header at its start.
        unsafe { std::ptr::write(buf.as_mut_ptr().cast::<DmIoctl>(), header) };
        // SAFETY: the kernel reads the header and writes at most `data_size` bytes (the
        // length of `buf`) into it; `control` stays open for the call.
        let rc = unsafe {
            libc::ioctl(
                control.as_raw_fd(),
                DM_TABLE_STATUS as _,
                buf.as_mut_ptr().cast::<libc::c_void>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; the kernel wrote a complete header back.
        let header = unsafe { std::ptr::read(buf.as_ptr().cast::<DmIoctl>()) };
        if header.flags & DM_BUFFER_FULL_FLAG != 0 {
            if size >= 1 << 24 {
                return Err(io::Error::other("the device-mapper table is over 16 MiB"));
            }
            size *= 4;
            continue;
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        return parse_targets(&bytes, &header);
    }
}

/// Reads `target_count` target specs from the answer buffer, bounds-checked.
fn parse_targets(bytes: &[u8], header: &DmIoctl) -> io::Result<Vec<DmTarget>> {
    let bad = |what: &str| io::Error::other(format!("malformed DM_TABLE_STATUS answer: {what}"));
    let end = (header.data_size as usize).min(bytes.len());
    let first = header.data_start as usize;
    let mut targets = Vec::new();
    let mut offset = first;
    for _ in 0..header.target_count {
        let spec = bytes
            .get(offset..offset + TARGET_SPEC_SIZE)
            .filter(|_| offset + TARGET_SPEC_SIZE <= end)
            .ok_or_else(|| bad("target spec out of bounds"))?;
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&spec[at..at + 8]);
            u64::from_ne_bytes(word)
        };
        let mut next = [0u8; 4];
        next.copy_from_slice(&spec[SPEC_NEXT..SPEC_NEXT + 4]);
        let next = u32::from_ne_bytes(next) as usize;
        let kind = c_string(&spec[SPEC_TYPE..SPEC_TYPE + SPEC_TYPE_LEN])
            .ok_or_else(|| bad("target type not terminated"))?;
        let params = c_string(&bytes[offset + TARGET_SPEC_SIZE..end])
            .ok_or_else(|| bad("parameters not terminated"))?;
        targets.push(DmTarget {
            start: u64_at(SPEC_SECTOR_START),
            length: u64_at(SPEC_LENGTH),
            kind,
            params,
        });
        // `next` counts from the first target spec.
        let following = first + next;
        if following <= offset && targets.len() < header.target_count as usize {
            return Err(bad("target specs do not advance"));
        }
        offset = following;
    }
    Ok(targets)
}

fn c_string(bytes: &[u8]) -> Option<String> {
    let nul = bytes.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&bytes[..nul]).into_owned())
}

/// `struct dm_target_spec`, as [`create_read_only`] writes it.
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
    assert!(size_of::<DmTargetSpec>() == TARGET_SPEC_SIZE);
    assert!(offset_of!(DmTargetSpec, next) == SPEC_NEXT);
    assert!(offset_of!(DmTargetSpec, target_type) == SPEC_TYPE);
};

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
const fn iowr(nr: u64) -> u64 {
    (3 << 30) | ((size_of::<DmIoctl>() as u64) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u64 = iowr(3);
const DM_DEV_SUSPEND: u64 = iowr(6);
const DM_TABLE_LOAD: u64 = iowr(9);
const DM_READONLY_FLAG: u32 = 1;

/// The buffer of one ioctl call: the header, then `payload`, in u64 words for alignment.
fn request(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> io::Result<Vec<u64>> {
    if name.is_empty() || name.len() >= 128 {
        return Err(io::Error::other(format!(
            "device-mapper name '{name}' is not 1-127 bytes"
        )));
    }
    let total = size_of::<DmIoctl>() + payload.len();
    let data_size =
        u32::try_from(total).map_err(|_| io::Error::other("device-mapper table too large"))?;
    let mut header = DmIoctl::new(data_size, target_count, flags, 0);
    header.name[..name.len()].copy_from_slice(name.as_bytes());
    let mut words = vec![0u64; total.div_ceil(8)];
    // SAFETY: `words` holds at least `total >= size_of::<DmIoctl>()` bytes, u64-aligned
    // (DmIoctl needs 8); DmIoctl is plain old data.
    unsafe { std::ptr::write(words.as_mut_ptr().cast::<DmIoctl>(), header) };
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    bytes[size_of::<DmIoctl>()..total].copy_from_slice(payload);
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(b);
    }
    Ok(words)
}

/// One ioctl with `buf`; `op` names it in errors.
fn call(control: &File, op: &str, name: &str, nr: u64, buf: &mut [u64]) -> io::Result<()> {
    // SAFETY: `buf` starts with a valid DmIoctl whose data_size does not exceed the
    // buffer; the kernel reads and writes at most data_size bytes of it.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), nr as _, buf.as_mut_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("device-mapper {op} of {name}: {e}"),
        ));
    }
    Ok(())
}

/// The `dm_target_spec` + parameters payload of a one-target table.
fn one_target(kind: &str, sectors: u64, params: &str) -> io::Result<Vec<u8>> {
    if kind.len() >= SPEC_TYPE_LEN {
        return Err(io::Error::other(format!("target type '{kind}' too long")));
    }
    let mut target_type = [0u8; SPEC_TYPE_LEN];
    target_type[..kind.len()].copy_from_slice(kind.as_bytes());
    let spec = DmTargetSpec {
        sector_start: 0,
        length: sectors,
        status: 0,
        next: 0,
        target_type,
    };
    let params_len = (params.len() + 1).next_multiple_of(8);
    let mut out = Vec::with_capacity(TARGET_SPEC_SIZE + params_len);
    out.extend_from_slice(&spec.sector_start.to_ne_bytes());
    out.extend_from_slice(&spec.length.to_ne_bytes());
    out.extend_from_slice(&spec.status.to_ne_bytes());
    out.extend_from_slice(&spec.next.to_ne_bytes());
    out.extend_from_slice(&spec.target_type);
    out.extend_from_slice(params.as_bytes());
    out.resize(TARGET_SPEC_SIZE + params_len, 0);
    Ok(out)
}

/// Creates the read-only device `name` with one `kind` target of `sectors` sectors and
/// `params` (what `dmsetup create --readonly` does: DM_DEV_CREATE, DM_TABLE_LOAD, then
/// DM_DEV_SUSPEND without the suspend flag, which resumes the device and makes the table
/// live) and returns its device number. Needs `CAP_SYS_ADMIN`.
pub fn create_read_only(name: &str, kind: &str, sectors: u64, params: &str) -> io::Result<u64> {
    let control = OpenOptions::new().read(true).write(true).open(CONTROL)?;
    let mut created = request(name, 0, 0, &[])?;
    call(&control, "create", name, DM_DEV_CREATE, &mut created)?;
    // SAFETY: the buffer starts with the DmIoctl the kernel wrote back.
    let dev = unsafe { std::ptr::read(created.as_ptr().cast::<DmIoctl>()) }.dev;
    let table = one_target(kind, sectors, params)?;
    let mut load = request(name, DM_READONLY_FLAG, 1, &table)?;
    call(&control, "table load", name, DM_TABLE_LOAD, &mut load)?;
    call(
        &control,
        "resume",
        name,
        DM_DEV_SUSPEND,
        &mut request(name, 0, 0, &[])?,
    )?;
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(start: u64, len: u64, next: u32, kind: &str, params: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&start.to_ne_bytes());
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&0i32.to_ne_bytes());
        out.extend_from_slice(&next.to_ne_bytes());
        let mut ty = [0u8; 16];
        ty[..kind.len()].copy_from_slice(kind.as_bytes());
        out.extend_from_slice(&ty);
        out.extend_from_slice(params.as_bytes());
        out.push(0);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn the_kernel_answer_layout_is_read_back_into_targets() {
        let params = "1 7:0 7:1 4096 4096 256 1 sha256 ab 00";
        let first = spec(0, 2048, 0, "verity", params);
        let header_len = size_of::<DmIoctl>();
        let mut first_with_next = spec(0, 2048, first.len() as u32, "verity", params);
        let second = spec(2048, 8, 0, "linear", "7:2 0");
        let mut bytes = vec![0u8; header_len];
        bytes.append(&mut first_with_next);
        bytes.extend_from_slice(&second);
        let header = DmIoctl::new(bytes.len() as u32, 2, 0, 0);
        let targets = parse_targets(&bytes, &header).unwrap();
        assert_eq!(
            targets,
            vec![
                DmTarget {
                    start: 0,
                    length: 2048,
                    kind: "verity".into(),
                    params: params.into()
                },
                DmTarget {
                    start: 2048,
                    length: 8,
                    kind: "linear".into(),
                    params: "7:2 0".into()
                },
            ]
        );
        // A count that runs past the data is an error, not a read out of bounds.
        let lying = DmIoctl {
            target_count: 3,
            ..header
        };
        assert!(parse_targets(&bytes, &lying).is_err());
    }

    #[test]
    fn the_ioctl_number_matches_the_kernel_header() {
        // DM_TABLE_STATUS as `strace` prints it on x86-64.
        assert_eq!(DM_TABLE_STATUS, 0xc138_fd0c);
    }

    #[test]
    fn create_ioctl_numbers_match_the_kernel_header() {
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
