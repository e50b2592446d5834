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
/// How the tests check simulated guests: the vendor anchors plus the development roots and
/// collateral (`--allow-simulated`), any image (`--accept-any-image`: the tests' guests are
/// not built from a published image), everything else at the secure defaults.
pub fn dev_attestor() -> cocoon_client::Attestor {
    dev_attestor_with(cocoon_attestation::Policy {
        accept_any_image: true,
        ..Default::default()
    })
}

/// [`dev_attestor`] with a policy of the caller's.
pub fn dev_attestor_with(policy: cocoon_attestation::Policy) -> cocoon_client::Attestor {
    let verifier = cocoon_attestation_dev::verifier(policy).expect("the development anchors");
    cocoon_client::Attestor::offline(verifier)
}

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
        Self::start_with_lines(name, cmd, ready_prefix, wait)
            .map(|(service, rest, _)| (service, rest))
    }

    /// Like [`Service::start`], also returning the stdout lines printed before the ready
    /// line.
    pub fn start_with_lines(
        name: &'static str,
        cmd: Command,
        ready_prefix: &str,
        wait: Duration,
    ) -> Result<(Self, String, Vec<String>)> {
        let mut service = Self::spawn(name, cmd)?;
        let deadline = std::time::Instant::now() + wait;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match service
                .lines
                .recv_timeout(left.max(Duration::from_millis(1)))
            {
                Ok(line) => match line.strip_prefix(ready_prefix) {
                    Some(rest) => return Ok((service, rest.to_string(), before)),
                    None => before.push(line),
                },
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

    /// SIGKILL now (no clean-up of any kind in the process), and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    /// `127.0.0.1:PORT` of the guest's internal (host-only, plain HTTP) listener, when it
    /// was started with `--host-token-file`.
    pub internal_addr: Option<String>,
}

/// Starts guest and host agent; `extra_guest_args` are appended to `cocoon-guest serve`.
/// The guest serves unnamed requests (`--allow-anonymous`, as `make run` does), so plain
/// SDKs work; its internal listener, if any, is on a free loopback port.
pub fn start_appliance(extra_guest_args: &[&str]) -> Result<Appliance> {
    start_appliance_with("simulated", true, extra_guest_args)
}

/// Like [`start_appliance`], with the guest's `--tee` backend chosen.
pub fn start_appliance_with_tee(tee: &str, extra_guest_args: &[&str]) -> Result<Appliance> {
    start_appliance_with(tee, true, extra_guest_args)
}

/// A guest process and what it printed at start.
pub struct GuestProcess {
    pub service: Service,
    /// `127.0.0.1:PORT` of its TLS port.
    pub addr: String,
    /// Certificate SHA-256 it printed.
    pub pin: String,
    pub model_id: String,
    /// `127.0.0.1:PORT` of its internal listener, when started with `--host-token-file`.
    pub internal_addr: Option<String>,
}

/// Starts `cocoon-guest serve` with the bundled model on `listen` (internal listener on
/// `internal_listen`), the `--tee` backend, `--allow-anonymous` or not, and `extra` flags;
/// waits until it listens.
pub fn start_guest(
    tee: &str,
    allow_anonymous: bool,
    listen: &str,
    internal_listen: &str,
    extra: &[&str],
) -> Result<GuestProcess> {
    let mut guest_cmd = Command::new(binary("cocoon-guest")?);
    guest_cmd
        .args(["serve", "--listen", listen, "--tee", tee, "--model"])
        .arg(model_path()?)
        .args(["--default-max-tokens", "32", "--max-tokens-limit", "512"])
        .args(["--internal-listen", internal_listen])
        .args(allow_anonymous.then_some("--allow-anonymous"))
        .args(extra);
    let (service, rest, before) = Service::start_with_lines(
        "cocoon-guest",
        guest_cmd,
        "cocoon-guest: listening on https://",
        Duration::from_secs(600),
    )?;
    let internal_addr = before.iter().find_map(|line| {
        line.strip_prefix("cocoon-guest: internal API on http://")
            .map(|addr| addr.trim().to_string())
    });
    // rest: "127.0.0.1:PORT model=ID certificate-sha256=HEX"
    let mut fields = rest.split_whitespace();
    let addr = fields.next().unwrap_or_default().to_string();
    let mut model_id = String::new();
    let mut pin = String::new();
    for field in fields {
        if let Some(v) = field.strip_prefix("model=") {
            model_id = v.to_string();
        } else if let Some(v) = field.strip_prefix("certificate-sha256=") {
            pin = v.to_string();
        }
    }
    Ok(GuestProcess {
        service,
        addr,
        pin,
        model_id,
        internal_addr,
    })
}

/// Like [`start_appliance`], with the `--tee` backend chosen and `--allow-anonymous`
/// given or not.
pub fn start_appliance_with(
    tee: &str,
    allow_anonymous: bool,
    extra_guest_args: &[&str],
) -> Result<Appliance> {
    let guest = start_guest(
        tee,
        allow_anonymous,
        "127.0.0.1:0",
        "127.0.0.1:0",
        extra_guest_args,
    )?;
    let guest_addr = guest.addr;
    let mut agent_cmd = Command::new(binary("cocoon-host-agent")?);
    agent_cmd.args([
        "relay",
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
        guest: guest.service,
        agent,
        guest_addr,
        agent_addr,
        guest_pin: guest.pin,
        model_id: guest.model_id,
        internal_addr: guest.internal_addr,
    })
}

/// Starts `cocoon-client proxy` in front of `upstream` (`https://…`) with `extra` flags;
/// returns it and its `127.0.0.1:PORT`.
pub fn start_proxy(upstream: &str, extra: &[&str]) -> Result<(Service, String)> {
    let mut cmd = Command::new(binary("cocoon-client")?);
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream])
        .args(extra);
    let (proxy, rest) = Service::start(
        "cocoon-client",
        cmd,
        "cocoon-client: listening on http://",
        Duration::from_secs(60),
    )?;
    let addr = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((proxy, addr))
}

