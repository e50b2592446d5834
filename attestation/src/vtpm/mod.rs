//! vTPM evidence: a TPM 2.0 quote over PCRs, with its attestation key bound to the
//! hardware report.
//!
//! Two operators need this. Cloud tenants: Azure's SEV-SNP and TDX confidential VMs
//! attest through a paravisor's vTPM, whose attestation key (AK) the hardware report
//! vouches for ([`hcl`]); the guest cannot put its own REPORTDATA in that report, but it
//! can put it in a quote. And SEV-SNP guests that want what TDX's RTMRs give, a record of
//! what the guest loaded after launch: an SVSM's vTPM has PCRs the guest extends, and a
//! quote signs them. One evidence shape covers both: the hardware report as before (the
//! payload's `evidence`), plus a [`VtpmEvidence`] whose AK is bound to that report in one
//! of two ways ([`AkBinding`]), and whose quote's qualifying data is
//! [`qualifying_data`] of the same 64-byte binding the hardware report would carry (the
//! TLS key, the config digest and, for session evidence, the nonce and TLS exporter).
//!
//! What a verifier checks ([`VtpmEvidence::verify`] and the pipeline in
//! [`crate::verifier`]): the AK is a restricted signing key; the quote is the AK's
//! signature over a `TPMS_ATTEST` of type quote; its qualifying data is the expected
//! binding; the PCR values given hash to the quote's PCR digest; the AK is the one the
//! hardware report vouches for; the PCR the guest extends with its measured config
//! replays from the runtime event log ([`crate::event_log`]); and the policy's required
//! PCRs are quoted with accepted values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::report_data::ReportData;
use crate::{Error, Result};

pub mod azure;
pub mod google;
pub mod hcl;
pub mod tpm;

pub use tpm::{AkPublic, AttestationKey, PcrSelection, QuoteSignature, TpmQuote};

/// The PCR (SHA-256 bank) a guest extends with its measured config digest where the TEE
/// has no runtime register of its own (SEV-SNP): `PCR15 := SHA-256(PCR15 || SHA-256(cfg))`.
/// 15 is the PC Client spec's last OS-controlled PCR that only a reboot resets (16 and 23
/// can be reset at locality 0).
pub const CONFIG_PCR: u8 = 15;

/// `TPM_ALG_SHA256`: the bank quotes are taken over.
pub const SHA256_BANK: u16 = 0x000B;

/// Largest number of PCR values a piece of evidence may carry (24 PCRs × 3 banks).
pub const MAX_PCR_VALUES: usize = 72;

/// How the attestation key is bound to the hardware report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AkBinding {
    /// The guest controls REPORTDATA (SEV-SNP with an SVSM vTPM, TDX, Google's TDX CVMs,
    /// the simulated vTPM): the hardware REPORTDATA is the usual binding with the AK's
    /// digest as one more bound field (`vtpm-ak`, SHA-256 of its `TPMT_PUBLIC`).
    #[serde(rename = "report-data")]
    ReportData,
    /// Azure's paravisor: REPORTDATA hashes the HCL runtime data, which names the AK
    /// (`hcl_report` carries the whole HCL report).
    #[serde(rename = "azure-hcl")]
    AzureHcl,
}

impl AkBinding {
    pub fn name(self) -> &'static str {
        match self {
            AkBinding::ReportData => "report-data",
            AkBinding::AzureHcl => "azure-hcl",
        }
    }
}

/// One PCR value the quote covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    /// `TPM_ALG_ID` of the bank (0x000B: SHA-256).
    pub bank: u16,
    pub index: u8,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A vTPM quote and what a verifier needs to check it, carried in the evidence payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtpmEvidence {
    pub binding: AkBinding,
    /// The AK's marshalled `TPMT_PUBLIC`.
    #[serde(with = "serde_bytes")]
    pub ak_public: Vec<u8>,
    /// The signed `TPMS_ATTEST`.
    #[serde(with = "serde_bytes")]
    pub quote: Vec<u8>,
    /// The `TPMT_SIGNATURE` over it.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// The values of the quoted PCRs, in the quote's selection order.
    pub pcrs: Vec<PcrValue>,
    /// [`AkBinding::AzureHcl`]: the HCL report from NV index `0x01400001`.
    #[serde(with = "serde_bytes", default, skip_serializing_if = "Option::is_none")]
    pub hcl_report: Option<Vec<u8>>,
}

