//! The `cocoon-measure` command line: argument types (clap derive) and the commands.
//!
//! Kept in the library so the commands return the crate's typed error and the tests can
//! run them without spawning a process; `main.rs` only parses and reports.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{read_file, Error, Result};
use crate::event_log::{self, EventLog};
use crate::manifest::{self, ManifestRequest, SnpRequest, TdxRequest};
use crate::snp::{self, SnpInputs};
use crate::tdx::{self, mrtd::PageAddOrder, rtmr};

/// Predict the measurements of a Cocoon confidential VM from its boot artifacts, offline.
#[derive(Debug, Parser)]
#[command(name = "cocoon-measure", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses `args` (without the program name); for tests.
    #[cfg(test)]
    pub(crate) fn try_parse_from_args(args: &[&str]) -> Self {
        use clap::Parser as _;
        Self::parse_from(std::iter::once("cocoon-measure").chain(args.iter().copied()))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the SEV-SNP launch digest (MEASUREMENT, 96 hex digits) of a QEMU launch.
    Snp(SnpArgs),
    /// Print the TDX MRTD and the RTMR1/RTMR2 of a directly booted kernel (RTMR0 is not
    /// predicted and printed as such).
    Tdx(TdxArgs),
    /// Replay a TDX guest's TCG2 (CCEL) event log into RTMR0-3, optionally checking a quote.
    TdxReplay(ReplayArgs),
    /// Write the unsigned reference-value manifest of a release, ready for
    /// `cocoon-verify manifest sign`.
    Manifest(ManifestArgs),
}

#[derive(Debug, Args)]
pub struct SnpArgs {
    /// OVMF image with SEV metadata (for --kernel: an AmdSevX64 build with kernel hashes).
    #[arg(long, value_name = "FILE")]
    pub ovmf: PathBuf,
    /// Number of vCPUs (each adds one VMSA page to the digest).
    #[arg(long, value_name = "N")]
    pub vcpus: u32,
    /// QEMU -cpu model, e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa (sets the VMSA's CPUID signature).
    #[arg(long, value_name = "TYPE")]
    pub vcpu_type: String,
    /// Kernel booted with QEMU -kernel and kernel-hashes=on.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initrd given with -initrd (needs --kernel).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line given with -append (needs --kernel).
    #[arg(long, value_name = "CMDLINE")]
    pub append: Option<String>,
    /// SEV_FEATURES of the VMSAs, hex (QEMU's default 0x1: SNPActive).
    #[arg(long, value_name = "HEX", default_value = "0x1", value_parser = parse_hex_u64)]
    pub guest_features: u64,
    /// Print JSON ({"measurement": ...}) instead of the bare hex digest.
    #[arg(long)]
    pub json: bool,
}

/// How QEMU hands the kernel to the firmware (see `tdx::qemu_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum HeaderMode {
    /// Unchanged kernel bytes: upstream QEMU 10.0+ for confidential guests.
    #[default]
    Unpatched,
    /// Setup header patched as older TDX QEMU builds do (needs --memory).
    Legacy,
}

#[derive(Debug, Args)]
pub struct TdxBootArgs {
    /// Kernel given to QEMU with -kernel (without it RTMR1/RTMR2 are not predicted).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initrd given with -initrd.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line given with -append.
    #[arg(long, value_name = "CMDLINE", requires = "kernel")]
    pub append: Option<String>,
    /// How QEMU passes the kernel: `unpatched` (QEMU 10.0+) or `legacy` (older TDX QEMU
    /// builds patch the setup header, which makes RTMR1 depend on --memory).
    #[arg(long, value_enum, default_value_t = HeaderMode::Unpatched)]
    pub qemu_header: HeaderMode,
    /// Guest memory in MiB (QEMU -m); used by --qemu-header legacy.
    #[arg(long, value_name = "MiB")]
    pub memory: Option<u64>,
    /// Order of PAGE.ADD and MR.EXTEND: single-pass (upstream KVM) or two-pass (older TDX stacks).
    #[arg(long, value_enum, default_value_t = PageAddOrder::SinglePass)]
    pub page_add_order: PageAddOrder,
}

