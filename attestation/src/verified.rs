//! The outcome of verification, in one shape for every kind of evidence.
//!
//! [`Verified`] can only be made by [`crate::Verifier`], and only when every check passed:
//! signatures to a trust anchor, collateral freshness, binding, event log and policy. No
//! field is left for the caller to fill in. [`Verdict`] is what `cocoon-verify --json`
//! prints: what the evidence *claimed* (as far as it could be read) and every check that
//! failed, with the [`Verified`] facts when there were none.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::snp::verify::SnpFacts;
use crate::snp::SnpReport;
use crate::tdx::dcap::TdxFacts;
use crate::tdx::TdxQuote;

/// The certificate an RA-TLS verification was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateFacts {
    /// SHA-256 of the certificate DER: pin exactly this certificate in an SDK.
    pub sha256: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Facts established by a verification in which every check passed.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Verified {
    /// `tdx` or `sev-snp`.
    pub tee: &'static str,
    /// True when a development anchor (not Intel or AMD) verified the evidence.
    pub simulated: bool,
    pub debug: bool,
    /// Intel's TCB status name (TDX); `None` for SEV-SNP, which has none.
    pub tcb_status: Option<String>,
    pub advisories: Vec<String>,
    /// `mrtd`, `rtmr0`..`rtmr3` (TDX) or `measurement`, `host_data` (SEV-SNP), hex.
    pub measurements: BTreeMap<&'static str, String>,
    pub report_data: String,
    /// TEE-specific facts (TDX quote version, TD attributes, FMSPC, PPID; SNP product,
    /// policy, VMPL, TCBs, CHIP_ID).
    pub details: BTreeMap<&'static str, String>,
    /// The measured runtime config digest the evidence commits to (RA-TLS evidence only).
    pub config_digest: Option<String>,
    /// Ed25519 key (hex) that signs this guest's usage receipts, bound in REPORTDATA.
    pub receipt_key: Option<String>,
    /// SHA-384 (hex) of the GPU evidence the RA-TLS evidence binds
    /// ([`crate::gpu::gpu_evidence_set_digest`]); the evidence itself is served at
    /// `GET /v1/attestation/gpu` and checked by the client against this digest.
    pub gpu_evidence_digest: Option<String>,
    /// The RA-TLS certificate the evidence was in, or bound to.
    pub certificate: Option<CertificateFacts>,
    /// The vTPM quote the evidence carried, when it carried one (every check passed).
    pub vtpm: Option<VtpmFacts>,
}

/// What a verified vTPM quote established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VtpmFacts {
    /// How the AK is bound to the hardware report (`report-data`, `azure-hcl`).
    pub binding: &'static str,
    /// SHA-256 of the AK's public key material (RSA modulus, or the EC point).
    pub ak_sha256: String,
    /// The quoted SHA-256-bank PCRs, index → hex value.
    pub pcrs: BTreeMap<u8, String>,
    /// The TPM's firmware version and clock (ms) at the quote.
    pub firmware_version: String,
    pub clock_ms: u64,
}

impl VtpmFacts {
    pub fn of(binding: &'static str, quote: &crate::vtpm::VerifiedQuote) -> Self {
        use sha2::Digest;
        let material = match &quote.ak {
            crate::vtpm::AkPublic::Rsa { modulus, .. } => modulus,
            crate::vtpm::AkPublic::Ecc { point, .. } => point,
        };
        Self {
            binding,
            ak_sha256: hex::encode(sha2::Sha256::digest(material)),
            pcrs: quote
                .pcrs
                .iter()
                .filter(|((bank, _), _)| *bank == crate::vtpm::SHA256_BANK)
                .map(|((_, index), value)| (*index, hex::encode(value)))
                .collect(),
            firmware_version: format!("{:#018x}", quote.quote.firmware_version),
            clock_ms: quote.quote.clock,
        }
    }
}

/// What the evidence claims, read before (or without) verification.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    pub debug: Option<bool>,
    pub measurements: BTreeMap<&'static str, String>,
    pub report_data: Option<String>,
    pub details: BTreeMap<&'static str, String>,
}

impl Claims {
    pub(crate) fn tdx(q: &TdxQuote) -> Self {
        let b = &q.body;
        let mut measurements = BTreeMap::from([("mrtd", hex::encode(b.mr_td))]);
        for (i, name) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().enumerate() {
            measurements.insert(name, hex::encode(b.rtmr[i]));
        }
        Self {
            debug: Some(b.debug()),
            measurements,
            report_data: Some(hex::encode(b.report_data)),
            details: BTreeMap::from([
                ("quote_version", q.header.version.to_string()),
                ("td_attributes", format!("{:#018x}", b.td_attributes_u64())),
                ("tee_tcb_svn", hex::encode(b.tee_tcb_svn)),
                ("mr_seam", hex::encode(b.mr_seam)),
            ]),
        }
    }

