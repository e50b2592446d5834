//! The GPU in confidential-computing mode: the checks before serving, and the evidence
//! that puts the GPU inside the client's proof.
//!
//! Why the guest checks at all: an H100/H200 passed through to a confidential VM holds
//! the model and every prompt in its memory. Unless the GPU runs in CC mode (its memory
//! encrypted from the host, its PCIe traffic through encrypted bounce buffers),
//! developer tools are off (no debugger or profiler can read its state) and, on a
//! multi-GPU board, protected PCIe is as configured, the CPU TEE's proof says nothing
//! about where the prompts actually go. So the guest runs [`GpuCheck`]s in order and
//! refuses to serve naming the first that fails; it then asks every GPU for its SPDM
//! measurement report over a nonce derived from its fresh TLS key
//! ([`cocoon_attestation::gpu::gpu_nonce_for_key`]), verifies the evidence itself as a
//! client would, binds its digest into the RA-TLS evidence, and only then sets the GPUs'
//! ready state (in CC mode the driver accepts no work before that).
//!
//! The driver is reached through [`GpuSystem`]: NVML loaded at run time ([`nvml`]), the
//! development GPU ([`simulated`], `--gpu simulated`, never in the production build), or
//! a test's fake answers.

pub mod nvml;
#[cfg(feature = "simulated")]
pub mod simulated;

use std::fmt;

use cocoon_attestation::gpu::verify::pem_chain;
use cocoon_attestation::gpu::{
    gpu_evidence_set_digest, gpu_nonce_for_key, verify_gpu_evidence, GpuEvidence,
    GpuEvidenceDocument, GpuRoot,
};
use serde::Serialize;

use crate::{Error, Result};

/// `--gpu`: where the GPU is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuChoice {
    /// No GPU: serve from the CPU (the evidence binds no GPU; clients that require one
    /// refuse this guest).
    None,
    /// NVIDIA GPUs in CC mode through NVML (libnvidia-ml.so.1, loaded at start).
    Nvidia,
    /// DANGER: NVIDIA GPUs NOT in CC mode (benchmarks on a machine without CC): the
    /// checks run and their results are logged, none stops the guest, no GPU evidence is
    /// bound (clients that require a GPU refuse this guest) and the host can read the GPU's
    /// memory. The config records `confidential: false`.
    NvidiaUnattested,
    /// A development GPU signing real-format SPDM reports with the development PKI (NOT
    /// a GPU; clients accept it only with --allow-simulated).
    #[cfg(feature = "simulated")]
    Simulated,
}

/// What the measured config says about the GPU; absent for a CPU guest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GpuRequirement {
    /// Always `nvidia` (H100/H200 CC mode).
    pub vendor: String,
    /// Whether the GPUs must be in protected-PCIe (multi-GPU CC) mode.
    pub protected_pcie: bool,
    /// Whether the GPUs must be in CC mode and attested (false only for
    /// `--gpu nvidia-unattested`).
    pub confidential: bool,
}

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuCheck {
    /// NVML loads and reports a driver version.
    Driver,
    /// At least one GPU is present.
    Device,
    /// Confidential-computing mode is on.
    CcMode,
    /// Developer-tools mode is off.
    DevTools,
    /// Protected PCIe (multi-GPU) mode is as the config says.
    ProtectedPcie,
    /// Every GPU gave an SPDM report and chain for the key's nonce that verifies.
    Evidence,
    /// The GPUs' ready state was set and reads back as ready.
    ReadyState,
}

impl GpuCheck {
    pub fn name(self) -> &'static str {
        match self {
            GpuCheck::Driver => "driver",
            GpuCheck::Device => "device",
            GpuCheck::CcMode => "cc_mode",
            GpuCheck::DevTools => "dev_tools",
            GpuCheck::ProtectedPcie => "protected_pcie",
            GpuCheck::Evidence => "evidence",
            GpuCheck::ReadyState => "ready_state",
        }
    }
}

impl fmt::Display for GpuCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a driver query failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuQueryError {
    /// The driver or device does not support the query (for the CC queries: a GPU or
    /// driver without confidential computing).
    NotSupported(String),
    /// Anything else (library missing, GPU lost, driver error).
    Failed(String),
}

impl fmt::Display for GpuQueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuQueryError::NotSupported(what) => write!(f, "not supported: {what}"),
            GpuQueryError::Failed(what) => f.write_str(what),
        }
    }
}

pub type GpuQuery<T> = std::result::Result<T, GpuQueryError>;

