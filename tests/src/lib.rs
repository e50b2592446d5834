//! Helpers for the workspace's end-to-end tests: find the built binaries and the model,
//! start the guest and the host agent as real processes on loopback, and stop them.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the release binaries are: `$COCOON_BIN_DIR`, else next to this test executable
/// (`<target>/release/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COCOON_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a workspace binary, checked to exist.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build the workspace first (`make test` does: cargo build --release)",
            path.display()
        );
    }
    Ok(path)
}

/// The model the tests use: `$COCOON_MODEL`, else the bundled SmolLM2 GGUF.
pub fn model_path() -> Result<PathBuf> {
    let path = std::env::var_os("COCOON_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if !path.exists() {
        bail!("model {} not found: run `make model`", path.display());
    }
    Ok(path)
}

/// The Python interpreter that has the `openai` package (`$COCOON_PYTHON`, else `.venv`).
pub fn python() -> PathBuf {
    std::env::var_os("COCOON_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// A child process killed when dropped, with the lines of its stdout.
pub struct Service {
    pub name: &'static str,
    child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Service {
    /// Starts `cmd` (stdout piped into `lines`, stderr inherited) without waiting.
    pub fn spawn(name: &'static str, mut cmd: Command) -> Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name,
            child,
            lines: rx,
        })
    }

    /// Starts `cmd` and waits until a stdout line starts with `ready_prefix`; returns the
    /// service and the rest of that line.
    pub fn start(
        name: &'static str,
        cmd: Command,
        ready_prefix: &str,
        wait: Duration,
    ) -> Result<(Self, String)> {
        let mut service = Self::spawn(name, cmd)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match service
                .lines
                .recv_timeout(left.max(Duration::from_millis(1)))
            {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(ready_prefix) {
                        return Ok((service, rest.to_string()));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = service.child.wait().ok();
                    bail!("{name} exited before it was ready (status: {status:?}); its stderr is above");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{name} did not become ready within {wait:?}");
                }
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guest and a host agent in front of it, both on free loopback ports.
pub struct Appliance {
    pub guest: Service,
    pub agent: Service,
    /// `127.0.0.1:PORT` of the guest's own TLS port.
    pub guest_addr: String,
    /// `127.0.0.1:PORT` of the host agent (what clients use).
    pub agent_addr: String,
    /// Certificate SHA-256 the guest printed at start.
    pub guest_pin: String,
    pub model_id: String,
}

/// Starts guest and host agent; `extra_guest_args` are appended to `cocoon-guest serve`.
pub fn start_appliance(extra_guest_args: &[&str]) -> Result<Appliance> {
    start_appliance_with_tee("simulated", extra_guest_args)
}

/// Like [`start_appliance`], with the guest's `--tee` backend chosen.
pub fn start_appliance_with_tee(tee: &str, extra_guest_args: &[&str]) -> Result<Appliance> {
    let mut guest_cmd = Command::new(binary("cocoon-guest")?);
    guest_cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--tee", tee, "--model"])
        .arg(model_path()?)
        .args(["--default-max-tokens", "32", "--max-tokens-limit", "512"])
        .args(extra_guest_args);
    let (guest, rest) = Service::start(
        "cocoon-guest",
        guest_cmd,
        "cocoon-guest: listening on https://",
        Duration::from_secs(600),
    )?;
    // rest: "127.0.0.1:PORT model=ID certificate-sha256=HEX"
    let mut fields = rest.split_whitespace();
    let guest_addr = fields.next().unwrap_or_default().to_string();
    let mut model_id = String::new();
    let mut guest_pin = String::new();
    for field in fields {
        if let Some(v) = field.strip_prefix("model=") {
            model_id = v.to_string();
        } else if let Some(v) = field.strip_prefix("certificate-sha256=") {
            guest_pin = v.to_string();
        }
    }
    let mut agent_cmd = Command::new(binary("cocoon-host-agent")?);
    agent_cmd.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--guest",
        &guest_addr,
        "--idle-timeout-secs",
        "120",
    ]);
    let (agent, rest) = Service::start(
        "cocoon-host-agent",
        agent_cmd,
        "cocoon-host-agent: relaying ",
        Duration::from_secs(30),
    )?;
    let agent_addr = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Appliance {
        guest,
        agent,
        guest_addr,
        agent_addr,
        guest_pin,
        model_id,
    })
}

/// Runs `cocoon-verify` with `args` and returns its output.
pub fn cocoon_verify(args: &[&str]) -> Result<Output> {
    Command::new(binary("cocoon-verify")?)
        .args(args)
        .output()
        .context("running cocoon-verify")
}
