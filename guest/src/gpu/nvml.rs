//! [`GpuSystem`] through NVIDIA's NVML (`nvml-wrapper`), loaded at run time.
//!
//! Why NVML and not the kernel interfaces directly: the CC settings, the ready state and
//! the SPDM report go through the closed driver's control calls, and NVML is the stable,
//! documented interface to them (the one NVIDIA's own verifier tools use). The library
//! (`libnvidia-ml.so.1`) comes with the driver, so it is opened when `--gpu nvidia` asks
//! for it; a guest without a GPU never loads it.

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use super::{CcSettings, GpuMemory, GpuQuery, GpuQueryError, GpuSystem};

/// NVML, initialised once.
pub struct NvmlSystem {
    nvml: Nvml,
}

fn query(what: &str) -> impl Fn(NvmlError) -> GpuQueryError + '_ {
    move |e| match e {
        NvmlError::NotSupported => GpuQueryError::NotSupported(what.to_string()),
        NvmlError::FailedToLoadSymbol(symbol) => GpuQueryError::NotSupported(format!(
            "{what}: this driver's NVML lacks {symbol} (a driver older than CC support)"
        )),
        other => GpuQueryError::Failed(format!("{what}: {other}")),
    }
}

impl NvmlSystem {
    /// Loads `libnvidia-ml.so.1` and initialises it.
    pub fn open() -> GpuQuery<Self> {
        let nvml = Nvml::init().map_err(|e| {
            GpuQueryError::Failed(format!(
                "cannot load or initialise NVML (libnvidia-ml.so.1; is the NVIDIA driver \
                 installed and loaded in this VM?): {e}"
            ))
        })?;
        Ok(Self { nvml })
    }

    fn device(&self, index: u32) -> GpuQuery<nvml_wrapper::Device<'_>> {
        self.nvml
            .device_by_index(index)
            .map_err(query("nvmlDeviceGetHandleByIndex"))
    }
}

impl GpuSystem for NvmlSystem {
    fn driver_version(&self) -> GpuQuery<String> {
        self.nvml
            .sys_driver_version()
            .map_err(query("nvmlSystemGetDriverVersion"))
    }

    fn device_count(&self) -> GpuQuery<u32> {
        self.nvml
            .device_count()
            .map_err(query("nvmlDeviceGetCount"))
    }

    fn device_name(&self, index: u32) -> GpuQuery<String> {
        self.device(index)?
            .name()
            .map_err(query("nvmlDeviceGetName"))
    }

    fn cc_settings(&self) -> GpuQuery<CcSettings> {
        // The settings are system-wide; NVML's wrapper reads them through a device.
        let device = self.device(0)?;
        let what = "nvmlSystemGetConfComputeSettings";
        Ok(CcSettings {
            cc_enabled: device.is_cc_enabled().map_err(query(what))?,
            dev_tools: device.is_cc_dev_mode_enabled().map_err(query(what))?,
            protected_pcie: device
                .is_multi_gpu_protected_pcie_enabled()
                .map_err(query(what))?,
        })
    }

    fn ready_state(&self) -> GpuQuery<bool> {
        self.device(0)?
            .get_confidential_compute_state()
            .map_err(query("nvmlSystemGetConfComputeGpusReadyState"))
    }

    fn set_ready_state(&self, ready: bool) -> GpuQuery<()> {
        self.device(0)?
            .set_confidential_compute_state(ready)
            .map_err(query("nvmlSystemSetConfComputeGpusReadyState"))
    }

    fn memory(&self, index: u32) -> GpuQuery<GpuMemory> {
        let info = self
            .device(index)?
            .memory_info()
            .map_err(query("nvmlDeviceGetMemoryInfo"))?;
        Ok(GpuMemory {
            free: info.free,
            total: info.total,
        })
    }

    fn attestation_report(&self, index: u32, nonce: &[u8; 32]) -> GpuQuery<Vec<u8>> {
        let report = self
            .device(index)?
            .confidential_compute_gpu_attestation_report(*nonce)
            .map_err(query("nvmlDeviceGetConfComputeGpuAttestationReport"))?;
        Ok(report.attestation_report)
    }

    fn certificate_chain_pem(&self, index: u32) -> GpuQuery<Vec<u8>> {
        let certificate = self
            .device(index)?
            .confidential_compute_gpu_certificate()
            .map_err(query("nvmlDeviceGetConfComputeGpuCertificate"))?;
        // The attestation chain signs the report (the other is the device identity chain).
        Ok(certificate.attestation_cert_chain)
    }
}
