//! Azure confidential VMs: the HCL report's hardware side, and the evidence files Azure
//! attesters write.
//!
//! [`check_hardware`] ties an HCL report to the hardware report that was verified. The
//! rest reads the JSON evidence that Azure vTPM attesters produce (the format of
//! confidential-containers' `az-snp-vtpm` / `az-tdx-vtpm` attesters, versions 0-2: a TPM
//! quote with all 24 SHA-256 PCRs, the HCL report, and the VCEK or the TD quote), so that
//! `cocoon-verify tpm-quote` can check evidence recorded on a real Azure CVM.

use base64::Engine;
use serde::Deserialize;

use super::hcl::{HclReport, HclReportType};
use super::{verify_quote, HardwareReport, PcrValue, QuoteSignature, VerifiedQuote, SHA256_BANK};
use crate::{Error, Result};

/// Largest Azure evidence file accepted.
pub const MAX_EVIDENCE_LEN: usize = 256 * 1024;

/// Checks that the HCL report holds the verified hardware report and that its REPORTDATA
/// commits to the runtime data.
pub fn check_hardware(report: &HclReport, hardware: HardwareReport<'_>) -> Result<()> {
    match (report.report_type, hardware) {
        (HclReportType::SevSnp, HardwareReport::SevSnp(raw)) => {
            if report.hardware_report != raw {
                return Err(Error::Policy {
                    rule: "the HCL report must hold the SEV-SNP report that was verified",
                    observed: "a different report".into(),
                    expected: "the same 1184 bytes".into(),
                });
            }
            report.snp_report().map(|_| ())
        }
        (HclReportType::Tdx, HardwareReport::Tdx(body)) => {
            let td_report = crate::tdx::td_report::TdReport::parse(&report.hardware_report)?;
            td_report.check_quote_body(body)?;
            report.check_report_data(&body.report_data)
        }
        (kind, _) => Err(Error::Policy {
            rule: "the HCL report's hardware report must be of the evidence's TEE",
            observed: format!("{kind:?}"),
            expected: "the TEE the hardware evidence is from".into(),
        }),
    }
}

/// Evidence recorded on an Azure CVM.
#[derive(Debug, Clone)]
pub struct AzureEvidence {
    /// Format version (0: byte arrays, 1: hex and base64url, 2: 1 with `user-data`).
    pub version: u32,
    /// The signed `TPMS_ATTEST`.
    pub quote: Vec<u8>,
    /// The raw RSASSA-PKCS1-v1_5 SHA-256 signature.
    pub signature: Vec<u8>,
    /// SHA-256 PCRs 0-23.
    pub pcrs: Vec<Vec<u8>>,
    pub hcl_report: Vec<u8>,
    /// SEV-SNP: the VCEK (DER).
    pub vcek_der: Option<Vec<u8>>,
    /// TDX: the TD quote.
    pub td_quote: Option<Vec<u8>>,
}

/// Bytes as version 0 writes them (arrays of numbers) or version 1 (hex / base64url).
#[derive(Deserialize)]
#[serde(untagged)]
enum Blob {
    Array(Vec<u8>),
    Text(String),
}

#[derive(Deserialize)]
struct RawQuote {
    signature: Blob,
    message: Blob,
    pcrs: Vec<Blob>,
}

#[derive(Deserialize)]
struct RawEvidence {
    #[serde(default)]
    version: Option<u32>,
    #[serde(alias = "quote")]
    tpm_quote: RawQuote,
    #[serde(alias = "report")]
    hcl_report: Blob,
    #[serde(default)]
    vcek: Option<String>,
    #[serde(default)]
    td_quote: Option<Blob>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "Azure vTPM evidence",
        detail: detail.into(),
    }
}

fn hex_blob(blob: Blob, field: &str) -> Result<Vec<u8>> {
    match blob {
        Blob::Array(bytes) => Ok(bytes),
        Blob::Text(text) => hex::decode(text).map_err(|e| bad(format!("{field}: {e}"))),
    }
}

fn b64_blob(blob: Blob, field: &str) -> Result<Vec<u8>> {
    match blob {
        Blob::Array(bytes) => Ok(bytes),
        Blob::Text(text) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|e| bad(format!("{field}: {e}"))),
    }
}

