//! NVIDIA GPU (H100, confidential-computing mode) attestation evidence: the SPDM messages
//! of a report ([`spdm`]), their verification against NVIDIA's pinned device root
//! ([`verify`]) and the comparison of measurements with reference values ([`reference`]).
//!
//! The CPU TEE's evidence covers the guest; a GPU in CC mode holds the model and the
//! prompts too, so a client needs proof of the GPU's firmware and driver as well. The
//! guest binds [`gpu_evidence_set_digest`] of its devices' evidence into its RA-TLS
//! evidence and serves the evidence itself ([`served`]).
//!
//! Reference values come from NVIDIA's reference-integrity manifests: [`rim`] reads them
//! (signed SWID tag XML) and [`xmldsig`] verifies their XML signature to NVIDIA's pinned
//! RIM root; [`rim::Rim::reference_measurements`] gives what [`compare`] takes.
pub mod reference;
pub mod rim;
pub mod served;
pub mod spdm;
pub mod verdict;
pub mod verify;
pub mod xmldsig;

pub use reference::{compare, Comparison, ReferenceMeasurement};
pub use rim::{Rim, RimKind, VerifiedRim};
pub use served::{
    gpu_evidence_set_digest, gpu_nonce_for_key, verify_served_gpu, GpuEvidenceDocument,
    ServedGpuCheck,
};
pub use spdm::GpuReport;
pub use verdict::{gpu_verdict, gpu_verdict_with_rims, GpuVerdict};
pub use verify::{
    gpu_evidence_digest, nvidia_device_roots, verify_gpu_evidence, verify_gpu_report, GpuEvidence,
    GpuFacts, GpuRoot,
};

/// The real nvtrust H100 evidence the module tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    pub const R2023: &[u8] =
        include_bytes!("../../tests/fixtures/gpu/nvtrust2023_h100_attestation_report.hex.txt");
    pub const C2023: &[u8] =
        include_bytes!("../../tests/fixtures/gpu/nvtrust2023_h100_cert_chain.pem");
    pub const R2025: &[u8] =
        include_bytes!("../../tests/fixtures/gpu/nvtrust2025_h100_attestation_report.hex.txt");
    pub const C2025: &[u8] =
        include_bytes!("../../tests/fixtures/gpu/nvtrust2025_h100_cert_chain.pem");
    /// 2024-06-01T00:00:00Z: inside every certificate's window (the latest notBefore is
    /// 2022-03-01; all notAfter are 9999-12-31).
    pub const AT: i64 = 1_717_200_000;
}