/// The qualifying data a quote carries for a 64-byte binding: its SHA-256. (A TPM takes
/// at most a digest's worth of qualifying data; 32 bytes fit every TPM, 64 do not.)
pub fn qualifying_data(binding: &ReportData) -> [u8; 32] {
    Sha256::digest(binding).into()
}

/// A quote that verified: its facts, the AK, and the PCR values it covers.
#[derive(Debug, Clone)]
pub struct VerifiedQuote {
    pub quote: TpmQuote,
    pub ak: AkPublic,
    /// (bank, index) → value.
    pub pcrs: BTreeMap<(u16, u8), Vec<u8>>,
}

impl VerifiedQuote {
    /// A SHA-256-bank PCR value, when quoted.
    pub fn sha256_pcr(&self, index: u8) -> Option<&[u8]> {
        self.pcrs.get(&(SHA256_BANK, index)).map(Vec::as_slice)
    }
}

/// Checks `signature` is `ak`'s over `message`, a quote whose qualifying data is
/// `expected_extra` and whose PCR digest is over `values` (in selection order).
pub fn verify_quote(
    ak: &AkPublic,
    message: &[u8],
    signature: &QuoteSignature,
    values: &[PcrValue],
    expected_extra: &[u8],
) -> Result<VerifiedQuote> {
    let quote = TpmQuote::parse(message)?;
    signature.verify(ak, message)?;
    if quote.extra_data != expected_extra {
        return Err(Error::NonceMismatch {
            what: "TPM quote qualifying data",
            observed: hex::encode(&quote.extra_data),
            expected: hex::encode(expected_extra),
        });
    }
    if values.len() > MAX_PCR_VALUES {
        return Err(Error::LimitExceeded {
            what: "PCR values",
            actual: values.len(),
            limit: MAX_PCR_VALUES,
        });
    }
    let selected: Vec<(u16, u8)> = quote.selected().collect();
    let given: Vec<(u16, u8)> = values.iter().map(|v| (v.bank, v.index)).collect();
    if selected != given {
        return Err(Error::Policy {
            rule: "the PCR values must be those the quote selects, in its order",
            observed: format!("{given:?}"),
            expected: format!("{selected:?}"),
        });
    }
    for v in values {
        let len = tpm::bank_digest_len(v.bank)?;
        if v.value.len() != len {
            return Err(Error::Malformed {
                what: "PCR value",
                detail: format!(
                    "PCR {} ({}) has {} bytes, expected {len}",
                    v.index,
                    tpm::hash_name(v.bank),
                    v.value.len()
                ),
            });
        }
    }
    let slices: Vec<&[u8]> = values.iter().map(|v| v.value.as_slice()).collect();
    let digest = tpm::pcr_digest(signature.hash(), &slices)?;
    if digest != quote.pcr_digest {
        return Err(Error::DigestMismatch {
            what: "TPM quote PCR digest (the PCR values are not the quoted ones)",
            computed: hex::encode(&digest),
            expected: hex::encode(&quote.pcr_digest),
        });
    }
    let pcrs = values
        .iter()
        .map(|v| ((v.bank, v.index), v.value.clone()))
        .collect();
    Ok(VerifiedQuote {
        quote,
        ak: ak.clone(),
        pcrs,
    })
}

