//! `cocoon-host-agent vm run` end to end against a fake QEMU (a shell script given as
//! `qemu` in the config): restarts with backoff, giving up after max_restarts with a
//! non-zero exit, and a relay that refuses clients while no guest is verified. The real
//! guest in real QEMU is the integrator's boot test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// Generous bound against hangs; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A fresh directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cocoon-vm-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for artifact in ["vmlinuz", "initrd.img", "rootfs.img", "model.img"] {
            std::fs::write(dir.join(artifact), b"").unwrap();
        }
        Self(dir)
    }

    /// Writes an executable fake QEMU with this shell body.
    fn fake_qemu(&self, body: &str) -> PathBuf {
        let path = self.0.join("fake-qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A plain-VM config (relative paths: they resolve next to the config) with `supervise`.
    fn config(&self, supervise: &str) -> PathBuf {
        // A loopback port nobody listens on: the health probe is refused.
        let unused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            r#"
[vm]
kind = "plain"
qemu = "./fake-qemu"
vcpus = 1
memory_mib = 512
accel = "tcg"
serial_log = "serial.log"

[image]
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0"
rootfs = "rootfs.img"

[model]
disk = "model.img"

[network]
https_host_port = {unused}

[relay]
listen = "127.0.0.1:0"

[attestation]
allow_simulated = true

[collateral]
offline = true

[supervise]
{supervise}
"#
        );
        let path = self.0.join("vm.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cocoon-host-agent"));
    command
        .args(["vm", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the agent to its end, which must be a non-zero exit; returns its log.
async fn run_until_it_gives_up(scratch: &Scratch, config: &Path) -> String {
    let output = tokio::time::timeout(HANG_GUARD, agent(config).current_dir(&scratch.0).output())
        .await
        .expect("the agent gives up instead of hanging")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "must exit non-zero: {stderr}");
    stderr
}

#[tokio::test]
async fn a_qemu_that_keeps_exiting_is_restarted_until_max_restarts_then_the_agent_fails() {
    let scratch = Scratch::new("exits");
    scratch.fake_qemu("echo started >> launches.log\nexit 3");
    let config = scratch
        .config("restart_backoff_initial_ms = 10\nrestart_backoff_max_ms = 40\nmax_restarts = 3");
    let stderr = run_until_it_gives_up(&scratch, &config).await;
    assert!(
        stderr.contains("giving up after 3 restart(s) (max_restarts = 3)")
            && stderr.contains("QEMU exited (exit status: 3)"),
        "{stderr}"
    );
    // The first launch and three restarts, with backoff delays 10, 20 and 40 ms.
    let launches = std::fs::read_to_string(scratch.0.join("launches.log")).unwrap();
    assert_eq!(launches.lines().count(), 4, "{stderr}");
    for delay in ["delay=10ms", "delay=20ms", "delay=40ms"] {
        assert!(stderr.contains(delay), "{delay} missing: {stderr}");
    }
}

#[tokio::test]
async fn clients_are_refused_while_the_guest_is_unverified_and_sigterm_stops_qemu() {
    let scratch = Scratch::new("unverified");
    scratch.fake_qemu("echo $$ > qemu.pid\nexec sleep 300");
    let config = scratch.config("healthz_timeout_secs = 600\nhealth_interval_secs = 1");
    let mut child = agent(&config).current_dir(&scratch.0).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(HANG_GUARD, lines.next_line())
        .await
        .expect("the agent prints where it listens")
        .unwrap()
        .unwrap_or_default();
    let relay = banner
        .strip_prefix("cocoon-host-agent: relaying ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
        .to_string();

    // The fake QEMU runs but the guest never answers /healthz: no client is relayed.
    let pid_file = scratch.0.join("qemu.pid");
    while !pid_file.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = tokio::net::TcpStream::connect(&relay).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(HANG_GUARD, client.read(&mut buf))
        .await
        .expect("the relay closes the client");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not relayed: {read:?}"
    );

    // SIGTERM: the agent stops QEMU and exits cleanly.
    let qemu_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let agent_pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &agent_pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(HANG_GUARD, child.wait())
        .await
        .expect("the agent exits on SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("not verified"),
        "the refusal is logged: {stderr}"
    );
    assert!(
        !Path::new("/proc").join(&qemu_pid).exists(),
        "the fake QEMU (pid {qemu_pid}) was stopped: {stderr}"
    );
}

#[tokio::test]
async fn a_guest_that_never_answers_healthz_is_stopped_and_with_no_restarts_left_the_agent_fails() {
    let scratch = Scratch::new("silent");
    scratch.fake_qemu("echo $$ > qemu.pid\nexec sleep 300");
    let config = scratch.config("healthz_timeout_secs = 1\nmax_restarts = 0");
    let stderr = run_until_it_gives_up(&scratch, &config).await;
    assert!(
        stderr.contains("giving up after 0 restart(s) (max_restarts = 0)")
            && stderr.contains("no 200 from /healthz within 1s")
            && stderr.contains("connect:"),
        "{stderr}"
    );
    let qemu_pid = std::fs::read_to_string(scratch.0.join("qemu.pid")).unwrap();
    assert!(
        !Path::new("/proc").join(qemu_pid.trim()).exists(),
        "the fake QEMU was stopped: {stderr}"
    );
}