#[derive(Debug, Args)]
pub struct TdxArgs {
    /// TDX firmware (TDVF, e.g. an OvmfPkg/IntelTdx/IntelTdxX64.dsc build).
    #[arg(long, value_name = "FILE")]
    pub firmware: PathBuf,
    #[command(flatten)]
    pub boot: TdxBootArgs,
    /// vCPU count of the VM shape. It changes none of MRTD/RTMR1/RTMR2; it changes
    /// RTMR0 (ACPI MADT), which is not predicted.
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// Print {"mrtd":..,"rtmr0":null,"rtmr1":..,"rtmr2":..} instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The TCG2 crypto-agile event log (the ACPI CCEL log area, e.g.
    /// /sys/firmware/acpi/tables/data/CCEL).
    #[arg(long, value_name = "FILE")]
    pub event_log: PathBuf,
    /// A TDX quote whose RTMR0-3 must equal the replay (exit status 1 if not).
    #[arg(long, value_name = "FILE")]
    pub quote: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Image build output holding vmlinuz, initrd.img and cmdline.
    #[arg(long, value_name = "DIR")]
    pub image_dir: PathBuf,
    /// TDX firmware the image boots with (adds the tdx section; needs --tdx-rtmr0).
    #[arg(long, value_name = "FILE")]
    pub tdx_firmware: Option<PathBuf>,
    /// RTMR0 (96 hex digits) read from a measured boot of the same VM shape: it is not
    /// predicted, and a tdx section is refused without it.
    #[arg(long, value_name = "HEX", requires = "tdx_firmware")]
    pub tdx_rtmr0: Option<String>,
    #[command(flatten)]
    pub tdx_boot: ManifestTdxArgs,
    /// AMD SEV OVMF with kernel hashes (AmdSevX64 build) (adds the sev_snp section).
    #[arg(long, value_name = "FILE")]
    pub snp_ovmf: Option<PathBuf>,
    /// vCPU counts to publish a digest for, comma separated.
    #[arg(
        long,
        value_name = "N,..",
        value_delimiter = ',',
        requires = "snp_ovmf"
    )]
    pub snp_vcpus: Vec<u32>,
    /// vCPU types to publish a digest for, comma separated.
    #[arg(
        long,
        value_name = "TYPE,..",
        value_delimiter = ',',
        requires = "snp_ovmf"
    )]
    pub snp_vcpu_type: Vec<String>,
    /// SEV_FEATURES of the VMSAs, hex.
    #[arg(long, value_name = "HEX", default_value = "0x1", value_parser = parse_hex_u64)]
    pub snp_guest_features: u64,
    /// Release name, e.g. "cocoon-guest 0.1.0".
    #[arg(long)]
    pub image: String,
    /// Release number (clients refuse older ones with --min-release).
    #[arg(long)]
    pub release: u64,
    /// Expiry, RFC 3339, e.g. 2027-06-30T00:00:00Z.
    #[arg(long, value_name = "RFC3339")]
    pub not_after: String,
    /// SHA-384 of a measured runtime config this release may run (repeatable; none: any).
    #[arg(long, value_name = "HEX")]
    pub config_digest: Vec<String>,
    /// Where to write the manifest JSON.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ManifestTdxArgs {
    /// How QEMU passes the kernel (see `tdx --help`).
    #[arg(long = "tdx-qemu-header", value_enum, default_value_t = HeaderMode::Unpatched)]
    pub qemu_header: HeaderMode,
    /// Guest memory in MiB, for --tdx-qemu-header legacy.
    #[arg(long = "tdx-memory", value_name = "MiB")]
    pub memory: Option<u64>,
    /// PAGE.ADD/MR.EXTEND order (see `tdx --help`).
    #[arg(long = "tdx-page-add-order", value_enum, default_value_t = PageAddOrder::SinglePass)]
    pub page_add_order: PageAddOrder,
}

fn parse_hex_u64(text: &str) -> std::result::Result<u64, String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|e| format!("'{text}' is not a hex u64: {e}"))
}

fn kernel_header(mode: HeaderMode, memory_mib: Option<u64>) -> Result<rtmr::KernelHeader> {
    match (mode, memory_mib) {
        (HeaderMode::Unpatched, _) => Ok(rtmr::KernelHeader::Unpatched),
        (HeaderMode::Legacy, Some(mib)) => mib
            .checked_mul(1 << 20)
            .map(|memory| rtmr::KernelHeader::LegacyPatched { memory })
            .ok_or_else(|| Error::Usage(format!("--memory {mib} MiB is too large"))),
        (HeaderMode::Legacy, None) => Err(Error::Usage(
            "the legacy QEMU header patch depends on the guest memory: give --memory MiB".into(),
        )),
    }
}

/// What a command prints, and whether it succeeded.
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Snp(a) => snp_command(a),
        Command::Tdx(a) => tdx_command(a),
        Command::TdxReplay(a) => replay_command(a),
        Command::Manifest(a) => manifest_command(a),
    }
}

fn ok(stdout: String) -> Result<Outcome> {
    Ok(Outcome {
        stdout,
        success: true,
    })
}

fn snp_command(a: SnpArgs) -> Result<Outcome> {
    let digest = hex::encode(snp::launch_digest(&SnpInputs {
        ovmf: a.ovmf,
        vcpus: a.vcpus,
        vcpu_type: a.vcpu_type,
        guest_features: a.guest_features,
        kernel: a.kernel,
        initrd: a.initrd,
        append: a.append,
    })?);
    if a.json {
        return ok(format!(
            "{}\n",
            serde_json::json!({ "measurement": digest })
        ));
    }
    ok(format!("{digest}\n"))
}

