//! Fetching the collateral a verifier lacks, before (or between) handshakes.
//!
//! The rustls verifier is synchronous and must not wait on the network, so when a
//! handshake is refused for want of collateral, the caller fetches it here (Intel PCS or a
//! PCCS for TDX, AMD KDS for SEV-SNP reports without certificates, each through the on-disk
//! cache of `cocoon_attestation::fetch`), puts it in the [`CollateralStore`] the verifier
//! reads, and shakes hands again. What is fetched is not trusted: the verifier proves it
//! with the pinned anchors and checks its freshness at the verification time.

use std::path::PathBuf;
use std::sync::Arc;

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::fetch::{KdsCollateral, PcsCollateral, TdxCollateralFetch};
use cocoon_attestation::ratls::parse_certificate;
use cocoon_attestation::snp::SnpReport;
use cocoon_attestation::{CollateralStore, Error, Result};

/// Where collateral comes from, and the store it goes into.
#[derive(Debug)]
pub struct CollateralFetcher {
    pub pccs: String,
    pub kds: String,
    pub cache_dir: Option<PathBuf>,
    pub store: Arc<CollateralStore>,
}

impl CollateralFetcher {
    /// Fetches what the evidence in `certificate_der` needs into the store.
    pub async fn fetch_for_certificate(&self, certificate_der: &[u8]) -> Result<()> {
        let cert = parse_certificate(certificate_der)?;
        let now = unix_now();
        match cert.evidence.kind {
            EvidenceKind::Tdx => {
                let source = PcsCollateral::new(self.pccs.clone(), self.cache_dir.clone());
                let collateral = source
                    .tdx_collateral(&cert.evidence.evidence, now)
                    .await
                    .map_err(|e| {
                        Error::Collateral(format!("TDX collateral from {}: {e}", self.pccs))
                    })?;
                self.store.add_tdx(collateral)
            }
            EvidenceKind::SevSnp => {
                let report = SnpReport::parse(&cert.evidence.evidence)?;
                let kds = KdsCollateral::new(self.kds.clone(), self.cache_dir.clone());
                let collateral = kds.snp_collateral(&report, None, now).await.map_err(|e| {
                    Error::Collateral(format!("SEV-SNP certificates from {}: {e}", self.kds))
                })?;
                self.store.add_snp(collateral);
                Ok(())
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