/// The system-wide confidential-computing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CcSettings {
    pub cc_enabled: bool,
    pub dev_tools: bool,
    pub protected_pcie: bool,
}

/// One GPU's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GpuMemory {
    pub free: u64,
    pub total: u64,
}

/// What the guest asks of the GPU driver (NVML's names in the NVML backend).
pub trait GpuSystem: Send + Sync {
    /// `nvmlSystemGetDriverVersion`.
    fn driver_version(&self) -> GpuQuery<String>;
    /// `nvmlDeviceGetCount`.
    fn device_count(&self) -> GpuQuery<u32>;
    /// `nvmlDeviceGetName`.
    fn device_name(&self, index: u32) -> GpuQuery<String>;
    /// `nvmlSystemGetConfComputeSettings`.
    fn cc_settings(&self) -> GpuQuery<CcSettings>;
    /// `nvmlSystemGetConfComputeGpusReadyState`.
    fn ready_state(&self) -> GpuQuery<bool>;
    /// `nvmlSystemSetConfComputeGpusReadyState`.
    fn set_ready_state(&self, ready: bool) -> GpuQuery<()>;
    /// `nvmlDeviceGetMemoryInfo`.
    fn memory(&self, index: u32) -> GpuQuery<GpuMemory>;
    /// `nvmlDeviceGetConfComputeGpuAttestationReport`: the SPDM request ‖ response for
    /// `nonce`.
    fn attestation_report(&self, index: u32, nonce: &[u8; 32]) -> GpuQuery<Vec<u8>>;
    /// `nvmlDeviceGetConfComputeGpuCertificate`: the attestation certificate chain, PEM.
    fn certificate_chain_pem(&self, index: u32) -> GpuQuery<Vec<u8>>;
}

/// One GPU as the checks found it.
#[derive(Debug, Clone, Serialize)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub memory: GpuMemory,
}

/// What passed the checks before the evidence: the driver, the devices, CC settings.
#[derive(Debug, Clone, Serialize)]
pub struct GpuInventory {
    pub driver_version: String,
    pub devices: Vec<GpuDevice>,
    pub cc: CcSettings,
}

impl GpuInventory {
    /// Free memory of the GPU with the least of it (what a KV cache sized per device can
    /// take).
    pub fn least_free_memory(&self) -> Option<u64> {
        self.devices.iter().map(|d| d.memory.free).min()
    }
}

fn failed(check: GpuCheck, detail: impl Into<String>) -> Error {
    Error::Gpu {
        check: check.name(),
        detail: detail.into(),
    }
}

/// Runs the checks before evidence: driver, device, CC mode, developer tools, protected
/// PCIe. A GPU or driver without confidential computing fails `cc_mode` with that said,
/// never a crash.
pub fn check_before_evidence(
    system: &dyn GpuSystem,
    required: &GpuRequirement,
) -> Result<GpuInventory> {
    let driver_version = system
        .driver_version()
        .map_err(|e| failed(GpuCheck::Driver, format!("NVML: {e}")))?;
    let count = system
        .device_count()
        .map_err(|e| failed(GpuCheck::Device, format!("listing GPUs: {e}")))?;
    if count == 0 {
        return Err(failed(
            GpuCheck::Device,
            format!("driver {driver_version} sees no GPU (is it passed through to this VM?)"),
        ));
    }
    let mut devices = Vec::new();
    for index in 0..count {
        let name = system
            .device_name(index)
            .map_err(|e| failed(GpuCheck::Device, format!("GPU {index}: name: {e}")))?;
        let memory = system
            .memory(index)
            .map_err(|e| failed(GpuCheck::Device, format!("GPU {index}: memory: {e}")))?;
        devices.push(GpuDevice {
            index,
            name,
            memory,
        });
    }
    if !required.confidential {
        // Reported, never enforced: this guest binds no GPU evidence.
        let cc = system.cc_settings().unwrap_or_else(|e| {
            tracing::warn!("GPU confidential-computing settings unreadable (CC off): {e}");
            CcSettings {
                cc_enabled: false,
                dev_tools: false,
                protected_pcie: false,
            }
        });
        tracing::warn!(
            cc_mode = on_off(cc.cc_enabled),
            dev_tools = on_off(cc.dev_tools),
            protected_pcie = on_off(cc.protected_pcie),
            "--gpu nvidia-unattested: the GPU is outside the proof; nothing is checked"
        );
        return Ok(GpuInventory {
            driver_version,
            devices,
            cc,
        });
    }
    let cc = system.cc_settings().map_err(|e| match e {
        GpuQueryError::NotSupported(what) => failed(
            GpuCheck::CcMode,
            format!(
                "confidential computing is off: the GPU or driver {driver_version} does not \
                 support CC queries ({what}); enable CC mode on the host \
                 (nvidia_gpu_tools.py --set-cc-mode on) on a CC-capable GPU (H100/H200)"
            ),
        ),
        GpuQueryError::Failed(what) => {
            failed(GpuCheck::CcMode, format!("reading the CC settings: {what}"))
        }
    })?;
    if !cc.cc_enabled {
        return Err(failed(
            GpuCheck::CcMode,
            "confidential computing is off on this system: the host can read GPU memory and \
             PCIe traffic; set CC mode on (nvidia_gpu_tools.py --set-cc-mode on) and reset the GPU",
        ));
    }
    if cc.dev_tools {
        return Err(failed(
            GpuCheck::DevTools,
            "CC developer-tools mode is on: debuggers and profilers can read GPU state; \
             set --set-cc-mode on (not devtools)",
        ));
    }
    if cc.protected_pcie != required.protected_pcie {
        return Err(failed(
            GpuCheck::ProtectedPcie,
            format!(
                "protected PCIe (multi-GPU CC) mode is {} but the config requires it {}",
                on_off(cc.protected_pcie),
                on_off(required.protected_pcie)
            ),
        ));
    }
    Ok(GpuInventory {
        driver_version,
        devices,
        cc,
    })
}