impl VtpmEvidence {
    /// Bounds a decoded payload's parts before anything is parsed: sizes, PCR count, the
    /// HCL report present exactly for the Azure binding.
    pub fn check_shape(&self) -> Result<()> {
        for (what, len) in [
            ("vTPM AK public area", self.ak_public.len()),
            ("vTPM quote", self.quote.len()),
            ("vTPM quote signature", self.signature.len()),
        ] {
            if len > tpm::MAX_STRUCTURE_LEN {
                return Err(Error::LimitExceeded {
                    what,
                    actual: len,
                    limit: tpm::MAX_STRUCTURE_LEN,
                });
            }
        }
        if self.pcrs.len() > MAX_PCR_VALUES {
            return Err(Error::LimitExceeded {
                what: "PCR values",
                actual: self.pcrs.len(),
                limit: MAX_PCR_VALUES,
            });
        }
        if (self.binding == AkBinding::AzureHcl) != self.hcl_report.is_some() {
            return Err(Error::Malformed {
                what: "vTPM evidence",
                detail: "an HCL report belongs with, and only with, binding azure-hcl".into(),
            });
        }
        Ok(())
    }

    /// Decodes and bounds-checks the parts (no signature check yet).
    pub fn attestation_key(&self) -> Result<AttestationKey> {
        AttestationKey::parse(&self.ak_public)
    }

    /// Verifies the quote against the AK it names and the expected 64-byte binding. The
    /// AK's binding to the hardware is the caller's to check ([`Self::check_hcl_binding`]
    /// or the REPORTDATA extra).
    pub fn verify(&self, binding: &ReportData) -> Result<(AttestationKey, VerifiedQuote)> {
        let ak = self.attestation_key()?;
        let signature = QuoteSignature::parse(&self.signature)?;
        let verified = verify_quote(
            &ak.key,
            &self.quote,
            &signature,
            &self.pcrs,
            &qualifying_data(binding),
        )?;
        Ok((ak, verified))
    }

    /// [`AkBinding::AzureHcl`]: the HCL report holds `hardware_report` (SEV-SNP: the very
    /// report that was verified; TDX: a TDREPORT the verified quote describes), the
    /// verified REPORTDATA commits to its runtime data, and the runtime data names this
    /// AK.
    pub fn check_hcl_binding(
        &self,
        ak: &AttestationKey,
        hardware: HardwareReport<'_>,
    ) -> Result<hcl::HclReport> {
        let bytes = self.hcl_report.as_deref().ok_or_else(|| Error::Malformed {
            what: "vTPM evidence",
            detail: "binding azure-hcl without an HCL report".into(),
        })?;
        let report = hcl::HclReport::parse(bytes)?;
        azure::check_hardware(&report, hardware)?;
        let named = report.runtime()?.attestation_key()?;
        if !same_key(&named, &ak.key) {
            return Err(Error::Policy {
                rule: "the quote's AK must be the one the HCL runtime data names (HCLAkPub)",
                observed: describe(&ak.key),
                expected: describe(&named),
            });
        }
        Ok(report)
    }
}

/// The verified hardware report an HCL report must match.
#[derive(Debug, Clone, Copy)]
pub enum HardwareReport<'a> {
    /// The raw SEV-SNP report that was verified.
    SevSnp(&'a [u8]),
    /// The body of the TDX quote that was verified.
    Tdx(&'a crate::tdx::quote::TdReportBody),
}

/// True when two AKs are the same key (RSA compared on modulus and exponent).
pub fn same_key(a: &AkPublic, b: &AkPublic) -> bool {
    let trim = tpm::strip_leading_zeros;
    match (a, b) {
        (
            AkPublic::Rsa {
                modulus: m1,
                exponent: e1,
            },
            AkPublic::Rsa {
                modulus: m2,
                exponent: e2,
            },
        ) => trim(m1) == trim(m2) && trim(e1) == trim(e2),
        _ => a == b,
    }
}

fn describe(key: &AkPublic) -> String {
    match key {
        AkPublic::Rsa { modulus, .. } => format!(
            "RSA-{} key, modulus SHA-256 {}",
            modulus.len() * 8,
            hex::encode(Sha256::digest(modulus))
        ),
        AkPublic::Ecc { curve, point } => {
            format!("{curve:?} key {}", hex::encode(Sha256::digest(point)))
        }
    }
}
