//! Proof that a model path lives on a dm-verity device with the root hash the measured
//! config names (`--model-verity-root`).
//!
//! With such a device the kernel checks every block read against the hash tree whose
//! root is that hash, so the engine can load the model in place: a host that serves the
//! disk cannot change a byte without the read failing. Without the proof the root hash
//! in the config would be a claim, so the guest refuses to start when the path is not on
//! a device-mapper device, the device does not run one `verity` target, the root hash
//! differs, or the target is set up to let unverified data through.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::sys::{self, DmTarget};
use crate::{Error, Result};

/// The flag every refusal names.
pub const FLAG: &str = "--model-verity-root";

/// A `verity` target's parameters (`Documentation/admin-guide/device-mapper/verity.rst`):
/// `VERSION DATA_DEV HASH_DEV DATA_BLOCK_SIZE HASH_BLOCK_SIZE NUM_DATA_BLOCKS
/// HASH_START_BLOCK ALGORITHM ROOT_DIGEST SALT [#OPT_PARAMS OPT_PARAMS...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    pub version: u32,
    pub data_device: String,
    pub hash_device: String,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    pub data_blocks: u64,
    pub hash_start_block: u64,
    pub algorithm: String,
    pub root_digest: String,
    pub salt: String,
    pub options: Vec<String>,
}

impl VerityParams {
    /// Parses the parameter string of a `verity` target (the part of a `dmsetup table`
    /// line after `START LENGTH verity`).
    pub fn parse(params: &str) -> std::result::Result<Self, String> {
        let words: Vec<&str> = params.split_ascii_whitespace().collect();
        if words.len() < 10 {
            return Err(format!(
                "a verity table has at least 10 parameters, this one has {}: {params:?}",
                words.len()
            ));
        }
        let number = |i: usize, what: &str| {
            words[i]
                .parse::<u64>()
                .map_err(|_| format!("{what} is {:?}, not a number", words[i]))
        };
        let options = match words.get(10) {
            None => Vec::new(),
            Some(count) => {
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("the optional-parameter count is {count:?}"))?;
                let options: Vec<String> = words[11..].iter().map(|w| w.to_string()).collect();
                if options.len() != count {
                    return Err(format!(
                        "the table announces {count} optional parameters and has {}",
                        options.len()
                    ));
                }
                options
            }
        };
        let version = number(0, "the version")?;
        Ok(Self {
            version: u32::try_from(version).map_err(|_| "the version is out of range")?,
            data_device: words[1].to_string(),
            hash_device: words[2].to_string(),
            data_block_size: number(3, "the data block size")?,
            hash_block_size: number(4, "the hash block size")?,
            data_blocks: number(5, "the number of data blocks")?,
            hash_start_block: number(6, "the hash start block")?,
            algorithm: words[7].to_string(),
            root_digest: words[8].to_ascii_lowercase(),
            salt: words[9].to_string(),
            options,
        })
    }
}

/// Parses one `dmsetup table` line: `START LENGTH TYPE PARAMS`.
pub fn parse_table_line(line: &str) -> std::result::Result<DmTarget, String> {
    let mut parts = line.trim().splitn(4, ' ');
    let mut next = |what: &str| {
        parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("the table line has no {what}: {line:?}"))
    };
    let start = next("start sector")?;
    let length = next("length")?;
    let kind = next("target type")?.to_string();
    let params = next("parameters")?.to_string();
    Ok(DmTarget {
        start: start
            .parse()
            .map_err(|_| format!("the start sector is {start:?}"))?,
        length: length
            .parse()
            .map_err(|_| format!("the length is {length:?}"))?,
        kind,
        params,
    })
}

/// Options under which the device returns data it has not verified on that read:
/// `ignore_corruption` passes corrupt blocks through; `check_at_most_once` verifies a
/// block only the first time, so a host could serve other bytes on a later read.
const UNSAFE_OPTIONS: [&str; 2] = ["ignore_corruption", "check_at_most_once"];

