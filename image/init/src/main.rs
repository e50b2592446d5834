//! `cocoon-init`: PID 1 of the appliance image (see the library docs for why).
//!
//! Steps: mount `/dev`, `/proc`, `/sys`; read the measured command line; load the
//! modules; open the root disk (`/dev/vda`) and the model disk (`/dev/vdb`) as dm-verity
//! devices with the command line's root hashes; mount them read-only; move into the
//! verified root; bring up the network; run `cocoon-guest` with the image's flags plus
//! those from the command line; power off when it exits or anything fails.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cocoon_init::cmdline::BootParams;
use cocoon_init::verity::VeritySpec;
use cocoon_init::{modules, net, Error, Result};
use rustix::fs::{FileType, Mode};
use rustix::mount::{mount, mount_move, MountFlags};

/// The disks, in the order the host agent attaches them.
const ROOT_DISK: &str = "/dev/vda";
const MODEL_DISK: &str = "/dev/vdb";
/// Where the verified root is mounted before init moves into it.
const NEW_ROOT: &str = "/sysroot";
/// Inside the verified root: the model mount point, the guest and its flags.
const MODELS: &str = "/models";
const GUEST: &str = "/usr/bin/cocoon-guest";
const GUEST_ARGS: &str = "/etc/cocoon/guest.args";
/// The guest's home (tmpfs): the engine's libraries want one for their caches, though
/// nothing is downloaded.
const GUEST_HOME: &str = "/run/cocoon-guest";
/// How long to wait for a disk to show up after its driver loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(20);

fn log(message: &str) {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    eprintln!("cocoon-init [{uptime}s]: {message}");
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&std::ffi::CStr>,
) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    mount(source, target, fstype, flags, data)
        .map_err(|e| Error::io(target, std::io::Error::from_raw_os_error(e.raw_os_error())))
}

fn wait_for(path: &str) -> Result<()> {
    let started = Instant::now();
    while !Path::new(path).exists() {
        if started.elapsed() > DEVICE_WAIT {
            return Err(Error::Timeout {
                what: path.to_string(),
                seconds: DEVICE_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Opens `disk` as the dm-verity device `name` and mounts it read-only at `target`.
fn mount_verified(name: &str, disk: &str, spec: &VeritySpec, target: &str) -> Result<()> {
    wait_for(disk)?;
    let dev = cocoon_dm::create_read_only(name, "verity", spec.sectors(), &spec.table_params(disk))
        .map_err(|source| Error::DeviceMapper {
            name: name.to_string(),
            source,
        })?;
    let node = format!("/dev/cocoon-{name}");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        node.as_str(),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o400),
        dev,
    )
    .map_err(|e| Error::io(&node, std::io::Error::from_raw_os_error(e.raw_os_error())))?;
    mount_fs(
        &node,
        target,
        "squashfs",
        MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID,
        None,
    )?;
    log(&format!(
        "{disk} verified as {name} (root hash {}), mounted at {target}",
        spec.root_hash
    ));
    Ok(())
}

/// Moves `/dev`, `/proc` and `/sys` into the new root and makes it `/`.
fn switch_root() -> Result<()> {
    for dir in ["/dev", "/proc", "/sys"] {
        let target = format!("{NEW_ROOT}{dir}");
        mount_move(dir, target.as_str())
            .map_err(|e| Error::io(&target, std::io::Error::from_raw_os_error(e.raw_os_error())))?;
    }
    let os = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
    rustix::process::chdir(NEW_ROOT).map_err(|e| Error::io(NEW_ROOT, os(e)))?;
    mount_move(".", "/").map_err(|e| Error::io("/", os(e)))?;
    rustix::process::chroot(".").map_err(|e| Error::io("/", os(e)))?;
    rustix::process::chdir("/").map_err(|e| Error::io("/", os(e)))?;
    Ok(())
}

fn guest_argv(params: &BootParams) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(GUEST_ARGS).map_err(|e| Error::io(GUEST_ARGS, e))?;
    let mut args: Vec<String> = cocoon_init::list_lines(&text).map(str::to_string).collect();
    if let Some(model) = &params.model {
        args.extend([
            "--model".to_string(),
            format!("{MODELS}/{}", model.path),
            "--model-verity-root".to_string(),
            model.verity.root_hash.clone(),
        ]);
    }
    args.extend(params.guest_args.iter().cloned());
    Ok(args)
}

/// Runs the guest and reaps every child until it exits (PID 1 adopts orphans).
fn run_guest(args: &[String]) -> Result<()> {
    log(&format!("starting {GUEST} {}", args.join(" ")));
    std::fs::create_dir_all(GUEST_HOME).map_err(|e| Error::io(GUEST_HOME, e))?;
    let child = Command::new(GUEST)
        .args(args)
        .env_clear()
        .env("HOME", GUEST_HOME)
        .spawn()
        .map_err(|e| Error::io(GUEST, e))?;
    let guest_pid = rustix::process::Pid::from_raw(child.id() as i32);
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if Some(pid) == guest_pid => {
                let how = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => format!("with status {code}"),
                    (_, Some(signal)) => format!("on signal {signal}"),
                    _ => format!("({status:?})"),
                };
                return Err(Error::Boot(format!("cocoon-guest exited {how}")));
            }
            Ok(_) => continue,
            Err(e) => {
                return Err(Error::Boot(format!("waiting for cocoon-guest: {e}")));
            }
        }
    }
}

fn boot() -> Result<()> {
    let nosuid = MountFlags::NOSUID | MountFlags::NOEXEC;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        Some(c"mode=0755"),
    )?;
    mount_fs("proc", "/proc", "proc", nosuid | MountFlags::NODEV, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid | MountFlags::NODEV, None)?;
    let cmdline =
        std::fs::read_to_string("/proc/cmdline").map_err(|e| Error::io("/proc/cmdline", e))?;
    let params = BootParams::parse(&cmdline)?;
    let list = std::fs::read_to_string(modules::LIST).map_err(|e| Error::io(modules::LIST, e))?;
    for skipped in modules::load_all(&list)? {
        log(&format!("optional module not loaded: {skipped}"));
    }
    wait_for(cocoon_dm::CONTROL)?;
    mount_verified("root", ROOT_DISK, &params.root, NEW_ROOT)?;
    if let Some(model) = &params.model {
        mount_verified(
            "model",
            MODEL_DISK,
            &model.verity,
            &format!("{NEW_ROOT}{MODELS}"),
        )?;
    }
    switch_root()?;
    if Path::new("/sys/kernel/config").is_dir() {
        mount_fs(
            "configfs",
            "/sys/kernel/config",
            "configfs",
            nosuid | MountFlags::NODEV,
            None,
        )?;
    }
    for dir in ["/tmp", "/run", "/dev/shm"] {
        mount_fs(
            "tmpfs",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(c"mode=1777"),
        )?;
    }
    net::configure("lo", None)?;
    net::configure("eth0", Some(params.address))?;
    log(&format!("eth0 {}/{}", params.address.0, params.address.1));
    run_guest(&guest_argv(&params)?)
}

fn main() {
    if let Err(e) = boot() {
        log(&format!("error: {e}"));
    }
    log("powering off");
    rustix::fs::sync();
    // PID 1 must not exit (the kernel would panic); power off, or stop here if even
    // that is refused.
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        log(&format!("power off refused: {e}"));
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