    pub(crate) fn snp(r: &SnpReport) -> Self {
        Self {
            debug: Some(r.policy.debug_allowed()),
            measurements: BTreeMap::from([
                ("measurement", hex::encode(r.measurement)),
                ("host_data", hex::encode(r.host_data)),
            ]),
            report_data: Some(hex::encode(r.report_data)),
            details: BTreeMap::from([
                ("report_version", r.version.to_string()),
                ("policy", format!("{:#018x}", r.policy.0)),
                ("vmpl", r.vmpl.to_string()),
                ("reported_tcb", r.reported_tcb.to_string()),
                ("launch_tcb", r.launch_tcb.to_string()),
                ("chip_id", hex::encode(r.chip_id)),
            ]),
        }
    }
}

/// Signature-level facts of verified evidence, before policy and binding.
pub(crate) enum Facts {
    Tdx(Box<TdxFacts>),
    Snp(Box<SnpFacts>),
}

impl Facts {
    pub(crate) fn tee(&self) -> &'static str {
        match self {
            Facts::Tdx(_) => "tdx",
            Facts::Snp(_) => "sev-snp",
        }
    }

    pub(crate) fn claims(&self) -> Claims {
        match self {
            Facts::Tdx(f) => {
                let mut c = Claims::tdx(&f.quote);
                c.details.insert("fmspc", hex::encode(f.fmspc));
                c.details.insert("ppid", hex::encode(&f.ppid));
                c
            }
            Facts::Snp(f) => {
                let mut c = Claims::snp(&f.report);
                c.details.insert("product", f.product.to_string());
                c.details
                    .insert("certified_tcb", f.certified_tcb.to_string());
                c
            }
        }
    }

    pub(crate) fn simulated(&self) -> bool {
        match self {
            Facts::Tdx(f) => f.simulated,
            Facts::Snp(f) => f.simulated,
        }
    }

    /// Completes the facts into a [`Verified`]: only called once every check passed.
    pub(crate) fn into_verified(
        self,
        config_digest: Option<String>,
        receipt_key: Option<String>,
        certificate: Option<CertificateFacts>,
    ) -> Verified {
        let claims = self.claims();
        let (tcb_status, advisories) = match &self {
            Facts::Tdx(f) => (Some(f.tcb_status.clone()), f.advisory_ids.clone()),
            Facts::Snp(_) => (None, Vec::new()),
        };
        Verified {
            tee: self.tee(),
            simulated: self.simulated(),
            debug: claims.debug.unwrap_or(true),
            tcb_status,
            advisories,
            measurements: claims.measurements,
            report_data: claims.report_data.unwrap_or_default(),
            details: claims.details,
            config_digest,
            receipt_key,
            gpu_evidence_digest: None,
            certificate,
            vtpm: None,
        }
    }
}

/// One verification's result for `--json`: the facts plus every failed check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `tdx` or `sev-snp`.
    pub tee: &'static str,
    /// True only when every signature and every policy rule passed.
    pub verified: bool,
    /// Intel's TCB status name (TDX); `null` for SEV-SNP, which has none.
    pub tcb_status: Option<String>,
    pub debug: Option<bool>,
    pub measurements: BTreeMap<&'static str, String>,
    pub report_data: Option<String>,
    pub advisories: Vec<String>,
    /// True when the evidence chains to a development root, not to Intel or AMD.
    pub simulated: bool,
    pub errors: Vec<String>,
    pub details: BTreeMap<&'static str, String>,
    /// The verified facts, present exactly when `verified` is true.
    #[serde(skip)]
    pub outcome: Option<Verified>,
}

impl Verdict {
    /// A refusal before any TEE evidence could be read (`tee` names what was checked).
    pub fn refused_with(tee: &'static str, errors: Vec<String>) -> Self {
        Self::refused(tee, Claims::default(), None, errors)
    }

    /// Evidence that verified.
    pub(crate) fn accepted(v: Verified) -> Self {
        Self {
            tee: v.tee,
            verified: true,
            tcb_status: v.tcb_status.clone(),
            debug: Some(v.debug),
            measurements: v.measurements.clone(),
            report_data: Some(v.report_data.clone()),
            advisories: v.advisories.clone(),
            simulated: v.simulated,
            errors: Vec::new(),
            details: v.details.clone(),
            outcome: Some(v),
        }
    }

    /// Evidence that did not verify: what it claimed, and why it was refused.
    pub(crate) fn refused(
        tee: &'static str,
        claims: Claims,
        facts: Option<&Facts>,
        errors: Vec<String>,
    ) -> Self {
        let (tcb_status, advisories, simulated) = match facts {
            Some(Facts::Tdx(f)) => (
                Some(f.tcb_status.clone()),
                f.advisory_ids.clone(),
                f.simulated,
            ),
            Some(Facts::Snp(f)) => (None, Vec::new(), f.simulated),
            None => (None, Vec::new(), false),
        };
        Self {
            tee,
            verified: false,
            tcb_status,
            debug: claims.debug,
            measurements: claims.measurements,
            report_data: claims.report_data,
            advisories,
            simulated,
            errors,
            details: claims.details,
            outcome: None,
        }
    }
}
