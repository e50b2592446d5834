//! The VM's configuration file (TOML): what to boot, how, and what the operator accepts.
//!
//! Why a file and not flags: a confidential VM's command line is part of what gets measured
//! (kernel, initrd, cmdline, firmware, SNP policy), so the operator keeps it in one reviewed,
//! versioned file. Every table refuses unknown keys (a misspelt `kernel_hashes` must not
//! silently fall back to a default), and every error names the file and the key. Relative
//! paths are taken relative to the directory of the config file, so a config and the
//! artifacts beside it can move together.
//!
//! Sections: `[vm]`, `[image]`, `[model]`, `[network]`, `[relay]`, `[supervise]`, and, where
//! they apply, `[tdx]`, `[snp]`, `[gpu]`, `[simulated]`; `[attestation]` and `[collateral]`
//! are `cocoon-client`'s `PolicyArgs` and `CollateralArgs` (the same knobs as
//! `cocoon-verify --policy/--manifest/...`). `host-agent/examples/vm-*.toml` are complete
//! examples, parsed by the tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cocoon_client::args::{CollateralArgs, PolicyArgs};
use serde::Deserialize;

use crate::config_file::{anchor, anchor_policy, Checker, ConfigFile, Loaded};
use crate::error::Result;
pub use crate::relay::RelaySection;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub vm: VmSection,
    pub image: ImageSection,
    pub model: ModelSection,
    pub network: NetworkSection,
    #[serde(default)]
    pub relay: RelaySection,
    #[serde(default)]
    pub supervise: SuperviseSection,
    #[serde(default)]
    pub attestation: PolicyArgs,
    #[serde(default)]
    pub collateral: CollateralArgs,
    pub tdx: Option<TdxSection>,
    pub snp: Option<SnpSection>,
    pub gpu: Option<GpuSection>,
    pub simulated: Option<SimulatedSection>,
}

/// Which kind of VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VmKind {
    /// Intel TDX trust domain.
    #[serde(rename = "tdx")]
    Tdx,
    /// AMD SEV-SNP guest.
    #[serde(rename = "sev-snp")]
    SevSnp,
    /// An ordinary VM (no TEE): development, with simulated evidence.
    #[serde(rename = "plain")]
    Plain,
}

impl VmKind {
    pub fn name(self) -> &'static str {
        match self {
            VmKind::Tdx => "tdx",
            VmKind::SevSnp => "sev-snp",
            VmKind::Plain => "plain",
        }
    }

    /// Whether the guest's memory is encrypted (and virtio must go through bounce buffers).
    pub fn confidential(self) -> bool {
        self != VmKind::Plain
    }
}

/// `accel` in `[vm]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    Kvm,
    Tcg,
    /// KVM when `/dev/kvm` can be opened read-write, else TCG.
    Auto,
}

/// `[vm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    pub kind: VmKind,
    /// The QEMU binary (`qemu-system-x86_64`, 10.1 or later for TDX).
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// CPU model; default: `host` (tdx, plain with kvm), `EPYC-v4` (sev-snp), `max` (tcg).
    pub cpu: Option<String>,
    /// `kvm`, `tcg` or `auto`; tdx and sev-snp need `kvm` (the default for them).
    pub accel: Option<AccelChoice>,
    /// The guest's serial console is written here (`-serial file:PATH`).
    pub serial_log: PathBuf,
}

fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}

/// `[image]`: what is booted directly (`-kernel/-initrd/-append`) and the root disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel command line; exactly one of `cmdline` and `cmdline_file`.
    pub cmdline: Option<String>,
    /// A file holding the kernel command line (trailing newlines dropped).
    pub cmdline_file: Option<PathBuf>,
    /// Root file system image, attached read-only as the first virtio disk (`/dev/vda`).
    pub rootfs: PathBuf,
    /// Firmware for `-bios`: TDVF for tdx, the AmdSev OVMF build for sev-snp (both
    /// required); plain may omit it (QEMU's default BIOS).
    pub firmware: Option<PathBuf>,
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model disk image (dm-verity), attached read-only as the second virtio disk (`/dev/vdb`).
    pub disk: PathBuf,
}

/// `[network]`: QEMU user networking; each forward listens on the host's loopback only
/// (the public side is the relay).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// The guest's HTTPS (RA-TLS) port.
    #[serde(default = "default_https_guest_port")]
    pub https_guest_port: u16,
    /// Host loopback port forwarded to `https_guest_port`; the relay and the health probe
    /// connect here.
    pub https_host_port: u16,
    /// The guest's internal API port (receipt collection), forwarded when both are set.
    pub internal_guest_port: Option<u16>,
    pub internal_host_port: Option<u16>,
    /// Guest CID of a `vhost-vsock-pci` device (3 or more), for host-internal calls.
    pub vsock_guest_cid: Option<u32>,
}

