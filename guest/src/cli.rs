//! The command line: `cocoon-guest serve` and its flags, grouped by concern. The groups
//! that are parts of the measured config (limits, sampling defaults, accounts, billing)
//! are the config's own types, flattened in, so each flag is declared once.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Accounts, Billing, Limits, PriceTable, SamplingDefaults};
use crate::gpu::GpuChoice;
use crate::tee::TeeChoice;

#[derive(Parser)]
#[command(
    name = "cocoon-guest",
    version,
    about = "Cocoon confidential inference server (runs inside the TEE)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load the model, create the attested TLS identity and serve the OpenAI API over HTTPS.
    Serve(Box<ServeArgs>),
    /// Print the measured config (canonical JSON) and its SHA-384 digest that `serve`
    /// with the same flags would run under in the image, without serving: the model is
    /// hashed in place (no dm-verity check) and no environment variable is measured, as
    /// in the image. The digest is what a manifest's config_digests lists.
    MeasuredConfig(Box<ServeArgs>),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tee: TeeArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Names and addresses written into the certificate's subjectAltName (repeatable).
    #[arg(long = "san", default_values = ["localhost", "127.0.0.1", "::1"])]
    pub subject_alt_names: Vec<String>,
    /// How long the certificate stays valid, in hours.
    #[arg(long, default_value_t = 24 * 30)]
    pub cert_validity_hours: u32,
    #[command(flatten)]
    pub sampling: SamplingDefaults,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub prices: PriceArgs,
    #[command(flatten)]
    pub billing: Billing,
    #[command(flatten)]
    pub collector: CollectorArgs,
    #[command(flatten)]
    pub accounts: Accounts,
    #[command(flatten)]
    pub registry: crate::registry_check::RegistryArgs,
}

/// Where evidence comes from.
#[derive(clap::Args)]
pub struct TeeArgs {
    /// Evidence backend. The default, auto, uses the TEE the guest runs in and fails
    /// without one: it never falls back to simulated evidence.
    #[cfg_attr(
        feature = "simulated",
        doc = "Develop without a TEE with --tee simulated (or simulated-sev-snp; \
               simulated-vtpm and simulated-azure-sev-snp with swtpm and --vtpm)."
    )]
    #[arg(long, value_enum, default_value = "auto")]
    pub tee: TeeChoice,
    #[cfg(feature = "simulated")]
    /// Simulated backend only: set TD_ATTRIBUTES.DEBUG in the evidence (verifiers must
    /// refuse it).
    #[arg(long, hide = true)]
    pub simulated_debug: bool,
    #[cfg(feature = "simulated")]
    /// Simulated SEV-SNP only: attach no certificate table to the evidence, so verifiers
    /// must fetch the VCEK from a KDS (tests of that path).
    #[arg(long, hide = true)]
    pub simulated_snp_without_certificates: bool,
    #[cfg(feature = "simulated")]
    /// Simulated backends only: report the boot measurements of this manifest (JSON, the
    /// unsigned reference values `cocoon-measure manifest` writes) instead of fixed
    /// labelled ones: its TDX MRTD/RTMR0-2, its first SEV-SNP measurement. The dev image
    /// reads the file its launcher passes in QEMU fw_cfg.
    #[arg(long, value_name = "FILE")]
    pub simulated_measurements: Option<PathBuf>,
    /// Quote a vTPM next to the hardware evidence: /dev/tpmrm0 (an SVSM's or a cloud's
    /// vTPM), or a software TPM's command socket as unix:PATH or tcp:HOST:PORT. The guest
    /// derives an attestation key, binds it in REPORTDATA, extends PCR 15 with the
    /// measured config and puts a quote over the same binding in every piece of evidence.
    #[arg(long, value_name = "ENDPOINT")]
    pub vtpm: Option<crate::tee::vtpm::VtpmEndpoint>,
    /// The SHA-256 PCRs the vTPM quotes cover (comma-separated; must include 15).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23"
    )]
    pub vtpm_pcrs: Vec<u8>,
}

