//! The dm-verity parameters of one disk, as the measured command line states them.
//!
//! Every parameter that defines what the kernel verifies is on the command line, so the
//! disk carries no verity superblock for the host to choose values in: data and hash
//! block size 4096, SHA-256, the number of data blocks, where the hash tree starts (in
//! 4096-byte blocks from the start of the same disk), the salt and the root hash. The
//! target never gets `ignore_corruption` or `check_at_most_once`: every read is checked,
//! and a block that does not match its hash fails with EIO.

use crate::{Error, Result};

/// Block size for data and hash blocks (bytes).
pub const BLOCK_SIZE: u64 = 4096;

/// One dm-verity disk: `ROOT,SALT,DATA_BLOCKS,HASH_START_BLOCK` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeritySpec {
    /// SHA-256 root hash (64 lowercase hex digits).
    pub root_hash: String,
    /// Salt (64 lowercase hex digits).
    pub salt: String,
    /// Number of 4096-byte data blocks (the filesystem image, padded).
    pub data_blocks: u64,
    /// First block of the hash tree on the same device.
    pub hash_start_block: u64,
}

fn hex32(what: &str, value: &str) -> Result<String> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(Error::Cmdline(format!(
            "{what} '{value}' is not 64 hex digits"
        )))
    }
}

fn number(what: &str, value: &str) -> Result<u64> {
    value
        .parse::<u64>()
        .map_err(|e| Error::Cmdline(format!("{what} '{value}': {e}")))
}

impl VeritySpec {
    /// Parses `ROOT,SALT,DATA_BLOCKS,HASH_START_BLOCK` (the value of `key`).
    pub fn parse(key: &str, value: &str) -> Result<Self> {
        let fields: Vec<&str> = value.split(',').collect();
        let [root, salt, data_blocks, hash_start] = fields.as_slice() else {
            return Err(Error::Cmdline(format!(
                "{key}={value}: expected ROOT_HASH,SALT,DATA_BLOCKS,HASH_START_BLOCK"
            )));
        };
        let spec = Self {
            root_hash: hex32(&format!("{key} root hash"), root)?,
            salt: hex32(&format!("{key} salt"), salt)?,
            data_blocks: number(&format!("{key} data blocks"), data_blocks)?,
            hash_start_block: number(&format!("{key} hash start block"), hash_start)?,
        };
        if spec.data_blocks == 0 {
            return Err(Error::Cmdline(format!("{key}: zero data blocks")));
        }
        if spec.hash_start_block < spec.data_blocks {
            return Err(Error::Cmdline(format!(
                "{key}: the hash tree (block {}) starts inside the data ({} blocks)",
                spec.hash_start_block, spec.data_blocks
            )));
        }
        Ok(spec)
    }

    /// The device-mapper table line (`START LENGTH verity PARAMS`) over `device`.
    pub fn table_params(&self, device: &str) -> String {
        format!(
            "1 {device} {device} {BLOCK_SIZE} {BLOCK_SIZE} {} {} sha256 {} {}",
            self.data_blocks, self.hash_start_block, self.root_hash, self.salt
        )
    }

    /// Length of the verified device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * (BLOCK_SIZE / 512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076";
    const SALT: &str = "c0c0a0c0c0a0c0c0a0c0c0a0c0c0a0c0c0a0c0c0a0c0c0a0c0c0a0c0c0a0c0c0";

    #[test]
    fn a_spec_becomes_the_table_dmsetup_would_load() {
        let s = VeritySpec::parse("cocoon.root", &format!("{ROOT},{SALT},100,100")).unwrap();
        assert_eq!(s.sectors(), 800);
        assert_eq!(
            s.table_params("/dev/vda"),
            format!("1 /dev/vda /dev/vda 4096 4096 100 100 sha256 {ROOT} {SALT}")
        );
    }

    #[test]
    fn malformed_specs_name_the_problem() {
        for (value, needle) in [
            ("x", "expected ROOT_HASH"),
            (&format!("{ROOT},{SALT},0,1") as &str, "zero data blocks"),
            (&format!("{ROOT},{SALT},10,9"), "starts inside the data"),
            (&format!("{ROOT},abc,10,10"), "salt 'abc'"),
            (&format!("{ROOT},{SALT},ten,10"), "data blocks 'ten'"),
        ] {
            let err = VeritySpec::parse("cocoon.root", value)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{value}: {err}");
        }
    }
}
