//! The model loader's system calls: the device-mapper table of a block device (from
//! `cocoon-dm`, to prove a model disk is dm-verity with the configured root hash; what the
//! table means is decided in `verity.rs`) and `statfs` (what filesystem the staging
//! directory is on; its unsafe block says why it is sound).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use cocoon_dm::{table as dm_table, DmTarget};

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

    #[test]
    fn statfs_reports_the_filesystem_type() {
        // PROC_SUPER_MAGIC: /proc is procfs on every Linux.
        assert_eq!(filesystem_magic(Path::new("/proc")).unwrap(), 0x9fa0);
        assert!(filesystem_magic(Path::new("/nonexistent/path")).is_err());
    }
}
