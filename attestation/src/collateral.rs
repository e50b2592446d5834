//! Verification collateral as values: what a [`crate::Verifier`] checks evidence with
//! besides the anchors, and where it finds it.
//!
//! TDX quotes need Intel's TCB info, QE identity and CRLs for the quote's platform (its
//! FMSPC); SEV-SNP reports need the VCEK (or VLEK) and its ASK/ARK chain, which the guest
//! usually carries in its evidence. The TLS handshake verifier is synchronous, so the
//! verifier only ever *looks up* collateral here; fetching happens before the handshake
//! (`fetch`, behind the feature of that name) and fills a [`CollateralStore`]. Every
//! piece of collateral is proven by the anchors when it is used, so whoever filled the
//! store is not trusted, and freshness (CRL and TCB-info `nextUpdate`) is checked against
//! the verification time by the verifier, not here.

use std::path::Path;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::snp::SnpReport;
use crate::tdx::dcap::{collateral_from_json, TdxCollateral};
use crate::{Error, Result};

/// Where a verifier looks up collateral. Implementations never do network I/O (the
/// handshake verifier calls them synchronously); the development crate implements one that
/// signs fresh collateral for its own PKI.
pub trait CollateralSource: Send + Sync + std::fmt::Debug {
    /// TDX collateral candidates for a quote of the platform `fmspc`, at `now`.
    fn tdx_collateral(&self, fmspc: &[u8; 6], now: i64) -> Vec<TdxCollateral>;
    /// Certificates for an SEV-SNP report that does not carry its own.
    fn snp_collateral(&self, report: &SnpReport, now: i64) -> Vec<SnpCollateral>;
}

/// The FMSPC a TDX collateral bundle is for (from its TCB info), lowercase hex.
pub fn tdx_collateral_fmspc(c: &TdxCollateral) -> Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(&c.tcb_info).map_err(|e| Error::Malformed {
            what: "TDX collateral TCB info",
            detail: e.to_string(),
        })?;
    value["fmspc"]
        .as_str()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| Error::Malformed {
            what: "TDX collateral TCB info",
            detail: "no fmspc".into(),
        })
}

/// Collateral held in memory: loaded from bundle files, or put there by a fetcher before
/// a handshake. Shared between the handshake verifier and the code that fills it.
#[derive(Debug, Default)]
pub struct CollateralStore {
    tdx: RwLock<Vec<(String, TdxCollateral)>>,
    snp: RwLock<Vec<SnpCollateral>>,
}

impl CollateralStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds TDX collateral (kept under the FMSPC its TCB info names; replaces an entry
    /// with identical content).
    pub fn add_tdx(&self, collateral: TdxCollateral) -> Result<()> {
        let fmspc = tdx_collateral_fmspc(&collateral)?;
        if let Ok(mut all) = self.tdx.write() {
            all.retain(|(_, c)| c != &collateral);
            all.push((fmspc, collateral));
        }
        Ok(())
    }

    /// Adds the certificates for SEV-SNP reports.
    pub fn add_snp(&self, collateral: SnpCollateral) {
        if let Ok(mut all) = self.snp.write() {
            all.retain(|c| c != &collateral);
            all.push(collateral);
        }
    }

    /// Reads a TDX collateral bundle file (dcap-qvl's JSON) into the store.
    pub fn add_tdx_bundle_file(&self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::Malformed {
            what: "collateral bundle",
            detail: format!("cannot read {}: {e}", path.display()),
        })?;
        self.add_tdx(collateral_from_json(&bytes)?)
    }
}

impl CollateralSource for CollateralStore {
    fn tdx_collateral(&self, fmspc: &[u8; 6], _now: i64) -> Vec<TdxCollateral> {
        let want = hex::encode(fmspc);
        self.tdx
            .read()
            .map(|all| {
                all.iter()
                    .filter(|(f, _)| *f == want)
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn snp_collateral(&self, _report: &SnpReport, _now: i64) -> Vec<SnpCollateral> {
        self.snp.read().map(|all| all.clone()).unwrap_or_default()
    }
}

/// The earliest `nextUpdate` across the collateral's parts: after it, refetch.
pub fn valid_until(c: &TdxCollateral) -> Result<i64> {
    let bad = |detail: String| Error::Malformed {
        what: "TDX collateral",
        detail,
    };
    let mut until = i64::MAX;
    for (name, json) in [("TCB info", &c.tcb_info), ("QE identity", &c.qe_identity)] {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("{name}: {e}")))?;
        let next = value["nextUpdate"]
            .as_str()
            .ok_or_else(|| bad(format!("{name}: no nextUpdate")))?;
        let t = time::OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339)
            .map_err(|e| bad(format!("{name}: nextUpdate '{next}': {e}")))?;
        until = until.min(t.unix_timestamp());
    }
    for (name, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
        let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| bad(format!("{name}: {e}")))?;
        if let Some(next) = crl.next_update() {
            until = until.min(next.timestamp());
        }
    }
    Ok(until)
}

/// The certificates an SEV-SNP report is verified with. As a bundle file this is the JSON
/// `{"vcek": "<PEM>", "cert_chain": "<PEM: ASK then ARK>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpCollateral {
    /// The VCEK (or VLEK), PEM.
    pub vcek: String,
    /// ASK (or ASVK) and ARK, PEM.
    pub cert_chain: String,
}

impl SnpCollateral {
    /// Reads a bundle file.
    pub fn from_bundle_file(path: &Path) -> Result<Self> {
        let bad = |detail: String| Error::Malformed {
            what: "SNP collateral bundle",
            detail,
        };
        let bytes =
            std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// DER of the VCEK.
    pub fn vcek_der(&self) -> Result<Vec<u8>> {
        x509_parser::pem::parse_x509_pem(self.vcek.as_bytes())
            .map(|(_, pem)| pem.contents)
            .map_err(|e| Error::Malformed {
                what: "VCEK PEM",
                detail: e.to_string(),
            })
    }

    /// The earliest notAfter of the three certificates.
    pub fn valid_until(&self) -> Result<i64> {
        let mut until = i64::MAX;
        for pem in x509_parser::pem::Pem::iter_from_buffer(
            format!("{}{}", self.vcek, self.cert_chain).as_bytes(),
        ) {
            let pem = pem.map_err(|e| Error::Malformed {
                what: "SNP collateral PEM",
                detail: e.to_string(),
            })?;
            let cert = pem.parse_x509().map_err(|e| Error::Malformed {
                what: "SNP collateral certificate",
                detail: e.to_string(),
            })?;
            until = until.min(cert.validity().not_after.timestamp());
        }
        Ok(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLLATERAL: &[u8] =
        include_bytes!("../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");

    #[test]
    fn valid_until_is_the_earliest_next_update() {
        let c = collateral_from_json(COLLATERAL).unwrap();
        let until = valid_until(&c).unwrap();
        // The TCB info says 2025-07-19T10:16:03Z, the QE identity 10:32:27Z; a CRL expires
        // earlier still, and the earliest wins.
        assert_eq!(crate::unix_time::format_time(until), "2025-07-19T10:00:35Z");
    }
}
