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

/// Runs an image build script; returns its duration.
fn run_script(script: &str, args: &[&str]) -> Result<Duration> {
    let started = Instant::now();
    let out = run_to_exit(
        Command::new(workspace_root().join("image/build").join(script)).args(args),
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
        &["--model", &model.to_string_lossy(), "--out", &out.to_string_lossy()],
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

const IMAGE_FILES: [&str; 5] = ["vmlinuz", "initrd.img", "rootfs.img", "cmdline", "image.json"];

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
        ensure!(x == y, "{name} differs between two builds: {x} vs {y}");
    }
    let model = model_path()?;
    build_model_disk(&model, &a.join("model"))?;
    build_model_disk(&model, &b.join("model"))?;
    let (ma, mb) = (
        sha256_file(&a.join("model/model.img"))?,
        sha256_file(&b.join("model/model.img"))?,
    );
    ensure!(ma == mb, "model disk differs between two builds: {ma} vs {mb}");
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
    let out = run_to_exit(
        Command::new("qemu-system-x86_64").args([
            "-machine",
            "q35",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "512",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            &image.join("vmlinuz").to_string_lossy(),
            "-append",
            "console=ttyS0 panic=-1",
        ]),
        Duration::from_secs(60),
    );
    Ok(match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("Kernel panic") => "kvm",
        _ => "tcg",
    })
}

/// QEMU's argv for a plain guest booting `image` with the model disk `model`.
fn qemu_args(accel: &str, image: &Path, model_img: &Path, cmdline: &str) -> Vec<String> {
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
        "2048",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        &image.join("vmlinuz").to_string_lossy(),
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
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
        Command::new("qemu-system-x86_64").args(qemu_args(accel, &image, &corrupted, &cmdline)),
        Duration::from_secs(600),
    )?;
    let console = String::from_utf8_lossy(&out.stdout);
    println!(
        "guest stopped after {:.1} s; console tail:\n{}",
        started.elapsed().as_secs_f64(),
        console.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
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