/// The GPU and what it must be.
#[derive(clap::Args)]
pub struct GpuArgs {
    /// The GPU the engine serves from: none (the CPU), or nvidia (H100/H200 in
    /// confidential-computing mode, through NVML). With a GPU the guest serves only if
    /// every check passes (driver, device, cc_mode, dev_tools, protected_pcie, evidence,
    /// ready_state; the failing one is named), and binds the GPUs' SPDM evidence into its
    /// own; the requirement is part of the measured config.
    #[cfg_attr(
        feature = "simulated",
        doc = "Develop without a GPU with --gpu simulated (development evidence, CPU engine)."
    )]
    #[arg(long, value_enum, default_value = "none")]
    pub gpu: GpuChoice,
    /// Require protected-PCIe (multi-GPU CC) mode on; without this flag it must be off.
    #[arg(long)]
    pub gpu_protected_pcie: bool,
    #[cfg(feature = "simulated")]
    /// Simulated GPU only: answer as a misconfigured machine would (tests of the checks).
    #[arg(long, value_enum, hide = true)]
    pub simulated_gpu_fault: Option<crate::gpu::simulated::GpuFault>,
}

impl GpuArgs {
    /// What the measured config records (`None`: no GPU).
    pub fn requirement(&self) -> Option<crate::gpu::GpuRequirement> {
        (self.gpu != GpuChoice::None).then(|| crate::gpu::GpuRequirement {
            vendor: "nvidia".into(),
            protected_pcie: self.gpu_protected_pcie,
            confidential: self.gpu != GpuChoice::NvidiaUnattested,
        })
    }
}

/// The model and how its bytes are pinned.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A GGUF file, or a Hugging Face model directory (config.json, tokenizer.json,
    /// safetensors).
    #[arg(
        long,
        default_value = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: PathBuf,
    /// The name clients pass as `model` (default: derived from the file name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// dm-verity root hash (hex) of the read-only disk the model is on (set by the image's
    /// boot scripts). The guest refuses to start unless the model is on a device-mapper
    /// verity device with exactly this root hash, then loads it in place (the kernel
    /// verifies every read); recorded in the measured config.
    #[arg(long, value_name = "HEX")]
    pub model_verity_root: Option<String>,
    /// Without --model-verity-root the model is copied (and hashed in the same pass) into a
    /// private directory here, and the engine loads that copy, so the bytes it runs are the
    /// bytes the config names. Must be tmpfs or ramfs (guest memory): the copy costs the
    /// model's size in memory while it loads.
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    pub model_staging_dir: PathBuf,
}

/// What tokens cost, in nanoton per million.
#[derive(clap::Args)]
pub struct PriceArgs {
    /// Price per million prompt tokens (not from the prefix cache), in nanoton.
    #[arg(long, default_value_t = 100_000_000)]
    pub price_prompt: u64,
    /// Price per million prompt tokens served from the prefix cache, in nanoton.
    #[arg(long, default_value_t = 10_000_000)]
    pub price_cached_prompt: u64,
    /// Price per million completion tokens, in nanoton.
    #[arg(long, default_value_t = 300_000_000)]
    pub price_completion: u64,
}

impl PriceArgs {
    /// The price table the measured config carries.
    pub fn table(&self) -> PriceTable {
        PriceTable {
            currency: "nanoton".into(),
            prompt_per_million: self.price_prompt,
            cached_prompt_per_million: self.price_cached_prompt,
            completion_per_million: self.price_completion,
        }
    }
}

/// The host agent's receipt collector: its token, its listener, its backlog.
#[derive(clap::Args)]
pub struct CollectorArgs {
    /// File holding the bearer token the host agent uses for /internal/ (receipt
    /// collection) on --internal-listen; it must be hard to guess (about 128 bits or more,
    /// e.g. `openssl rand -hex 32`). Without it there is no collector: no internal
    /// listener, no receipt journal (receipts go to clients only).
    #[arg(long, value_name = "FILE")]
    pub host_token_file: Option<PathBuf>,
    /// Where the internal API (receipt collection) listens, plain HTTP, with --host-token-file
    /// only: a loopback address, or in a VM one only the host reaches. Never the
    /// public port: the relay does not reach it.
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub internal_listen: SocketAddr,
    /// Receipts the host agent may leave uncollected before new requests get 503 (with
    /// --host-token-file; without a collector nothing is kept).
    #[arg(long, default_value_t = 100_000)]
    pub max_uncollected_receipts: usize,
}
