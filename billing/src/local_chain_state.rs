//! Saving and loading a [`LocalChain`]'s state: every account and the clock, in one file
//! replaced atomically.
//!
//! Why: the host agent's embedded chain holds real money flows for `make run` (escrows
//! funded, charges paid). If the agent is killed, a charge the chain applied but forgot
//! would make the ledger and the chain disagree (a settlement "confirmed" that no longer
//! exists), so a chain opened with [`LocalChain::open_persistent`] writes its state after
//! every message it applies, before the call returns: write a temporary file, fsync it,
//! rename it over the old one, fsync the directory. A crash leaves the old state or the
//! new one, never a torn file.
//!
//! What is kept: each account's `ShardAccount` (code, data, balance, storage info, last
//! transaction), the clock and the logical time. Transaction history is not kept (it is
//! for tests and explorers; after a restart `transactions` starts empty), nor the config
//! (always the committed fixture).
//!
//! Format (`COCOON-LOCAL-CHAIN 1\n`, then big-endian): `now:u32 lt:u64 count:u32`, then per
//! account `len:u32` and a BoC of one cell `addr:MsgAddressInt ^Account
//! last_trans_hash:bits256 last_trans_lt:uint64` (the `ShardAccount` layout after the
//! address). Bounded when read: the file is ours, but a corrupt one must fail cleanly.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use tycho_types::cell::{Cell, CellBuilder, CellFamily as _, Load as _, Store as _};
use tycho_types::models::{ShardAccount, StdAddr};

use super::LocalChain;
use crate::layout::{decode_boc, encode_boc, BocLimits};
use crate::{Error, Result};

const MAGIC: &[u8] = b"COCOON-LOCAL-CHAIN 1\n";

/// Most accounts a state file may hold (a local chain for tests and `make run` has a few
/// dozen).
const MAX_ACCOUNTS: u32 = 1 << 20;

fn state_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Chain(format!("state file {}: {what}", path.display()))
}

impl LocalChain {
    /// Opens the chain kept in `path` (the committed config, the clock following the system
    /// time from then on): loads it if the file exists, else creates it empty and writes it
    /// at once. Returns the chain and whether the file was created (the caller credits its
    /// genesis accounts then, once). From here on every applied message is saved before the
    /// call that applied it returns.
    pub fn open_persistent(path: &Path) -> Result<(Self, bool)> {
        let mut chain = Self::with_default_config()?;
        let created = match fs::metadata(path) {
            Ok(_) => {
                chain.load_state(path)?;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(state_err(path, e)),
        };
        chain.follow_clock = true;
        chain.tick()?;
        chain.state_file = Some(path.to_path_buf());
        if created {
            chain.save_state(path)?;
        }
        Ok((chain, created))
    }

    /// The file this chain saves itself to, if any.
    pub fn state_file(&self) -> Option<&Path> {
        self.state_file.as_deref()
    }

    /// With the clock following the system time, moves it forward to now (never back).
    pub(super) fn tick(&mut self) -> Result<()> {
        if self.follow_clock {
            let now = super::system_now();
            if now > self.now {
                self.set_now(now)?;
            }
        }
        Ok(())
    }

    /// Saves to the state file, if the chain has one (after every applied message).
    pub(super) fn persist(&self) -> Result<()> {
        match &self.state_file {
            Some(path) => self.save_state(path).map_err(|e| {
                Error::Chain(format!(
                    "the message was applied but the state could not be saved: {e}"
                ))
            }),
            None => Ok(()),
        }
    }

    /// Writes every account, the clock and the logical time to `path` atomically.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&self.now.to_be_bytes());
        bytes.extend_from_slice(&self.lt.to_be_bytes());
        let count =
            u32::try_from(self.accounts.len()).map_err(|_| state_err(path, "too many accounts"))?;
        bytes.extend_from_slice(&count.to_be_bytes());
        // Sorted, so the same state always makes the same file.
        let mut accounts: Vec<_> = self.accounts.iter().collect();
        accounts.sort_by(|a, b| a.0.cmp(b.0));
        for (addr, shard) in accounts {
            let mut b = CellBuilder::new();
            addr.store_into(&mut b, Cell::empty_context())?;
            shard.store_into(&mut b, Cell::empty_context())?;
            let boc = encode_boc(&b.build()?);
            let len = u32::try_from(boc.len()).map_err(|_| state_err(path, "account too large"))?;
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&boc);
        }
        write_atomically(path, &bytes).map_err(|e| state_err(path, e))
    }

    /// Replaces every account, the clock and the logical time with those saved in `path`.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let bytes = fs::read(path).map_err(|e| state_err(path, e))?;
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| state_err(path, "not a local chain state file"))?;
        let mut take = |n: usize| -> Result<&[u8]> {
            if rest.len() < n {
                return Err(state_err(path, "truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let now = u32::from_be_bytes(array(take(4)?));
        let lt = u64::from_be_bytes(array(take(8)?));
        let count = u32::from_be_bytes(array(take(4)?));
        if count > MAX_ACCOUNTS {
            return Err(state_err(path, format!("{count} accounts")));
        }
        let mut accounts = std::collections::HashMap::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(array(take(4)?)) as usize;
            let cell = decode_boc(take(len)?, &BocLimits::STATE)?;
            let mut slice = cell.as_slice()?;
            let addr = StdAddr::load_from(&mut slice)?;
            let shard = ShardAccount::load_from(&mut slice)?;
            accounts.insert(addr, shard);
        }
        if !rest.is_empty() {
            return Err(state_err(path, "trailing bytes"));
        }
        self.accounts = accounts;
        self.transactions.clear();
        self.lt = lt;
        self.set_now(now)
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp: PathBuf = path.to_path_buf();
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    temp.set_file_name(name);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use tycho_types::cell::HashBytes;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cocoon-local-chain-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("chain.state")
    }

    #[test]
    fn billing_local_chain_state_round_trips() {
        let path = scratch("round-trip");
        let (mut chain, created) = LocalChain::open_persistent(&path).expect("open");
        assert!(created);
        let a = StdAddr::new(0, HashBytes([7; 32]));
        let b = StdAddr::new(-1, HashBytes([8; 32]));
        chain.airdrop(&a, 1_234).expect("airdrop");
        chain.airdrop(&b, 99).expect("airdrop");
        let (now, lt) = (chain.now(), chain.lt());
        drop(chain);
        let (again, created) = LocalChain::open_persistent(&path).expect("reopen");
        assert!(!created);
        assert_eq!(again.account(&a).expect("a").balance, 1_234);
        assert_eq!(again.account(&b).expect("b").balance, 99);
        assert_eq!(again.lt(), lt);
        assert!(again.now() >= now);
        assert_eq!(again.state_file(), Some(path.as_path()));
    }

    #[test]
    fn billing_local_chain_state_refuses_a_damaged_file() {
        let path = scratch("damaged");
        let (mut chain, _) = LocalChain::open_persistent(&path).expect("open");
        chain
            .airdrop(&StdAddr::new(0, HashBytes([1; 32])), 5)
            .expect("airdrop");
        let bytes = fs::read(&path).expect("read");
        for cut in [3, MAGIC.len() + 2, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).expect("write");
            assert!(LocalChain::open_persistent(&path).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        fs::write(&path, &longer).expect("write");
        assert!(LocalChain::open_persistent(&path).is_err());
    }
}
