//! Trust anchors: the roots a [`crate::Verifier`] accepts evidence from.
//!
//! Anchors are an input, never a constant buried in the verifier (dcap-qvl's
//! `QuoteVerifier::new(root)` pattern): [`TrustAnchors::vendor`] is Intel's SGX Root CA and
//! AMD's ARKs for Milan, Genoa and Turin, pinned as data files next to this crate's code;
//! anything else, the development roots of `cocoon-attestation-dev` included, is trusted
//! only when the caller adds it. Whether evidence is "simulated" is then only a fact about
//! which anchor verified it.

use crate::gpu::{nvidia_device_roots, GpuRoot};
use crate::snp::verify::{amd_production_arks, TrustedArk};
use crate::tdx::dcap::{intel_sgx_root_ca, TdxRoot};

/// The roots a verifier trusts, per TEE.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    tdx: Vec<TdxRoot>,
    snp: Vec<TrustedArk>,
    gpu: Vec<GpuRoot>,
}

impl TrustAnchors {
    /// No anchors at all: every piece of evidence is refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// Intel's SGX Root CA (TDX DCAP), AMD's ARKs for Milan, Genoa and Turin, and
    /// NVIDIA's Device Identity CA (GPU evidence).
    pub fn vendor() -> Self {
        Self {
            tdx: vec![TdxRoot {
                der: intel_sgx_root_ca(),
                simulated: false,
            }],
            snp: amd_production_arks(),
            gpu: nvidia_device_roots(),
        }
    }

    /// Adds a TDX DCAP root (a test PKI, or a development root).
    pub fn with_tdx_root(mut self, root: TdxRoot) -> Self {
        self.tdx.push(root);
        self
    }

    /// Adds an AMD root key (a test PKI, or a development root).
    pub fn with_snp_ark(mut self, ark: TrustedArk) -> Self {
        self.snp.push(ark);
        self
    }

    /// Adds a GPU device identity root (a test PKI, or a development root).
    pub fn with_gpu_root(mut self, root: GpuRoot) -> Self {
        self.gpu.push(root);
        self
    }

    /// Adds every anchor of `other`.
    pub fn with(mut self, other: TrustAnchors) -> Self {
        self.tdx.extend(other.tdx);
        self.snp.extend(other.snp);
        self.gpu.extend(other.gpu);
        self
    }

    pub fn gpu_roots(&self) -> &[GpuRoot] {
        &self.gpu
    }

    pub fn tdx_roots(&self) -> &[TdxRoot] {
        &self.tdx
    }

    pub fn snp_arks(&self) -> &[TrustedArk] {
        &self.snp
    }

    /// True when some anchor is a development root (the caller asked for simulated
    /// evidence to be accepted).
    pub fn trusts_development_roots(&self) -> bool {
        self.tdx.iter().any(|r| r.simulated)
            || self.snp.iter().any(|a| a.simulated)
            || self.gpu.iter().any(|g| g.simulated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_anchors_are_intel_and_three_amd_products() {
        let a = TrustAnchors::vendor();
        assert_eq!(a.tdx_roots().len(), 1);
        let (_, intel) = x509_parser::parse_x509_certificate(&a.tdx_roots()[0].der).unwrap();
        assert!(intel.subject().to_string().contains("Intel SGX Root CA"));
        let products: Vec<_> = a.snp_arks().iter().map(|a| a.product).collect();
        assert_eq!(products, ["Milan", "Genoa", "Turin"]);
        assert!(!a.trusts_development_roots());
        assert!(TrustAnchors::none().tdx_roots().is_empty());
    }
}
