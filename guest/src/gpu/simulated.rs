//! The development GPU (`--gpu simulated`): answers what NVML answers on an H100 in CC
//! mode, and signs real-format SPDM reports with the development GPU PKI
//! ([`cocoon_attestation_dev::DevGpuPki`]). NOT a GPU: the engine still runs on the CPU,
//! and clients accept its evidence only with `--allow-simulated`.
//!
//! [`GpuFault`] makes it answer as a misconfigured or non-CC machine would, one fault per
//! check, so the guest's refusals are exercised end to end (`--simulated-gpu-fault`) and
//! by the unit tests.

use std::sync::atomic::{AtomicBool, Ordering};

use cocoon_attestation_dev::DevGpuPki;

use super::{CcSettings, GpuMemory, GpuQuery, GpuQueryError, GpuSystem};

/// One way the simulated GPU misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuFault {
    /// NVML cannot be loaded (no driver in the VM).
    NoDriver,
    /// The driver sees no GPU.
    NoDevice,
    /// A GPU without CC support: the CC queries answer NOT_SUPPORTED.
    CcUnsupported,
    /// CC mode off.
    CcOff,
    /// CC developer-tools mode on.
    DevTools,
    /// Protected PCIe on.
    ProtectedPcie,
    /// The report is signed for another nonce (a replayed report).
    StaleReport,
    /// The chain is another PKI's (an impostor GPU).
    ForeignChain,
    /// The ready state does not stick.
    NotReady,
}

/// 80 GiB, as on an H100 SXM.
const TOTAL_MEMORY: u64 = 80 * 1024 * 1024 * 1024;

/// The development GPU.
pub struct SimulatedGpu {
    pki: DevGpuPki,
    impostor: Option<DevGpuPki>,
    fault: Option<GpuFault>,
    ready: AtomicBool,
}

impl SimulatedGpu {
    pub fn new(fault: Option<GpuFault>) -> cocoon_attestation::Result<Self> {
        let impostor = match fault {
            Some(GpuFault::ForeignChain) => Some(DevGpuPki::from_seed(b"impostor GPU")?),
            _ => None,
        };
        Ok(Self {
            pki: DevGpuPki::dev()?,
            impostor,
            fault,
            ready: AtomicBool::new(false),
        })
    }

    fn is(&self, fault: GpuFault) -> bool {
        self.fault == Some(fault)
    }
}

impl GpuSystem for SimulatedGpu {
    fn driver_version(&self) -> GpuQuery<String> {
        if self.is(GpuFault::NoDriver) {
            return Err(GpuQueryError::Failed(
                "cannot load libnvidia-ml.so.1 (simulated: no driver)".into(),
            ));
        }
        Ok("545.00 (simulated)".into())
    }

    fn device_count(&self) -> GpuQuery<u32> {
        Ok(if self.is(GpuFault::NoDevice) { 0 } else { 1 })
    }

    fn device_name(&self, _index: u32) -> GpuQuery<String> {
        Ok("NVIDIA H100 80GB HBM3 (simulated)".into())
    }

    fn cc_settings(&self) -> GpuQuery<CcSettings> {
        if self.is(GpuFault::CcUnsupported) {
            return Err(GpuQueryError::NotSupported(
                "nvmlSystemGetConfComputeSettings".into(),
            ));
        }
        Ok(CcSettings {
            cc_enabled: !self.is(GpuFault::CcOff),
            dev_tools: self.is(GpuFault::DevTools),
            protected_pcie: self.is(GpuFault::ProtectedPcie),
        })
    }

    fn ready_state(&self) -> GpuQuery<bool> {
        Ok(self.ready.load(Ordering::SeqCst) && !self.is(GpuFault::NotReady))
    }

    fn set_ready_state(&self, ready: bool) -> GpuQuery<()> {
        self.ready.store(ready, Ordering::SeqCst);
        Ok(())
    }

    fn memory(&self, _index: u32) -> GpuQuery<GpuMemory> {
        // What a driver reports with nothing loaded: a little reserved.
        Ok(GpuMemory {
            free: TOTAL_MEMORY - 512 * 1024 * 1024,
            total: TOTAL_MEMORY,
        })
    }

    fn attestation_report(&self, _index: u32, nonce: &[u8; 32]) -> GpuQuery<Vec<u8>> {
        let mut nonce = *nonce;
        if self.is(GpuFault::StaleReport) {
            nonce[0] ^= 0xFF;
        }
        let pki = self.impostor.as_ref().unwrap_or(&self.pki);
        pki.report(&nonce)
            .map_err(|e| GpuQueryError::Failed(e.to_string()))
    }

    fn certificate_chain_pem(&self, _index: u32) -> GpuQuery<Vec<u8>> {
        let pki = self.impostor.as_ref().unwrap_or(&self.pki);
        Ok(pki.chain_pem().into_bytes())
    }
}