fn default_https_guest_port() -> u16 {
    8443
}

/// `[supervise]`: health, verification and restarts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuperviseSection {
    /// How long a freshly started guest may take to answer `/healthz` with 200.
    pub healthz_timeout_secs: u64,
    /// Limit on each socket step of one probe (connect, handshake, write, read).
    pub probe_timeout_secs: u64,
    /// Pause between probes, while waiting and while serving.
    pub health_interval_secs: u64,
    /// Consecutive failed probes of a serving guest before it is restarted.
    pub health_failures_before_restart: u32,
    /// Limit on one attestation check (connect, certificate, session evidence).
    pub verify_timeout_secs: u64,
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Restarts allowed before the agent gives up and exits non-zero (0: never restart).
    pub max_restarts: u32,
    /// A guest that served this long has its restart count and backoff reset.
    pub stable_after_secs: u64,
}

impl Default for SuperviseSection {
    fn default() -> Self {
        Self {
            healthz_timeout_secs: 900,
            probe_timeout_secs: 5,
            health_interval_secs: 5,
            health_failures_before_restart: 3,
            verify_timeout_secs: 120,
            restart_backoff_initial_ms: 1_000,
            restart_backoff_max_ms: 300_000,
            max_restarts: 10,
            stable_after_secs: 3_600,
        }
    }
}

impl SuperviseSection {
    pub fn healthz_timeout(&self) -> Duration {
        Duration::from_secs(self.healthz_timeout_secs)
    }
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs(self.probe_timeout_secs)
    }
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health_interval_secs)
    }
    pub fn verify_timeout(&self) -> Duration {
        Duration::from_secs(self.verify_timeout_secs)
    }
}

/// Where a TD's quote requests go (QEMU's `quote-generation-socket`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum QuoteGenerationSocket {
    /// The QGS on the host's vsock (usually CID 2, port 4050).
    Vsock { cid: u32, port: u32 },
    /// The QGS's unix socket.
    Unix { path: PathBuf },
}

/// `[tdx]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxSection {
    /// Without it the guest cannot get quotes (no attestation, so it never serves).
    pub quote_generation_socket: Option<QuoteGenerationSocket>,
    /// Raw 64-bit TD attributes (QEMU's `attributes`); DEBUG (bit 0) is refused.
    pub attributes: Option<u64>,
    /// TD attribute bit 28 (`sept-ve-disable`).
    pub sept_ve_disable: Option<bool>,
}

/// `[snp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnpSection {
    /// The 64-bit guest policy; bit 17 must be set, DEBUG (bit 19) is refused.
    pub policy: u64,
    pub cbitpos: u32,
    pub reduced_phys_bits: u32,
    /// Measure kernel, initrd and cmdline into the launch digest (`kernel-hashes=on`).
    pub kernel_hashes: bool,
    /// Must be true to boot with `kernel_hashes = false`: the kernel, initrd and cmdline
    /// would then be unmeasured, so no verifier could know what runs.
    pub dangerous_allow_unmeasured_kernel: bool,
    /// 32 bytes, base64: the HOST_DATA the report carries.
    pub host_data: Option<String>,
}

impl Default for SnpSection {
    fn default() -> Self {
        Self {
            policy: 0x30000,
            cbitpos: 51,
            reduced_phys_bits: 1,
            kernel_hashes: true,
            dangerous_allow_unmeasured_kernel: false,
            host_data: None,
        }
    }
}

/// SNP policy bit that must be one.
const SNP_POLICY_RESERVED_ONE: u64 = 1 << 17;
/// SNP policy DEBUG bit.
const SNP_POLICY_DEBUG: u64 = 1 << 19;
/// TD attributes DEBUG bit.
const TD_ATTRIBUTES_DEBUG: u64 = 1;

/// `[gpu]`: VFIO passthrough.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSection {
    /// PCI addresses `0000:xx:yy.z` of GPUs bound to `vfio-pci`.
    pub devices: Vec<String>,
    /// 64-bit MMIO window OVMF reserves, in MiB (large BARs: an H100 has an 80+ GiB BAR).
    #[serde(default = "default_pci_mmio64_mib")]
    pub pci_mmio64_mib: u64,
}

fn default_pci_mmio64_mib() -> u64 {
    262_144
}

/// `[simulated]`: development only (kind = "plain").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedSection {
    /// Reference values the guest's simulated TEE reports, given to it read-only by fw_cfg.
    pub measurements: PathBuf,
}

/// The VM's config file, loaded and checked.
pub type LoadedConfig = Loaded<VmConfig>;

