//! One QEMU process: started with the built argv, its stderr logged line by line (QEMU
//! reports configuration and KVM errors there), killed when stopped or dropped.
//!
//! The guest's console goes to the serial log file named in the config, not here.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// How long a killed QEMU may take to be reaped before the agent stops waiting.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running QEMU.
pub struct QemuProcess {
    child: Child,
}

impl QemuProcess {
    /// Starts `program` with `args`.
    pub fn spawn(program: &Path, args: &[String]) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: program.to_path_buf(),
                source,
            })?;
        info!(pid = child.id(), "QEMU started");
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    warn!(target: "qemu", "{line}");
                }
            });
        }
        Ok(Self { child })
    }

    /// Resolves when QEMU exits, with its status as text.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }

    /// Kills QEMU (if it still runs) and reaps it.
    pub async fn stop(mut self) {
        if let Err(e) = self.child.start_kill() {
            // Already exited (and maybe reaped): nothing left to kill.
            info!("QEMU already gone: {e}");
        }
        match tokio::time::timeout(REAP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => info!("QEMU stopped ({status})"),
            Ok(Err(e)) => warn!("QEMU could not be reaped: {e}"),
            Err(_) => warn!("QEMU was not reaped within {REAP_TIMEOUT:?}"),
        }
    }
}
