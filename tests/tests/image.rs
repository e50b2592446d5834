//! The appliance image: reproducible builds, the model disk's dm-verity, and a real QEMU
//! boot. These tests build images (root, Debian packages, QEMU), so they are `#[ignore]`
//! in `make test` and run by `make test-image`, which installs what they need.
//!
//! QEMU runs with software emulation (TCG) unless KVM can boot a kernel here: on the
//! development machines KVM exists but stops with an emulation error (nested
//! virtualization). Each test prints which accelerator ran.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cocoon_tests::{binary, model_path, run_to_exit, scratch_dir, workspace_root};

/// `program` with `args`.
fn cmd<I, S>(program: impl AsRef<std::ffi::OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Runs an image build script; returns its duration.
fn run_script(script: &str, args: &[&str]) -> Result<Duration> {
    let started = Instant::now();
    let out = run_to_exit(
        cmd(workspace_root().join("image/build").join(script), args),
        Duration::from_secs(900),
    )?;
    ensure!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(started.elapsed())
}

/// Builds the dev image into `out`.
fn build_image(out: &Path) -> Result<Duration> {
    let guest = binary("cocoon-guest")?;
    let init = binary("cocoon-init")?;
    run_script(
        "build.sh",
        &[
            "--profile",
            "dev",
            "--guest",
            &guest.to_string_lossy(),
            "--init",
            &init.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
    )
}

fn build_model_disk(model: &Path, out: &Path) -> Result<Duration> {
    run_script(
        "model-disk.sh",
        &[
            "--model",
            &model.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
    )
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The SHA-256 of each named file in `dir`.
fn digests(dir: &Path, names: &[&str]) -> Result<Vec<(String, String)>> {
    names
        .iter()
        .map(|n| Ok((n.to_string(), sha256_file(&dir.join(n))?)))
        .collect()
}

const IMAGE_FILES: [&str; 5] = [
    "vmlinuz",
    "initrd.img",
    "rootfs.img",
    "cmdline",
    "image.json",
];

#[test]
#[ignore = "builds the image twice (root, Debian packages): make test-image"]
fn two_clean_builds_are_byte_identical() -> Result<()> {
    let dir = scratch_dir("repro")?;
    let (a, b) = (dir.join("a"), dir.join("b"));
    let first = build_image(&a)?;
    let second = build_image(&b)?;
    let (da, db) = (digests(&a, &IMAGE_FILES)?, digests(&b, &IMAGE_FILES)?);
    for ((name, x), (_, y)) in da.iter().zip(&db) {
        println!("{name}: {x}");
        if x != y && name == "initrd.img" {
            // What differs, for the report (both builds stay in the scratch directory).
            let listing = |d: &Path| format!("zcat {}/initrd.img | cpio -tv --quiet", d.display());
            let diff = Command::new("bash")
                .arg("-c")
                .arg(format!("diff <({}) <({})", listing(&a), listing(&b)))
                .output()?;
            println!("{}", String::from_utf8_lossy(&diff.stdout));
        }
        ensure!(
            x == y,
            "{name} differs between two builds: {x} vs {y} (kept in {})",
            dir.display()
        );
    }
    let model = model_path()?;
    build_model_disk(&model, &a.join("model"))?;
    build_model_disk(&model, &b.join("model"))?;
    let (ma, mb) = (
        sha256_file(&a.join("model/model.img"))?,
        sha256_file(&b.join("model/model.img"))?,
    );
    ensure!(
        ma == mb,
        "model disk differs between two builds: {ma} vs {mb}"
    );
    let size = |f: &str| std::fs::metadata(a.join(f)).map(|m| m.len()).unwrap_or(0);
    println!(
        "image builds: {:.1} s and {:.1} s; vmlinuz {} B, initrd.img {} B, rootfs.img {} B; model.img {ma}",
        first.as_secs_f64(),
        second.as_secs_f64(),
        size("vmlinuz"),
        size("initrd.img"),
        size("rootfs.img"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The QEMU accelerator to use: KVM if it boots a kernel here, else TCG.
fn accelerator(image: &Path) -> Result<&'static str> {
    if let Ok(forced) = std::env::var("COCOON_QEMU_ACCEL") {
        return match forced.as_str() {
            "kvm" => Ok("kvm"),
            "tcg" => Ok("tcg"),
            other => bail!("COCOON_QEMU_ACCEL={other}: expected kvm or tcg"),
        };
    }
    if !Path::new("/dev/kvm").exists() {
        return Ok("tcg");
    }
    // A kernel with no root to mount panics within seconds under a working KVM; under
    // a broken one QEMU stops with "KVM internal error".
    let mut probe = qemu_machine("kvm", image, "512");
    probe.extend(["-append".into(), "console=ttyS0 panic=-1".into()]);
    let out = run_to_exit(
        cmd("qemu-system-x86_64", probe),
        // A working KVM panics in a few seconds; a broken one stops the VM and waits.
        Duration::from_secs(20),
    );
    Ok(match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("Kernel panic") => "kvm",
        _ => "tcg",
    })
}

/// QEMU's argv for a plain guest booting `image` with the model disk `model`.
/// QEMU's argv for a VM of `memory` MiB booting `image`'s kernel, console on stdout.
fn qemu_machine(accel: &str, image: &Path, memory: &str) -> Vec<String> {
    let cpu = if accel == "kvm" { "host" } else { "max" };
    [
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-smp",
        "2",
        "-m",
        memory,
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        &image.join("vmlinuz").to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn qemu_args(accel: &str, image: &Path, model_img: &Path, cmdline: &str) -> Vec<String> {
    let mut args = qemu_machine(accel, image, "2048");
    args.extend(
        [
            "-initrd",
            &image.join("initrd.img").to_string_lossy(),
            "-append",
            cmdline,
            "-drive",
            &format!(
                "file={},if=none,id=root,format=raw,readonly=on",
                image.join("rootfs.img").display()
            ),
            "-device",
            "virtio-blk-pci,drive=root",
            "-drive",
            &format!(
                "file={},if=none,id=model,format=raw,readonly=on",
                model_img.display()
            ),
            "-device",
            "virtio-blk-pci,drive=model",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

/// The image's command line with the model disk's parameters appended.
fn deployment_cmdline(image: &Path, model: &Path) -> Result<String> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))
            .map(|s| s.trim().to_string())
    };
    Ok(format!(
        "{} {}",
        read(image.join("cmdline"))?,
        read(model.join("cmdline"))?
    ))
}

#[test]
#[ignore = "builds and boots the image in QEMU: make test-image"]
fn a_corrupted_model_disk_stops_the_guest() -> Result<()> {
    let dir = scratch_dir("corrupt")?;
    let image = dir.join("image");
    build_image(&image)?;
    let model_dir = dir.join("model");
    build_model_disk(&model_path()?, &model_dir)?;
    let cmdline = deployment_cmdline(&image, &model_dir)?;
    // One flipped bit in the middle of the model's data blocks (the hash tree and the
    // command line are unchanged, so only the kernel's per-block check can notice).
    let corrupted = dir.join("model-corrupted.img");
    let mut bytes = std::fs::read(model_dir.join("model.img"))?;
    let blocks: usize = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cocoon.model="))
        .and_then(|v| v.split(',').nth(2))
        .and_then(|b| b.parse().ok())
        .context("no cocoon.model= data blocks in the command line")?;
    let at = blocks * 4096 / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&corrupted, &bytes)?;
    let accel = accelerator(&image)?;
    println!("accelerator: {accel}");
    let started = Instant::now();
    let out = run_to_exit(
        cmd(
            "qemu-system-x86_64",
            qemu_args(accel, &image, &corrupted, &cmdline),
        ),
        Duration::from_secs(600),
    )?;
    let console = String::from_utf8_lossy(&out.stdout);
    println!(
        "guest stopped after {:.1} s; console tail:\n{}",
        started.elapsed().as_secs_f64(),
        console
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        console.contains("is corrupted"),
        "the kernel did not report a corrupted block"
    );
    ensure!(
        console.contains("cocoon-guest exited") && console.contains("powering off"),
        "the guest did not stop on the corrupted model"
    );
    ensure!(
        !console.contains("cocoon-guest: listening"),
        "the guest served with a corrupted model"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Where `make firmware` put the firmware (`cocoon-measure`'s SEV-SNP digest needs the
/// AmdSev build).
fn firmware_dir() -> Result<PathBuf> {
    std::env::var_os("COCOON_FIRMWARE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cocoon-firmware"))
        })
        .context("neither COCOON_FIRMWARE_DIR nor HOME is set")
}

/// `make measure`'s script for the dev image with `model` on `model_disk`, booted as a
/// 2-vCPU EPYC-v4 SEV-SNP guest: writes the deployment to `deploy` (kernel, initrd, the
/// command line with the model disk's parameters) and the unsigned manifest to
/// `deploy/manifest.json`; returns its SEV-SNP digest and its config digest.
fn measure_deployment(
    image: &Path,
    model_disk: &Path,
    model: &Path,
    deploy: &Path,
) -> Result<(String, String)> {
    let manifest = deploy.join("manifest.json");
    run_script(
        "measure.sh",
        &[
            "--image",
            &image.to_string_lossy(),
            "--model-disk",
            &model_disk.to_string_lossy(),
            "--model",
            &model.to_string_lossy(),
            "--guest",
            &binary("cocoon-guest")?.to_string_lossy(),
            "--measure",
            &binary("cocoon-measure")?.to_string_lossy(),
            "--firmware-dir",
            &firmware_dir()?.to_string_lossy(),
            "--deploy",
            &deploy.to_string_lossy(),
            "--out",
            &manifest.to_string_lossy(),
            "--snp-vcpus",
            "2",
            "--snp-vcpu-types",
            "EPYC-v4",
            "--release",
            "1",
            "--not-after",
            "2099-01-01T00:00:00Z",
        ],
    )?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest)?)?;
    let first = |v: &serde_json::Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("the manifest has no {what}"))
    };
    Ok((
        first(
            &manifest["sev_snp"]["measurements"][0],
            "SEV-SNP measurement",
        )?,
        first(&manifest["config_digests"][0], "config digest")?,
    ))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Signs `manifest` with a fresh key; returns the envelope path and the public key.
fn sign(dir: &Path, manifest: &Path) -> Result<(PathBuf, String)> {
    let key = dir.join("signing-key.pem");
    let _ = std::fs::remove_file(&key);
    let keygen =
        cocoon_tests::cocoon_verify(&["manifest", "keygen", "--out", &key.to_string_lossy()])?;
    ensure!(keygen.status.success(), "keygen failed");
    let public = String::from_utf8_lossy(&keygen.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("ed25519:"))
        .map(str::to_string)
        .context("keygen printed no ed25519: public key")?;
    let signed = manifest.with_extension("dsse.json");
    let out = cocoon_tests::cocoon_verify(&[
        "manifest",
        "sign",
        "--key",
        &key.to_string_lossy(),
        "--out",
        &signed.to_string_lossy(),
        &manifest.to_string_lossy(),
    ])?;
    ensure!(
        out.status.success(),
        "sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((signed, public))
}

#[test]
#[ignore = "builds the image and boots it in QEMU behind the host agent: make test-image"]
fn the_booted_image_is_verified_against_its_manifest_and_serves_the_openai_sdk() -> Result<()> {
    let dir = scratch_dir("boot")?;
    let image = dir.join("image");
    build_image(&image)?;
    let model = model_path()?;
    let (model_disk, other_disk) = (dir.join("model"), dir.join("other-model"));
    build_model_disk(&model, &model_disk)?;
    // Another build: the same image with another model disk (one byte more), so another
    // command line and another launch digest.
    let other_model = dir.join(model.file_name().context("model has no file name")?);
    let mut bytes = std::fs::read(&model)?;
    bytes.push(0);
    std::fs::write(&other_model, bytes)?;
    build_model_disk(&other_model, &other_disk)?;

    let (deploy, other_deploy) = (dir.join("deploy"), dir.join("other-deploy"));
    let (digest, config) = measure_deployment(&image, &model_disk, &model, &deploy)?;
    let (other_digest, _) = measure_deployment(&image, &other_disk, &other_model, &other_deploy)?;
    println!("predicted config digest: {config}");
    ensure!(digest != other_digest, "two builds measured the same");
    println!("predicted SEV-SNP launch digest (2 x EPYC-v4, AmdSev OVMF): {digest}");
    let manifest = deploy.join("manifest.json");
    let (signed, key) = sign(&dir, &manifest)?;
    let (other_signed, other_key) = sign(&dir, &other_deploy.join("manifest.json"))?;

    let accel = accelerator(&image)?;
    let relay = free_port()?;
    let config = dir.join("vm.toml");
    std::fs::write(
        &config,
        format!(
            r#"[vm]
kind = "plain"
qemu = "qemu-system-x86_64"
vcpus = 2
memory_mib = 2048
accel = "{accel}"
serial_log = "serial.log"

[image]
kernel = "deploy/vmlinuz"
initrd = "deploy/initrd.img"
cmdline_file = "deploy/cmdline"
rootfs = "image/rootfs.img"

[model]
disk = "model/model.img"

[network]
https_guest_port = 8443
https_host_port = {https}
internal_guest_port = 8444
internal_host_port = {internal}

[relay]
listen = "127.0.0.1:{relay}"

[attestation]
allow_simulated = true
manifest = "{signed}"
manifest_key = ["{key}"]

[collateral]
offline = true

[supervise]
healthz_timeout_secs = 900
max_restarts = 0

[simulated]
measurements = "deploy/manifest.json"
"#,
            https = free_port()?,
            internal = free_port()?,
            signed = signed.display(),
        ),
    )?;
    println!("accelerator: {accel}");
    let started = Instant::now();
    let mut agent = StopsItsVm(cocoon_tests::Service::spawn("cocoon-host-agent", {
        let mut c = Command::new(binary("cocoon-host-agent")?);
        c.args(["vm", "run", "--config", &config.to_string_lossy()]);
        c
    })?);
    // The relay refuses connections until the agent verified the guest; poll with the
    // client's own verification until it answers.
    let url = format!("https://127.0.0.1:{relay}");
    let cert = dir.join("guest.pem");
    let with_manifest = |m: &Path, k: &str| {
        cocoon_tests::cocoon_verify(&[
            "endpoint",
            &url,
            "--allow-simulated",
            "--offline",
            "--manifest",
            &m.to_string_lossy(),
            "--manifest-key",
            k,
            "--cert-out",
            &cert.to_string_lossy(),
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    let verified = loop {
        ensure!(
            agent.0.is_running(),
            "the host agent exited; serial log: {}",
            std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default()
        );
        let out = with_manifest(&signed, &key)?;
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            bail!(
                "not verified within 900 s: {}\nserial log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    println!(
        "boot to verified through the relay: {:.1} s ({accel})\n{verified}",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        verified.contains(&digest),
        "the verified report does not show the predicted digest"
    );

    let refused = with_manifest(&other_signed, &other_key)?;
    let refusal = String::from_utf8_lossy(&refused.stderr).into_owned()
        + &String::from_utf8_lossy(&refused.stdout);
    ensure!(
        !refused.status.success(),
        "the other build's manifest was accepted"
    );
    println!("other build's manifest refused: {}", refusal.trim());

    let model_id = model
        .file_name()
        .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_lowercase())
        .context("model file name")?;
    // The integrator's path: the official SDK against the verifying local proxy, which
    // checks the guest against the same manifest and proves an account, through the
    // host agent's relay.
    let account = dir.join("account.pem");
    let keygen = run_to_exit(
        cmd(
            binary("cocoon-client")?,
            ["account", "keygen", "--out", &account.to_string_lossy()],
        ),
        Duration::from_secs(30),
    )?;
    ensure!(keygen.status.success(), "account keygen failed");
    let (_proxy, proxy_addr) = cocoon_tests::start_proxy(
        &url,
        &[
            "--allow-simulated",
            "--offline",
            "--manifest",
            &signed.to_string_lossy(),
            "--manifest-key",
            &key,
            "--account-key",
            &account.to_string_lossy(),
        ],
    )?;
    let sdk_started = Instant::now();
    let out = Command::new(cocoon_tests::python())
        .arg(workspace_root().join("tests/python/openai_e2e.py"))
        .arg(format!("http://{proxy_addr}/v1"))
        .arg("none")
        .arg(&model_id)
        .output()
        .context("python runs (make venv installs the openai SDK)")?;
    ensure!(
        out.status.success(),
        "openai SDK through the proxy and the relay failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "openai SDK through cocoon-client and the relay ({:.1} s): {}",
        sdk_started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The host agent, stopped with SIGTERM (it then stops QEMU) when the test ends, however
/// it ends; SIGKILL would leave QEMU running.
struct StopsItsVm(cocoon_tests::Service);

impl Drop for StopsItsVm {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
