//! Loading the kernel modules the image needs, in an order fixed at build time.
//!
//! Debian's kernel builds the virtio disk and network drivers, device-mapper, dm-verity,
//! SquashFS, vsock and the TEE guest drivers as modules. The image build resolves their
//! dependencies with `depmod`, decompresses them, and writes the load order to
//! [`LIST`]; this module only loads that list, so nothing is searched for at boot. A line
//! starting with `?` names a module that may fail to bind (the TDX driver on an SEV-SNP
//! machine and the other way round, `qemu_fw_cfg` where there is no fw_cfg device).

use std::fs::File;
use std::io::ErrorKind;

use crate::{Error, Result};

/// The load order, one path per line, written by the image build.
pub const LIST: &str = "/etc/cocoon-init/modules";

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    pub path: String,
    /// A failure to load is reported but not fatal.
    pub optional: bool,
}

/// Parses the list: blank lines and `#` comments are skipped.
pub fn parse_list(text: &str) -> Vec<ModuleEntry> {
    crate::list_lines(text)
        .map(|l| match l.strip_prefix('?') {
            Some(path) => ModuleEntry {
                path: path.trim().to_string(),
                optional: true,
            },
            None => ModuleEntry {
                path: l.to_string(),
                optional: false,
            },
        })
        .collect()
}

/// Loads one module file; already loaded counts as loaded.
pub fn load(entry: &ModuleEntry) -> Result<()> {
    let file = File::open(&entry.path).map_err(|e| Error::io(&entry.path, e))?;
    match rustix::system::finit_module(&file, c"", 0) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::EXIST => Ok(()),
        Err(e) => Err(Error::Module {
            module: entry.path.clone(),
            source: std::io::Error::from_raw_os_error(e.raw_os_error()),
        }),
    }
}

/// Loads every module of the list in order; returns the optional ones that failed
/// (with why), and stops at the first required one that fails.
pub fn load_all(text: &str) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    for entry in parse_list(text) {
        match load(&entry) {
            Ok(()) => {}
            Err(e) if entry.optional => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(skipped)
}

/// Whether an error is "this hardware is not here" (for the console message).
pub fn is_absent_hardware(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ENODEV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_its_order_and_marks_optional_modules() {
        let list = parse_list("# deps first\n/lib/a.ko\n\n?/lib/tdx-guest.ko\n /lib/b.ko \n");
        assert_eq!(
            list,
            [
                ModuleEntry {
                    path: "/lib/a.ko".into(),
                    optional: false
                },
                ModuleEntry {
                    path: "/lib/tdx-guest.ko".into(),
                    optional: true
                },
                ModuleEntry {
                    path: "/lib/b.ko".into(),
                    optional: false
                },
            ]
        );
    }

    #[test]
    fn a_missing_required_module_stops_the_boot_and_an_optional_one_does_not() {
        let skipped = load_all("?/nonexistent/x.ko\n").unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("/nonexistent/x.ko"));
        let err = load_all("/nonexistent/y.ko\n").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/y.ko"), "{err}");
    }
}