impl Loaded<VmConfig> {
    /// The kernel command line, from `cmdline` or read from `cmdline_file` (trailing
    /// newlines dropped). Read when needed, so a config parses before its artifacts exist.
    pub fn kernel_cmdline(&self) -> Result<String> {
        let check = Checker { file: &self.file };
        let image = &self.config.image;
        let cmdline = match (&image.cmdline, &image.cmdline_file) {
            (Some(line), _) => line.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| check.bad("image.cmdline_file", format!("{}: {e}", path.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => return Err(check.bad("image.cmdline", "missing")),
        };
        check.require(!cmdline.contains('\n'), "image.cmdline", "must be one line")?;
        Ok(cmdline)
    }

    /// The artifacts QEMU reads, each with its key: all must exist before a launch.
    pub fn input_files(&self) -> Vec<(&'static str, &Path)> {
        let c = &self.config;
        let mut files = vec![
            ("image.kernel", c.image.kernel.as_path()),
            ("image.initrd", c.image.initrd.as_path()),
            ("image.rootfs", c.image.rootfs.as_path()),
            ("model.disk", c.model.disk.as_path()),
        ];
        if let Some(firmware) = &c.image.firmware {
            files.push(("image.firmware", firmware));
        }
        if let Some(simulated) = &c.simulated {
            files.push(("simulated.measurements", &simulated.measurements));
        }
        files
    }

    /// Refuses a launch when an input file is missing (QEMU's own message would not name
    /// the config key).
    pub fn check_input_files(&self) -> Result<()> {
        let check = Checker { file: &self.file };
        for (key, path) in self.input_files() {
            if !path.is_file() {
                return Err(check.bad(key, format!("{} is not a readable file", path.display())));
            }
        }
        Ok(())
    }
}

impl ConfigFile for VmConfig {
    fn resolve_paths(&mut self, base: &Path) {
        // A bare program name (no `/`) is looked up on PATH, as a shell would.
        if self.vm.qemu.components().count() > 1 {
            anchor(base, &mut self.vm.qemu);
        }
        anchor(base, &mut self.vm.serial_log);
        let image = &mut self.image;
        for path in [&mut image.kernel, &mut image.initrd, &mut image.rootfs] {
            anchor(base, path);
        }
        for path in [&mut image.cmdline_file, &mut image.firmware]
            .into_iter()
            .flatten()
        {
            anchor(base, path);
        }
        anchor(base, &mut self.model.disk);
        if let Some(simulated) = &mut self.simulated {
            anchor(base, &mut simulated.measurements);
        }
        if let Some(TdxSection {
            quote_generation_socket: Some(QuoteGenerationSocket::Unix { path }),
            ..
        }) = &mut self.tdx
        {
            anchor(base, path);
        }
        anchor_policy(base, &mut self.attestation, &mut self.collateral);
    }

    fn validate(&self, check: &Checker<'_>) -> Result<()> {
        let kind = self.vm.kind;
        check.require(self.vm.vcpus >= 1, "vm.vcpus", "must be at least 1")?;
        check.require(
            self.vm.memory_mib >= 256,
            "vm.memory_mib",
            "must be at least 256",
        )?;
        if kind.confidential() {
            check.require(
                matches!(self.vm.accel, None | Some(AccelChoice::Kvm)),
                "vm.accel",
                "a confidential guest runs only under kvm",
            )?;
            check.require(
                self.image.firmware.is_some(),
                "image.firmware",
                "required for tdx (TDVF) and sev-snp (the AmdSev OVMF build)",
            )?;
        }
        check.require(
            self.image.cmdline.is_some() != self.image.cmdline_file.is_some(),
            "image.cmdline",
            "give exactly one of `cmdline` and `cmdline_file`",
        )?;
        self.validate_paths(check)?;
        self.validate_tee_sections(check)?;
        self.validate_network(check)?;
        if let Some(gpu) = &self.gpu {
            check.require(!gpu.devices.is_empty(), "gpu.devices", "list at least one")?;
            for address in &gpu.devices {
                if !is_pci_address(address) {
                    return Err(check.bad(
                        "gpu.devices",
                        format!(
                            "{address:?} is not a PCI address like 0000:3b:00.0 (lowercase hex)"
                        ),
                    ));
                }
            }
        }
        let s = &self.supervise;
        check.require(
            s.restart_backoff_initial_ms >= 1
                && s.restart_backoff_initial_ms <= s.restart_backoff_max_ms,
            "supervise.restart_backoff_initial_ms",
            "must be at least 1 and at most restart_backoff_max_ms",
        )?;
        for (key, value) in [
            ("supervise.healthz_timeout_secs", s.healthz_timeout_secs),
            ("supervise.probe_timeout_secs", s.probe_timeout_secs),
            ("supervise.health_interval_secs", s.health_interval_secs),
            ("supervise.verify_timeout_secs", s.verify_timeout_secs),
        ] {
            check.require(value >= 1, key, "must be at least 1")?;
        }
        check.require(
            s.health_failures_before_restart >= 1,
            "supervise.health_failures_before_restart",
            "must be at least 1",
        )?;
        self.relay.validate(check)
    }
}

impl VmConfig {
    /// QEMU splits option lists at `,`; a path with one would be misread.
    fn validate_paths(&self, check: &Checker<'_>) -> Result<()> {
        let mut paths = vec![
            ("vm.serial_log", self.vm.serial_log.as_path()),
            ("image.rootfs", self.image.rootfs.as_path()),
            ("model.disk", self.model.disk.as_path()),
        ];
        if let Some(simulated) = &self.simulated {
            paths.push(("simulated.measurements", &simulated.measurements));
        }
        for (key, path) in paths {
            let text = path.to_string_lossy();
            check.require(
                !text.contains(',') && !text.contains('\n'),
                key,
                "QEMU option lists cannot carry a path with ',' or a newline; rename it",
            )?;
        }
        Ok(())
    }

    fn validate_tee_sections(&self, check: &Checker<'_>) -> Result<()> {
        let kind = self.vm.kind;
        check.require(
            self.tdx.is_none() || kind == VmKind::Tdx,
            "tdx",
            "only with vm.kind = \"tdx\"",
        )?;
        check.require(
            self.snp.is_none() || kind == VmKind::SevSnp,
            "snp",
            "only with vm.kind = \"sev-snp\"",
        )?;
        check.require(
            self.simulated.is_none() || kind == VmKind::Plain,
            "simulated",
            "simulated measurements only with vm.kind = \"plain\": a TDX or SEV-SNP guest \
             reports what its hardware measured",
        )?;
        if let Some(tdx) = &self.tdx {
            check.require(
                tdx.attributes.unwrap_or(0) & TD_ATTRIBUTES_DEBUG == 0,
                "tdx.attributes",
                "the DEBUG bit (0) lets the host read the TD's memory; refused",
            )?;
        }
        if kind == VmKind::SevSnp {
            let snp = self.snp.clone().unwrap_or_default();
            check.require(
                snp.policy & SNP_POLICY_RESERVED_ONE != 0,
                "snp.policy",
                "bit 17 must be set (the SEV-SNP ABI reserves it as one)",
            )?;
            check.require(
                snp.policy & SNP_POLICY_DEBUG == 0,
                "snp.policy",
                "the DEBUG bit (19) lets the host read the guest's memory; refused",
            )?;
            check.require(
                snp.kernel_hashes || snp.dangerous_allow_unmeasured_kernel,
                "snp.kernel_hashes",
                "false would leave kernel, initrd and cmdline unmeasured; set \
                 dangerous_allow_unmeasured_kernel = true to insist",
            )?;
            if let Some(host_data) = &snp.host_data {
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD.decode(host_data);
                check.require(
                    matches!(decoded, Ok(ref bytes) if bytes.len() == 32),
                    "snp.host_data",
                    "must be 32 bytes in base64",
                )?;
            }
        }
        Ok(())
    }

    fn validate_network(&self, check: &Checker<'_>) -> Result<()> {
        let n = &self.network;
        check.require(
            n.https_host_port != 0 && n.https_guest_port != 0,
            "network.https_host_port",
            "ports must not be 0",
        )?;
        check.require(
            n.internal_guest_port.is_some() == n.internal_host_port.is_some(),
            "network.internal_host_port",
            "give both internal_guest_port and internal_host_port, or neither",
        )?;
        check.require(
            n.internal_host_port
                .is_none_or(|p| p != 0 && p != n.https_host_port),
            "network.internal_host_port",
            "must be non-zero and differ from https_host_port",
        )?;
        check.require(
            n.vsock_guest_cid.is_none_or(|cid| cid >= 3),
            "network.vsock_guest_cid",
            "CIDs 0-2 are reserved (2 is the host); use 3 or more",
        )?;
        Ok(())
    }
}

/// `dddd:bb:dd.f` in lowercase hex, as sysfs names devices.
fn is_pci_address(text: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut parts = text.split(':');
    let (Some(domain), Some(bus), Some(rest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((device, function)) = rest.split_once('.') else {
        return false;
    };
    hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && function.len() == 1
        && matches!(function.as_bytes()[0], b'0'..=b'7')
}

#[cfg(test)]
#[path = "config_tests.rs"]
pub(crate) mod tests;
