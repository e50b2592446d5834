//! `cocoon-init`: the appliance image's PID 1, run from the initramfs.
//!
//! The kernel, the initramfs and the kernel command line are measured at launch (TDX:
//! RTMR1/RTMR2; SEV-SNP: the kernel-hashes table in the launch digest). Everything else
//! the guest runs comes from disks the host serves, so this program's job is to turn
//! the measured command line into verified disks before anything reads them: it opens
//! the root filesystem and the model disk as dm-verity devices whose root hashes are on
//! the command line, so the kernel checks every block read against them, and only then
//! starts `cocoon-guest` from the verified root. There is no shell, no login and no
//! package manager in the image: a failure is printed to the console and the VM powers
//! off (the host agent restarts it).
//!
//! Everything this program reads is either measured (the command line) or verified by
//! the kernel (the disks); the one unmeasured input it acts on is the set of devices the
//! host attached, and a wrong device only makes verification fail.

#![deny(unsafe_code)]

pub mod cmdline;
pub mod error;
pub mod modules;
pub mod net;
pub mod verity;

pub use error::{Error, Result};

/// The lines of a build-time list file (modules, guest flags) that say something:
/// trimmed, without blank lines and `#` comments.
pub fn list_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}