fn on_off(v: bool) -> &'static str {
    if v {
        "on"
    } else {
        "off"
    }
}

/// The GPUs' evidence for one TLS key, as served and as bound.
#[derive(Debug, Clone)]
pub struct GpuAttestation {
    /// The body of `GET /v1/attestation/gpu`.
    pub document: GpuEvidenceDocument,
    /// [`gpu_evidence_set_digest`]: what the RA-TLS evidence binds.
    pub digest: [u8; 48],
}

impl GpuAttestation {
    /// Asks every GPU of `inventory` for its report over the nonce of `spki_der` and its
    /// certificate chain, and verifies each as a client will (chain to one of `roots`,
    /// signature, nonce) at `now`, so a guest whose GPU evidence clients would refuse does
    /// not start.
    pub fn collect(
        system: &dyn GpuSystem,
        inventory: &GpuInventory,
        spki_der: &[u8],
        roots: &[GpuRoot],
        now: i64,
    ) -> Result<Self> {
        let nonce = gpu_nonce_for_key(spki_der);
        let mut devices = Vec::new();
        for device in &inventory.devices {
            let index = device.index;
            let report = system.attestation_report(index, &nonce).map_err(|e| {
                failed(
                    GpuCheck::Evidence,
                    format!("GPU {index}: attestation report: {e}"),
                )
            })?;
            let chain_pem = system.certificate_chain_pem(index).map_err(|e| {
                failed(
                    GpuCheck::Evidence,
                    format!("GPU {index}: certificate chain: {e}"),
                )
            })?;
            let chain = pem_chain(&chain_pem).map_err(|e| {
                failed(
                    GpuCheck::Evidence,
                    format!("GPU {index}: certificate chain: {e}"),
                )
            })?;
            let evidence = GpuEvidence { report, chain };
            verify_gpu_evidence(&evidence, &nonce, now, roots).map_err(|e| {
                failed(
                    GpuCheck::Evidence,
                    format!("GPU {index}: its evidence does not verify: {e}"),
                )
            })?;
            devices.push((index, evidence));
        }
        Ok(Self {
            document: GpuEvidenceDocument::new(&nonce, &devices),
            digest: gpu_evidence_set_digest(devices.iter().map(|(_, e)| e)),
        })
    }
}

/// Sets the GPUs' ready state (CC mode: the driver accepts work only after it) and reads
/// it back.
pub fn set_ready(system: &dyn GpuSystem) -> Result<()> {
    system.set_ready_state(true).map_err(|e| {
        failed(
            GpuCheck::ReadyState,
            format!("setting the ready state: {e}"),
        )
    })?;
    match system.ready_state() {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed(
            GpuCheck::ReadyState,
            "the GPUs read back as not ready after the ready state was set",
        )),
        Err(e) => Err(failed(
            GpuCheck::ReadyState,
            format!("reading the ready state back: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests;