fn tdx_command(a: TdxArgs) -> Result<Outcome> {
    let header = kernel_header(a.boot.qemu_header, a.boot.memory)?;
    let kernel = a
        .boot
        .kernel
        .as_deref()
        .map(|p| read_file("kernel", p))
        .transpose()?;
    let initrd = a
        .boot
        .initrd
        .as_deref()
        .map(|p| read_file("initrd", p))
        .transpose()?;
    let boot = kernel.as_deref().map(|kernel| rtmr::DirectBoot {
        kernel,
        initrd: initrd.as_deref(),
        cmdline: a.boot.append.as_deref().unwrap_or(""),
        header,
    });
    let (p, events) = tdx::predict(&a.firmware, boot.as_ref(), a.boot.page_add_order)?;
    if a.json {
        let json = serde_json::to_string_pretty(&p).map_err(|e| Error::Usage(e.to_string()))?;
        return ok(format!("{json}\n"));
    }
    let mut out = format!("MRTD   {}\n", p.mrtd);
    out += &format!("RTMR0  not predicted: {}", rtmr::RTMR0_NOT_PREDICTED);
    if let Some(n) = a.vcpus {
        out += &format!(" (this VM shape: {n} vCPUs)");
    }
    out += "\n";
    for (name, value) in [("RTMR1", &p.rtmr1), ("RTMR2", &p.rtmr2)] {
        match value {
            Some(v) => out += &format!("{name}  {v}\n"),
            None => {
                out += &format!(
                    "{name}  not predicted: no --kernel (a boot loader decides what is measured)\n"
                )
            }
        }
    }
    for e in &events {
        out += &format!(
            "  RTMR{} += {}  {}\n",
            e.rtmr,
            hex::encode(e.digest),
            e.description
        );
    }
    ok(out)
}

fn replay_command(a: ReplayArgs) -> Result<Outcome> {
    let log = EventLog::parse(&read_file("event log", &a.event_log)?)?;
    let replayed = log.replay();
    let quote = a
        .quote
        .as_deref()
        .map(|q: &Path| read_file("quote", q).and_then(|b| event_log::quote_rtmrs(&b)))
        .transpose()?;
    let matches: Option<Vec<bool>> =
        quote.map(|q| q.iter().zip(&replayed).map(|(a, b)| a == b).collect());
    let success = matches.as_ref().is_none_or(|m| m.iter().all(|x| *x));
    if a.json {
        let json = serde_json::json!({
            "events": log.events.len(),
            "rtmr": replayed.iter().map(hex::encode).collect::<Vec<_>>(),
            "quote_rtmr": quote.map(|q| q.iter().map(hex::encode).collect::<Vec<_>>()),
            "matches_quote": matches,
        });
        return Ok(Outcome {
            stdout: format!("{json:#}\n"),
            success,
        });
    }
    let mut out = format!("{} events\n", log.events.len());
    for (i, r) in replayed.iter().enumerate() {
        out += &format!("RTMR{i}  {}", hex::encode(r));
        match (&quote, &matches) {
            (Some(q), Some(m)) if m[i] => out += "  = quote\n",
            (Some(q), Some(_)) => {
                out += &format!("  DIFFERS from the quote's {}\n", hex::encode(q[i]))
            }
            _ => out += "\n",
        }
    }
    Ok(Outcome {
        stdout: out,
        success,
    })
}

fn manifest_command(a: ManifestArgs) -> Result<Outcome> {
    let tdx = match a.tdx_firmware {
        Some(firmware) => Some(TdxRequest {
            firmware,
            rtmr0: a.tdx_rtmr0,
            order: a.tdx_boot.page_add_order,
            header: kernel_header(a.tdx_boot.qemu_header, a.tdx_boot.memory)?,
        }),
        None => None,
    };
    let snp = a.snp_ovmf.map(|ovmf| SnpRequest {
        ovmf,
        vcpus: a.snp_vcpus,
        vcpu_types: a.snp_vcpu_type,
        guest_features: a.snp_guest_features,
    });
    let m = manifest::build(&ManifestRequest {
        image_dir: a.image_dir,
        tdx,
        snp,
        image: a.image,
        release: a.release,
        not_after: a.not_after,
        config_digests: a.config_digest,
    })?;
    let mut json = m.to_json()?;
    json.push(b'\n');
    std::fs::write(&a.out, json).map_err(|source| Error::Write {
        path: a.out.clone(),
        source,
    })?;
    ok(format!(
        "wrote {} (sign it with: cocoon-verify manifest sign {} --key KEY --out SIGNED)\n",
        a.out.display(),
        a.out.display()
    ))
}
