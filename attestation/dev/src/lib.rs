//! Development evidence for the Cocoon appliance: NOT a TEE.
//!
//! CI and `make run` have no TDX or SEV-SNP hardware, yet must run the verifier code that
//! real evidence goes through. This crate makes real-format evidence (TDX quotes signed
//! through a development DCAP PKI, SEV-SNP reports signed through a development
//! ARK → ASK → VCEK chain) and the collateral that goes with it, all derived from the
//! public [`DEV_SEED`]. Anyone can derive these keys, so the evidence proves nothing: the
//! verifier library cannot import this crate, and a verifier trusts the development roots
//! only when a caller adds [`anchors`] to its [`TrustAnchors`] (`--allow-simulated`).
//!
//! Not published; the production guest is built without it (cargo feature `simulated`).
#![forbid(unsafe_code)]

use std::sync::Arc;

use cocoon_attestation::collateral::{CollateralSource, SnpCollateral};
use cocoon_attestation::snp::ext_report::{CertEntry, CertKind, CertTable};
use cocoon_attestation::snp::SnpReport;
use cocoon_attestation::tdx::dcap::{TdxCollateral, TdxRoot};
use cocoon_attestation::{Error, Policy, Result, TrustAnchors, Verifier};

pub mod azure;
pub mod collateral_servers;
pub mod gpu_pki;
pub mod simulated;
pub mod snp_pki;
pub mod swtpm;
pub mod tdx_pki;

pub use gpu_pki::DevGpuPki;
pub use simulated::{test_certificate, SimulatedBoot, SimulatedTdConfig, SimulatedTdx};
pub use snp_pki::DevSnpPki;
pub use tdx_pki::{DevPki, DevTdMeasurements};

/// The public seed of the development PKIs.
pub const DEV_SEED: &[u8] = b"cocoon development evidence: NOT a TEE";

/// The development roots (TDX DCAP root, SEV-SNP ARK, GPU device root), marked simulated.
pub fn anchors() -> Result<TrustAnchors> {
    Ok(TrustAnchors::none()
        .with_tdx_root(TdxRoot {
            der: DevPki::dev()?.root_der(),
            simulated: true,
        })
        .with_snp_ark(DevSnpPki::dev()?.trusted_ark())
        .with_gpu_root(DevGpuPki::dev()?.root()))
}

/// Collateral for development evidence, signed for the verification time asked about
/// (so a long-running client never sees it go stale). The TDX collateral is keyed by the
/// FMSPC of the development PCK certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevCollateral;

impl CollateralSource for DevCollateral {
    fn tdx_collateral(&self, fmspc: &[u8; 6], now: i64) -> Vec<TdxCollateral> {
        let collateral = DevPki::dev().and_then(|pki| pki.collateral(now));
        match collateral {
            Ok(c)
                if cocoon_attestation::collateral::tdx_collateral_fmspc(&c)
                    .is_ok_and(|f| f == hex::encode(fmspc)) =>
            {
                vec![c]
            }
            _ => Vec::new(),
        }
    }

    fn snp_collateral(&self, _report: &SnpReport, _now: i64) -> Vec<SnpCollateral> {
        DevSnpPki::dev()
            .map(|pki| {
                vec![SnpCollateral {
                    vcek: cocoon_attestation::ratls::certificate_pem(pki.vcek_der()),
                    cert_chain: pki.chain_pem(),
                }]
            })
            .unwrap_or_default()
    }
}

/// A verifier that trusts the vendor roots *and* the development roots, with the
/// development collateral: what `--allow-simulated` builds.
pub fn verifier(policy: Policy) -> Result<Verifier> {
    Ok(
        Verifier::new(TrustAnchors::vendor().with(anchors()?), policy)
            .with_collateral(Arc::new(DevCollateral)),
    )
}

/// The development VCEK, ASK and ARK as a host attaches them to a report (AMD's GUID
/// table), so simulated reports take the same path as real ones.
pub fn snp_cert_table(pki: &DevSnpPki) -> Result<CertTable> {
    let chain = pki.chain_pem();
    let ask = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes())
        .next()
        .and_then(|item| item.ok())
        .map(|pem| pem.contents)
        .ok_or_else(|| Error::Malformed {
            what: "SNP certificate table",
            detail: "the development ASK PEM did not decode".into(),
        })?;
    Ok(CertTable {
        entries: vec![
            CertEntry {
                kind: CertKind::Vcek,
                der: pki.vcek_der().to_vec(),
            },
            CertEntry {
                kind: CertKind::Ask,
                der: ask,
            },
            CertEntry {
                kind: CertKind::Ark,
                der: pki.trusted_ark().der,
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_table_holds_the_dev_chain() {
        let pki = DevSnpPki::dev().unwrap();
        let t = CertTable::parse(&snp_cert_table(pki).unwrap().encode()).unwrap();
        assert_eq!(t.get(CertKind::Vcek), Some(pki.vcek_der()));
        assert_eq!(t.get(CertKind::Ark), Some(pki.trusted_ark().der.as_slice()));
        let (vcek, chain) = t.vcek_and_chain().unwrap();
        assert_eq!(vcek, pki.vcek_der());
        assert_eq!(chain, pki.chain_pem());
        let mut no_ark = t.clone();
        no_ark.entries.retain(|e| e.kind != CertKind::Ark);
        let err = no_ark.vcek_and_chain().unwrap_err().to_string();
        assert!(err.contains("no ARK"), "{err}");
    }

    #[test]
    fn dev_anchors_are_marked_simulated_and_not_vendor() {
        let a = anchors().unwrap();
        assert!(a.trusts_development_roots());
        assert!(!TrustAnchors::vendor().trusts_development_roots());
    }
}