/// Runs `cmd` (stdout and stderr captured) until it exits, for at most `wait`; a process
/// still running then is killed and reported as an error.
pub fn run_to_exit(mut cmd: Command, wait: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the process")?;
    let deadline = std::time::Instant::now() + wait;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "still running after {wait:?} (killed); stdout: {} stderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child.wait_with_output()?)
}

/// `cocoon-guest serve` on an ephemeral loopback port with the simulated TEE, the bundled
/// model and `extra` args.
pub fn simulated_guest_command(extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary("cocoon-guest").unwrap());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tee",
        "simulated",
        "--model",
    ])
    .arg(model_path().unwrap())
    .args(extra);
    cmd
}

/// Runs `cocoon-guest serve` (simulated TEE, bundled model) with `extra` args and expects
/// it to exit on its own within a liveness bound; returns its output. A guest that starts
/// serving instead fails the test (and is killed).
pub fn guest_exit_output(extra: &[&str]) -> Output {
    run_to_exit(simulated_guest_command(extra), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("the guest did not refuse to start with {extra:?}: {e:#}"))
}

/// Runs `cocoon-verify` with `args` and returns its output.
pub fn cocoon_verify(args: &[&str]) -> Result<Output> {
    Command::new(binary("cocoon-verify")?)
        .args(args)
        .output()
        .context("running cocoon-verify")
}

/// A host token for tests (from `openssl rand -hex 32`: the guest refuses guessable ones).
pub const TEST_HOST_TOKEN: &str =
    "f71dd1bfe4ea8bb9bca0deee6cb445df82151d9c078183746e3dec0f7aeb8e4b";

/// A fresh scratch directory under the system temp dir, named after `tag` and this process.
pub fn scratch_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cocoon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `token` into `dir/host-token` and returns the path.
pub fn host_token_file(dir: &Path, token: &str) -> Result<PathBuf> {
    let path = dir.join("host-token");
    std::fs::write(&path, token).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// One request to the guest's internal listener (plain HTTP/1.1, `connection: close`),
/// with the bearer `token` if given; returns the status and the JSON body.
pub fn internal_call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, serde_json::Value)> {
    use std::io::{Read as _, Write as _};
    let mut conn =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP response from {addr}: {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line: {head:?}"))?;
    let value = serde_json::from_str(body).with_context(|| format!("body {body:?}"))?;
    Ok((status, value))
}