/// Checks that `table` is one dm-verity target over the whole device with root hash
/// `expected` (hex, any case) that verifies every read.
pub fn check_table(table: &[DmTarget], expected: &str) -> std::result::Result<(), String> {
    let [target] = table else {
        return Err(format!(
            "the device has {} targets ({}), not one verity target",
            table.len(),
            table
                .iter()
                .map(|t| t.kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if target.kind != "verity" {
        return Err(format!(
            "the device is a device-mapper `{}` target, not `verity`",
            target.kind
        ));
    }
    if target.start != 0 {
        return Err(format!(
            "the verity target starts at sector {}, not 0",
            target.start
        ));
    }
    let params = VerityParams::parse(&target.params)?;
    if !params.root_digest.eq_ignore_ascii_case(expected) {
        return Err(format!(
            "the device's verity root hash is {}, not {}",
            params.root_digest,
            expected.to_ascii_lowercase()
        ));
    }
    if let Some(option) = params
        .options
        .iter()
        .find(|o| UNSAFE_OPTIONS.contains(&o.as_str()))
    {
        return Err(format!(
            "the verity target has `{option}`, which lets unverified data be read"
        ));
    }
    Ok(())
}

/// A block device proven to be dm-verity with the expected root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedDevice {
    /// `st_dev` of files on it.
    pub dev: u64,
}

impl VerifiedDevice {
    /// Proves that `path` is on a read-only dm-verity device whose root hash is `root`.
    pub fn of(path: &Path, root: &str) -> Result<Self> {
        let refuse = |detail: String| {
            Error::Model(format!(
                "{FLAG} {root}: the model at {} {detail}",
                path.display()
            ))
        };
        let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot be read: {e}")))?;
        let dev = meta.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let sysfs = Path::new("/sys/dev/block").join(format!("{major}:{minor}"));
        if !sysfs.exists() {
            return Err(refuse(format!(
                "is on device {major}:{minor}, which is not a block device (a filesystem \
                 such as tmpfs or overlay, not a dm-verity disk)"
            )));
        }
        let dm_name = std::fs::read_to_string(sysfs.join("dm/name")).map_err(|_| {
            refuse(format!(
                "is on block device {major}:{minor}, which is not a device-mapper device"
            ))
        })?;
        let dm_name = dm_name.trim();
        let read_only = std::fs::read_to_string(sysfs.join("ro")).map_err(|e| {
            refuse(format!(
                "is on {dm_name}, whose read-only flag is unreadable: {e}"
            ))
        })?;
        if read_only.trim() != "1" {
            return Err(refuse(format!(
                "is on device-mapper device {dm_name} ({major}:{minor}), which is writable"
            )));
        }
        let table = sys::dm_table(dev).map_err(|e| {
            refuse(format!(
                "is on device-mapper device {dm_name} ({major}:{minor}), whose table cannot \
                 be read: {e}"
            ))
        })?;
        check_table(&table, root).map_err(|e| {
            refuse(format!(
                "is on device-mapper device {dm_name} ({major}:{minor}): {e}"
            ))
        })?;
        Ok(Self { dev })
    }

    /// Refuses `path` unless it is on this device (a file can sit on another mount
    /// below the model directory).
    pub fn holds(&self, path: &Path, root: &str) -> Result<()> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        if meta.dev() != self.dev {
            return Err(Error::Model(format!(
                "{FLAG} {root}: {} is on device {}:{}, not on the verified dm-verity device \
                 {}:{}",
                path.display(),
                libc::major(meta.dev()),
                libc::minor(meta.dev()),
                libc::major(self.dev),
                libc::minor(self.dev)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076";
    const SALT: &str = "1234000000000000000000000000000000000000000000000000000000000000";

    /// A line exactly as `dmsetup table` prints a `veritysetup open` device.
    fn line(options: &str) -> String {
        format!("0 417792 verity 1 7:2 7:3 4096 4096 52224 1 sha256 {ROOT} {SALT}{options}")
    }

    #[test]
    fn a_real_table_line_parses_into_its_fields() {
        let target =
            parse_table_line(&line(" 2 ignore_zero_blocks restart_on_corruption")).unwrap();
        assert_eq!((target.start, target.length), (0, 417_792));
        assert_eq!(target.kind, "verity");
        let p = VerityParams::parse(&target.params).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(
            (p.data_device.as_str(), p.hash_device.as_str()),
            ("7:2", "7:3")
        );
        assert_eq!((p.data_block_size, p.hash_block_size), (4096, 4096));
        assert_eq!((p.data_blocks, p.hash_start_block), (52_224, 1));
        assert_eq!(p.algorithm, "sha256");
        assert_eq!(p.root_digest, ROOT);
        assert_eq!(p.salt, SALT);
        assert_eq!(p.options, ["ignore_zero_blocks", "restart_on_corruption"]);
        // Salt `-` (none) and no optional parameters.
        let bare = format!("1 /dev/sda1 /dev/sda2 4096 4096 100 0 sha256 {ROOT} -");
        assert!(VerityParams::parse(&bare).unwrap().options.is_empty());
    }

    #[test]
    fn malformed_tables_are_errors() {
        for params in [
            "1 7:2 7:3 4096 4096 52224 1 sha256".to_string(),
            format!("x 7:2 7:3 4096 4096 52224 1 sha256 {ROOT} -"),
            format!("1 7:2 7:3 4096 4096 many 1 sha256 {ROOT} -"),
            format!("1 7:2 7:3 4096 4096 52224 1 sha256 {ROOT} - 2 ignore_zero_blocks"),
        ] {
            assert!(VerityParams::parse(&params).is_err(), "{params}");
        }
        assert!(parse_table_line("0 417792 verity").is_err());
        assert!(parse_table_line("zero 417792 verity 1").is_err());
    }

    #[test]
    fn only_one_verity_target_with_the_root_and_full_checking_passes() {
        let target = |l: &str| parse_table_line(l).unwrap();
        assert_eq!(check_table(&[target(&line(""))], ROOT), Ok(()));
        assert_eq!(
            check_table(&[target(&line(""))], &ROOT.to_ascii_uppercase()),
            Ok(())
        );
        let other_root = "00".repeat(32);
        let err = check_table(&[target(&line(""))], &other_root).unwrap_err();
        assert!(err.contains(ROOT) && err.contains(&other_root), "{err}");
        for option in [
            "1 ignore_corruption",
            "2 check_at_most_once ignore_zero_blocks",
        ] {
            let err = check_table(&[target(&line(&format!(" {option}")))], ROOT).unwrap_err();
            assert!(err.contains("unverified"), "{err}");
        }
        let linear = target("0 2048 linear 7:2 0");
        assert!(check_table(std::slice::from_ref(&linear), ROOT)
            .unwrap_err()
            .contains("`linear`"));
        assert!(check_table(&[target(&line("")), linear], ROOT)
            .unwrap_err()
            .contains("2 targets"));
        assert!(check_table(&[], ROOT).is_err());
    }

    #[test]
    fn a_plain_directory_is_not_a_verity_device() {
        let dir = std::env::temp_dir();
        let err = VerifiedDevice::of(&dir, ROOT).unwrap_err().to_string();
        // What it is instead depends on the machine (a plain disk, tmpfs, overlay, LVM);
        // the refusal names the flag, the root and the path.
        assert!(err.contains(FLAG) && err.contains(ROOT), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }
}