impl AzureEvidence {
    /// Parses an evidence file (JSON, versions 0-2).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_EVIDENCE_LEN {
            return Err(Error::LimitExceeded {
                what: "Azure vTPM evidence length",
                actual: bytes.len(),
                limit: MAX_EVIDENCE_LEN,
            });
        }
        let raw: RawEvidence = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let version = raw.version.unwrap_or(0);
        if version > 2 {
            return Err(Error::Unsupported {
                what: "Azure vTPM evidence version",
                value: version.to_string(),
            });
        }
        let pcrs = raw
            .tpm_quote
            .pcrs
            .into_iter()
            .enumerate()
            .map(|(i, p)| hex_blob(p, &format!("pcrs[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let vcek_der = match raw.vcek {
            None => None,
            Some(text) if text.contains("-----BEGIN") => {
                let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
                    .map_err(|e| bad(format!("vcek: {e}")))?;
                Some(pem.contents)
            }
            Some(text) => Some(b64_blob(Blob::Text(text), "vcek")?),
        };
        Ok(Self {
            version,
            quote: hex_blob(raw.tpm_quote.message, "message")?,
            signature: hex_blob(raw.tpm_quote.signature, "signature")?,
            pcrs,
            hcl_report: b64_blob(raw.hcl_report, "hcl_report")?,
            vcek_der,
            td_quote: raw.td_quote.map(|q| b64_blob(q, "td_quote")).transpose()?,
        })
    }

    /// The PCR values in the shape the quote check takes: the quote's selection order
    /// (Azure quotes SHA-256 PCRs 0-23, in index order).
    pub fn pcr_values(&self) -> Result<Vec<PcrValue>> {
        let quote = super::TpmQuote::parse(&self.quote)?;
        let selected: Vec<(u16, u8)> = quote.selected().collect();
        if selected.iter().any(|(bank, _)| *bank != SHA256_BANK) {
            return Err(bad("the quote selects a bank other than SHA-256"));
        }
        selected
            .iter()
            .map(|(bank, index)| {
                let value = self
                    .pcrs
                    .get(usize::from(*index))
                    .ok_or_else(|| bad(format!("no value for quoted PCR {index}")))?;
                Ok(PcrValue {
                    bank: *bank,
                    index: *index,
                    value: value.clone(),
                })
            })
            .collect()
    }
}

/// Azure evidence whose quote and bindings verified; the hardware report itself (the
/// SEV-SNP report in [`HclReport::hardware_report`], or the TD quote) is the caller's to
/// verify to AMD's or Intel's root.
#[derive(Debug, Clone)]
pub struct CheckedAzureEvidence {
    pub hcl: HclReport,
    pub quote: VerifiedQuote,
    /// TDX: the parsed TD quote the HCL report's TDREPORT matches.
    pub td_quote: Option<crate::tdx::TdxQuote>,
}

impl AzureEvidence {
    /// Checks everything but the hardware report's own signature: the quote is signed by
    /// the AK the HCL runtime data names, over `nonce` and the given PCR values; the
    /// hardware report commits to that runtime data (TDX: the TD quote describes the
    /// HCL report's TDREPORT); the SEV-SNP report is VMPL 0 (the paravisor's).
    pub fn check(&self, nonce: &[u8]) -> Result<CheckedAzureEvidence> {
        let hcl = HclReport::parse(&self.hcl_report)?;
        let ak = hcl.runtime()?.attestation_key()?;
        let signature = QuoteSignature::rsassa_sha256(&self.signature);
        let quote = verify_quote(&ak, &self.quote, &signature, &self.pcr_values()?, nonce)?;
        let td_quote = match hcl.report_type {
            HclReportType::SevSnp => {
                let report = hcl.snp_report()?;
                if report.vmpl != 0 {
                    return Err(Error::Policy {
                        rule: "an Azure HCL report must come from VMPL 0 (the paravisor)",
                        observed: report.vmpl.to_string(),
                        expected: "0".into(),
                    });
                }
                None
            }
            HclReportType::Tdx => {
                let raw = self
                    .td_quote
                    .as_deref()
                    .ok_or_else(|| bad("TDX evidence without a td_quote"))?;
                let td_quote = crate::tdx::TdxQuote::parse(raw)?;
                check_hardware(&hcl, HardwareReport::Tdx(&td_quote.body))?;
                Some(td_quote)
            }
        };
        Ok(CheckedAzureEvidence {
            hcl,
            quote,
            td_quote,
        })
    }
}
