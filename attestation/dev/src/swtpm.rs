//! A software TPM for tests and `make run`: `swtpm` (libtpms, a real TPM 2.0
//! implementation; Debian package `swtpm`) serving its command channel on a Unix socket
//! in a fresh state directory. Killed, and its state removed, on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_attestation::{Error, Result};

/// A running swtpm.
pub struct Swtpm {
    child: Child,
    dir: PathBuf,
}

impl Swtpm {
    /// Starts swtpm with a new state directory under the system temp dir and waits for
    /// its command socket.
    pub fn start() -> Result<Swtpm> {
        let unique = format!(
            "cocoon-swtpm-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let dir = std::env::temp_dir().join(unique);
        let fail = |what: &str, e: std::io::Error| Error::Rejected(format!("swtpm: {what}: {e}"));
        std::fs::create_dir_all(dir.join("state")).map_err(|e| fail("state dir", e))?;
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.join("state").display()))
            .arg("--server")
            .arg(format!(
                "type=unixio,path={}",
                dir.join("cmd.sock").display()
            ))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                dir.join("ctrl.sock").display()
            ))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail("start (is the Debian package swtpm installed?)", e))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("cmd.sock").exists() {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                return Err(Error::Rejected(
                    "swtpm did not open its command socket within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Swtpm { child, dir })
    }

    /// The command socket (what `cocoon-guest --vtpm unix:PATH` takes).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("cmd.sock")
    }

    /// `unix:PATH` for `--vtpm`.
    pub fn endpoint_arg(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
