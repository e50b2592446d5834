//! The QEMU argument vector for a [`LoadedConfig`]: one pure function, so that what the
//! agent launches is exactly what `vm print-cmdline` shows and what the tests pin.
//!
//! The options follow QEMU's documentation (10.1): `docs/system/i386/tdx.rst` for TDX,
//! `docs/system/i386/amd-memory-encryption.rst` and the `sev-snp-guest` QAPI schema for
//! SEV-SNP, `qemu-options.hx` for the rest, `docs/system/devices/vfio` style passthrough
//! for GPUs. Order of disks is an interface with the guest's init: the root file system is
//! the first virtio disk (`/dev/vda`, PCI slot 2) and the model the second (`/dev/vdb`,
//! slot 3); both slots are pinned so no other device can come between them.

use std::path::Path;

use serde::Serialize;

use crate::vm::config::{AccelChoice, LoadedConfig, QuoteGenerationSocket, VmKind};

/// The accelerator actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// Resolves the configured choice; `kvm_usable` answers `auto` (see [`kvm_usable`]).
    pub fn resolve(choice: Option<AccelChoice>, kvm_usable: impl FnOnce() -> bool) -> Accel {
        match choice {
            None | Some(AccelChoice::Kvm) => Accel::Kvm,
            Some(AccelChoice::Tcg) => Accel::Tcg,
            Some(AccelChoice::Auto) => {
                if kvm_usable() {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Whether `/dev/kvm` opens read-write (what QEMU needs for `-accel kvm`). Note: on nested
/// hosts KVM may open yet fail to run Linux; choose `tcg` there explicitly.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// IDs the arguments refer to each other by.
const CGS_TDX: &str = "tdx0";
const CGS_SNP: &str = "sev0";
const SNP_RAM: &str = "ram1";
/// fw_cfg item a development guest reads its simulated reference values from.
pub const SIMULATED_MEASUREMENTS_FW_CFG: &str = "opt/cocoon/simulated-measurements";

/// `tdx-guest` in QEMU's JSON `-object` form (needed for the nested
/// `quote-generation-socket`, a QAPI SocketAddress).
#[derive(Serialize)]
struct TdxGuestObject<'a> {
    #[serde(rename = "qom-type")]
    qom_type: &'static str,
    id: &'static str,
    #[serde(
        rename = "quote-generation-socket",
        skip_serializing_if = "Option::is_none"
    )]
    quote_generation_socket: Option<SocketAddressJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<u64>,
    #[serde(rename = "sept-ve-disable", skip_serializing_if = "Option::is_none")]
    sept_ve_disable: Option<bool>,
}

/// QAPI SocketAddress; QEMU documents `cid` and `port` as strings.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum SocketAddressJson<'a> {
    Vsock { cid: String, port: String },
    Unix { path: &'a str },
}

/// The full argument vector (without the program name) for `loaded`, with `accel` resolved
/// and the kernel command line read ([`LoadedConfig::kernel_cmdline`]).
pub fn qemu_args(loaded: &LoadedConfig, accel: Accel, cmdline: &str) -> Vec<String> {
    let c = &loaded.config;
    let kind = c.vm.kind;
    let mut args = Args::default();
    // No default devices, no host config files, no display, no reboot (a guest that
    // reboots is restarted by the supervisor instead, with fresh measurements).
    args.push([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    args.push(["-accel", accel.name()]);
    let cpu = c.vm.cpu.clone().unwrap_or_else(|| {
        match (kind, accel) {
            (VmKind::SevSnp, _) => "EPYC-v4",
            (_, Accel::Kvm) => "host",
            (_, Accel::Tcg) => "max",
        }
        .to_string()
    });
    let memory = format!("{}M", c.vm.memory_mib);
    match kind {
        VmKind::Tdx => {
            // tdx.rst: split irqchip, tdx-guest as confidential-guest-support; no HPET.
            args.push([
                "-machine",
                &format!("q35,kernel-irqchip=split,confidential-guest-support={CGS_TDX},hpet=off"),
            ]);
        }
        VmKind::SevSnp => {
            // amd-memory-encryption.rst: guest RAM from a memfd backend, no vmport.
            args.push([
                "-machine",
                &format!(
                    "q35,confidential-guest-support={CGS_SNP},memory-backend={SNP_RAM},vmport=off"
                ),
            ]);
        }
        VmKind::Plain => args.push(["-machine", "q35"]),
    }
    args.push(["-cpu", &cpu]);
    args.push(["-smp", &c.vm.vcpus.to_string()]);
    args.push(["-m", &memory]);
    match kind {
        VmKind::Tdx => args.push(["-object", &tdx_guest_object(loaded)]),
        VmKind::SevSnp => {
            args.push([
                "-object",
                &format!(
                    "memory-backend-memfd,id={SNP_RAM},size={memory},share=true,prealloc=false"
                ),
            ]);
            args.push(["-object", &snp_guest_object(loaded)]);
        }
        VmKind::Plain => {}
    }
    if let Some(firmware) = &c.image.firmware {
        args.push(["-bios", &path(firmware)]);
    }
    args.push(["-kernel", &path(&c.image.kernel)]);
    args.push(["-initrd", &path(&c.image.initrd)]);
    args.push(["-append", cmdline]);
    // Virtio under memory encryption must use the DMA API (bounce buffers in shared
    // memory): modern-only devices with VIRTIO_F_ACCESS_PLATFORM.
    let virtio = if kind.confidential() {
        ",disable-legacy=on,iommu_platform=on"
    } else {
        ""
    };
    for (id, file, slot) in [("root", &c.image.rootfs, 2), ("model", &c.model.disk, 3)] {
        args.push([
            "-drive",
            &format!("file={},if=none,id={id},format=raw,readonly=on", path(file)),
        ]);
        args.push([
            "-device",
            &format!("virtio-blk-pci,drive={id},bus=pcie.0,addr={slot:#x}{virtio}"),
        ]);
    }
    args.push(["-netdev", &netdev(loaded)]);
    args.push(["-device", &format!("virtio-net-pci,netdev=net0{virtio}")]);
    if let Some(cid) = c.network.vsock_guest_cid {
        args.push([
            "-device",
            &format!("vhost-vsock-pci,guest-cid={cid}{virtio}"),
        ]);
    }
    if let Some(gpu) = &c.gpu {
        // One PCIe root port per GPU (each needs its own chassis), the GPU behind it.
        for (index, address) in gpu.devices.iter().enumerate() {
            let port = format!("rp{index}");
            args.push([
                "-device",
                &format!("pcie-root-port,id={port},bus=pcie.0,chassis={}", index + 1),
            ]);
            args.push(["-device", &format!("vfio-pci,host={address},bus={port}")]);
        }
        // OVMF's 64-bit MMIO window must hold the GPUs' BARs.
        args.push([
            "-fw_cfg",
            &format!("name=opt/ovmf/X-PciMmio64Mb,string={}", gpu.pci_mmio64_mib),
        ]);
    }
    if let Some(simulated) = &c.simulated {
        args.push([
            "-fw_cfg",
            &format!(
                "name={SIMULATED_MEASUREMENTS_FW_CFG},file={}",
                path(&simulated.measurements)
            ),
        ]);
    }
    args.push(["-serial", &format!("file:{}", path(&c.vm.serial_log))]);
    args.0
}

/// Collects arguments.
#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn push<const N: usize>(&mut self, items: [&str; N]) {
        self.0.extend(items.iter().map(|s| s.to_string()));
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// User networking; host forwards listen on loopback only.
fn netdev(loaded: &LoadedConfig) -> String {
    let n = &loaded.config.network;
    let mut netdev = format!(
        "user,id=net0,hostfwd=tcp:127.0.0.1:{}-:{}",
        n.https_host_port, n.https_guest_port
    );
    if let (Some(host), Some(guest)) = (n.internal_host_port, n.internal_guest_port) {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    netdev
}

fn tdx_guest_object(loaded: &LoadedConfig) -> String {
    let tdx = loaded.config.tdx.as_ref();
    let socket_path;
    let quote_generation_socket = match tdx.and_then(|t| t.quote_generation_socket.as_ref()) {
        Some(QuoteGenerationSocket::Vsock { cid, port }) => Some(SocketAddressJson::Vsock {
            cid: cid.to_string(),
            port: port.to_string(),
        }),
        Some(QuoteGenerationSocket::Unix { path: p }) => {
            socket_path = path(p);
            Some(SocketAddressJson::Unix { path: &socket_path })
        }
        None => None,
    };
    let object = TdxGuestObject {
        qom_type: "tdx-guest",
        id: CGS_TDX,
        quote_generation_socket,
        attributes: tdx.and_then(|t| t.attributes),
        sept_ve_disable: tdx.and_then(|t| t.sept_ve_disable),
    };
    // Serializing plain strings, numbers and booleans cannot fail.
    serde_json::to_string(&object).unwrap_or_default()
}

fn snp_guest_object(loaded: &LoadedConfig) -> String {
    let snp = loaded.config.snp.clone().unwrap_or_default();
    let mut object = format!(
        "sev-snp-guest,id={CGS_SNP},cbitpos={},reduced-phys-bits={},policy={:#x},kernel-hashes={}",
        snp.cbitpos,
        snp.reduced_phys_bits,
        snp.policy,
        if snp.kernel_hashes { "on" } else { "off" }
    );
    if let Some(host_data) = &snp.host_data {
        object.push_str(&format!(",host-data={host_data}"));
    }
    object
}

/// The arguments as one POSIX shell line (each quoted where needed).
pub fn shell_line(program: &Path, args: &[String]) -> String {
    std::iter::once(path(program))
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./,:=+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[path = "qemu_tests.rs"]
mod tests;
