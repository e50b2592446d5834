//! The model loader's unsafe code: the device-mapper `DM_TABLE_STATUS` ioctl (what table a
//! block device runs, to prove a model disk is dm-verity with the configured root hash)
//! and `statfs` (what filesystem the staging directory is on).
//!
//! Each structure is `#[repr(C)]` with its size and field offsets asserted at compile
//! time against `include/uapi/linux/dm-ioctl.h`; each unsafe block says why it is sound.
//! Reading the answer (target specs and parameter strings) is bounds-checked safe code,
//! and deciding what the table means is in `verity.rs`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
pub fn dm_table(dev: u64) -> io::Result<Vec<DmTarget>> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")?;
    let mut size = 16 * 1024;
    loop {
        // u64 words: the kernel structures need 8-byte alignment.
        let mut buf = vec![0u64; size / 8];
        let header = DmIoctl {
            version: [4, 0, 0],
            data_size: size as u32,
            data_start: size_of::<DmIoctl>() as u32,
            target_count: 0,
            open_count: 0,
            flags: DM_STATUS_TABLE_FLAG,
            event_nr: 0,
            padding: 0,
            dev,
            name: [0; 128],
            uuid: [0; 129],
            data: [0; 7],
        };
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

/// `f_type` of the filesystem `path` is on.
pub fn filesystem_magic(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    // SAFETY: all-zero is a valid `statfs`.
    let mut out: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `out` is a valid, writable `statfs`.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut out) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between targets.
    Ok(out.f_type as u64)
}

/// `TMPFS_MAGIC` and `RAMFS_MAGIC` (`include/uapi/linux/magic.h`): memory-backed.
pub const MEMORY_FILESYSTEMS: [(u64, &str); 2] = [(0x0102_1994, "tmpfs"), (0x8584_58f6, "ramfs")];

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
        let header = DmIoctl {
            version: [4, 0, 0],
            data_size: bytes.len() as u32,
            data_start: header_len as u32,
            target_count: 2,
            open_count: 0,
            flags: 0,
            event_nr: 0,
            padding: 0,
            dev: 0,
            name: [0; 128],
            uuid: [0; 129],
            data: [0; 7],
        };
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
    fn statfs_reports_the_filesystem_type() {
        // PROC_SUPER_MAGIC: /proc is procfs on every Linux.
        assert_eq!(filesystem_magic(Path::new("/proc")).unwrap(), 0x9fa0);
        assert!(filesystem_magic(Path::new("/nonexistent/path")).is_err());
    }
}
