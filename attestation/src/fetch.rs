//! Fetching verification collateral: Intel PCS / a PCCS through `dcap-qvl`'s collateral
//! client, AMD KDS through `reqwest`, each with an on-disk cache. Behind feature `fetch`:
//! this is the crate's only network I/O.
//!
//! The verifier core takes collateral as a value ([`crate::collateral`]) and does no I/O.
//! Cached collateral is reused only while every part of it is current (the earliest
//! `nextUpdate` of the TCB info, the QE identity and both CRLs), so a cache can make a
//! verifier faster but never make it accept stale collateral.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::collateral::{valid_until, SnpCollateral};
use crate::tdx::dcap::TdxCollateral;
use crate::{Error, Result};

/// Intel's Provisioning Certification Service.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";

/// A source of TDX collateral for a quote.
#[allow(async_fn_in_trait)]
pub trait TdxCollateralFetch {
    /// Collateral for `quote`, current at `now` (Unix seconds).
    async fn tdx_collateral(&self, quote: &[u8], now: i64) -> Result<TdxCollateral>;
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    source: String,
    fetched_at: i64,
    valid_until: i64,
    collateral: TdxCollateral,
}

/// Collateral fetched from Intel PCS or a PCCS, cached on disk.
pub struct PcsCollateral {
    url: String,
    cache_dir: Option<PathBuf>,
}

impl PcsCollateral {
    /// `url` is Intel PCS ([`INTEL_PCS_URL`]) or a PCCS base URL; `cache_dir`, when set,
    /// keeps fetched collateral until its earliest `nextUpdate`.
    pub fn new(url: impl Into<String>, cache_dir: Option<PathBuf>) -> Self {
        Self {
            url: url.into(),
            cache_dir,
        }
    }

    /// The cache file for a quote: keyed by the source and the quote's platform (FMSPC and
    /// PCK CA from the PCK certificate), so quotes from one platform share an entry.
    fn cache_path(&self, quote: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let parsed = dcap_qvl::quote::Quote::parse(quote).ok()?;
        let chain = parsed.raw_cert_chain().ok()?;
        let ext = dcap_qvl::intel::parse_pck_extension_from_pem(chain).ok()?;
        let mut h = Sha256::new();
        h.update(self.url.as_bytes());
        h.update([0]);
        h.update(ext.fmspc);
        h.update(format!("{:?}", parsed.header.tee_type).as_bytes());
        Some(dir.join(format!("tdx-{}.json", hex::encode(&h.finalize()[..16]))))
    }

    fn read_cache(&self, path: &Path, now: i64) -> Option<TdxCollateral> {
        let bytes = std::fs::read(path).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        (entry.source == self.url && now < entry.valid_until && now >= entry.fetched_at - 300)
            .then_some(entry.collateral)
    }

    fn write_cache(&self, path: &Path, collateral: &TdxCollateral, now: i64) -> Result<()> {
        let entry = CacheEntry {
            source: self.url.clone(),
            fetched_at: now,
            valid_until: valid_until(collateral)?,
            collateral: collateral.clone(),
        };
        write_cache_entry(path, &entry)
    }
}

impl TdxCollateralFetch for PcsCollateral {
    async fn tdx_collateral(&self, quote: &[u8], now: i64) -> Result<TdxCollateral> {
        let cache = self.cache_path(quote);
        if let Some(hit) = cache.as_deref().and_then(|p| self.read_cache(p, now)) {
            return Ok(hit);
        }
        let client = dcap_qvl::collateral::CollateralClient::with_default_http(self.url.clone())
            .map_err(|e| Error::Collateral(format!("{e:#}")))?;
        let collateral = client
            .fetch(quote)
            .await
            .map_err(|e| Error::Collateral(format!("fetching from {}: {e:#}", self.url)))?;
        if let Some(path) = cache {
            self.write_cache(&path, &collateral, now)?;
        }
        Ok(collateral)
    }
}

/// AMD's Key Distribution Service.
pub const AMD_KDS_URL: &str = "https://kdsintf.amd.com";

/// VCEKs and chains fetched from AMD KDS (or a mirror), cached on disk.
pub struct KdsCollateral {
    url: String,
    cache_dir: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct SnpCacheEntry {
    source: String,
    valid_until: i64,
    collateral: SnpCollateral,
}

impl KdsCollateral {
    pub fn new(url: impl Into<String>, cache_dir: Option<PathBuf>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_string(),
            cache_dir,
        }
    }

    /// The VCEK for the report's chip and REPORTED_TCB, and its product's chain.
    /// `product` names the CPU line for version 2 reports, which do not carry CPUID.
    pub async fn snp_collateral(
        &self,
        report: &crate::snp::SnpReport,
        product: Option<&str>,
        now: i64,
    ) -> Result<SnpCollateral> {
        let product = report.product().or(product).ok_or_else(|| {
            Error::Collateral(
                "the report does not name its CPU (version 2): give the product (Milan, Genoa, Turin)".into(),
            )
        })?;
        if !["Milan", "Genoa", "Turin"].contains(&product) {
            return Err(Error::Collateral(format!(
                "unknown SEV-SNP product '{product}'"
            )));
        }
        if report.signed_by_vlek() {
            return Err(Error::Collateral(
                "the report is signed with a VLEK, which KDS does not serve by chip: pass the VLEK"
                    .into(),
            ));
        }
        if report.chip_id_masked() {
            return Err(Error::Collateral(
                "the report masks CHIP_ID, so its VCEK cannot be looked up".into(),
            ));
        }
        let t = report.reported_tcb;
        let (hwid, mut query) = if product == "Turin" {
            (
                hex::encode(&report.chip_id[..8]),
                format!("fmcSPL={:02}&", t.fmc.unwrap_or(0)),
            )
        } else {
            (hex::encode(report.chip_id), String::new())
        };
        query.push_str(&format!(
            "blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            t.bootloader, t.tee, t.snp, t.microcode
        ));
        let vcek_url = format!("{}/vcek/v1/{product}/{hwid}?{query}", self.url);
        let chain_url = format!("{}/vcek/v1/{product}/cert_chain", self.url);
        let cache = self.cache_dir.as_ref().map(|dir| {
            let key = Sha256::digest(format!("{}\n{vcek_url}", self.url));
            dir.join(format!("snp-{}.json", hex::encode(&key[..16])))
        });
        if let Some(hit) = cache.as_deref().and_then(|p| {
            let entry: SnpCacheEntry = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
            (entry.source == self.url && now < entry.valid_until).then_some(entry.collateral)
        }) {
            return Ok(hit);
        }
        let vcek_der = kds_get(&vcek_url).await?;
        let chain = kds_get(&chain_url).await?;
        let collateral = SnpCollateral {
            vcek: crate::pem::certificate_pem(&vcek_der),
            cert_chain: String::from_utf8(chain).map_err(|_| {
                Error::Collateral("the KDS certificate chain is not PEM text".into())
            })?,
        };
        if let Some(path) = cache {
            let entry = SnpCacheEntry {
                source: self.url.clone(),
                valid_until: collateral.valid_until()?,
                collateral: collateral.clone(),
            };
            write_cache_entry(&path, &entry)?;
        }
        Ok(collateral)
    }

    /// AMD's CRL for a product line's VCEK (`vlek` false: `/vcek/v1/{product}/crl`) or
    /// VLEK chain (`/vlek/v1/{product}/crl`), DER, cached on disk until its nextUpdate.
    /// The bytes are not trusted here: [`crate::snp::verify::check_snp_crl`] checks the
    /// ARK's signature and the dates.
    pub async fn snp_crl(&self, product: &str, vlek: bool, now: i64) -> Result<Vec<u8>> {
        if !["Milan", "Genoa", "Turin"].contains(&product) {
            return Err(Error::Collateral(format!(
                "unknown SEV-SNP product '{product}'"
            )));
        }
        let kind = if vlek { "vlek" } else { "vcek" };
        let url = format!("{}/{kind}/v1/{product}/crl", self.url);
        let cache = self.cache_dir.as_ref().map(|dir| {
            let key = Sha256::digest(format!("{}\n{url}", self.url));
            dir.join(format!("snp-crl-{}.json", hex::encode(&key[..16])))
        });
        if let Some(hit) = cache.as_deref().and_then(|p| {
            let entry: CrlCacheEntry = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
            (entry.source == self.url && now < entry.valid_until && now >= entry.this_update - 300)
                .then(|| hex::decode(entry.crl).ok())
                .flatten()
        }) {
            return Ok(hit);
        }
        let crl = kds_get(&url).await?;
        let (_, parsed) = x509_parser::parse_x509_crl(&crl)
            .map_err(|e| Error::Collateral(format!("{url}: not a DER CRL: {e}")))?;
        let this_update = parsed.last_update().timestamp();
        let valid_until = parsed
            .next_update()
            .map(|t| t.timestamp())
            .ok_or_else(|| Error::Collateral(format!("{url}: the CRL has no nextUpdate")))?;
        if let Some(path) = cache {
            let entry = CrlCacheEntry {
                source: self.url.clone(),
                this_update,
                valid_until,
                crl: hex::encode(&crl),
            };
            write_cache_entry(&path, &entry)?;
        }
        Ok(crl)
    }
}

/// One GET from KDS (or a mirror): the body of a 2xx answer.
async fn kds_get(url: &str) -> Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Collateral(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| Error::Collateral(format!("fetching {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(Error::Collateral(format!(
            "fetching {url}: HTTP {}",
            response.status()
        )));
    }
    response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| Error::Collateral(format!("reading {url}: {e}")))
}

/// Writes a cache entry as JSON, then renames it into place (no half-written entries).
fn write_cache_entry(path: &Path, entry: &impl Serialize) -> Result<()> {
    let io = |e: std::io::Error| Error::Collateral(format!("cache {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let json = serde_json::to_vec(entry)
        .map_err(|e| Error::Collateral(format!("cache {}: {e}", path.display())))?;
    // Write then rename, so a crash never leaves a half-written entry behind.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[derive(Serialize, Deserialize)]
struct CrlCacheEntry {
    source: String,
    this_update: i64,
    valid_until: i64,
    /// The CRL, hex.
    crl: String,
}
