//! A vTPM next to the hardware TEE: PCRs the guest extends after launch, and quotes over
//! them bound to the same 64 bytes the hardware evidence binds.
//!
//! [`VtpmTee`] wraps any [`EvidenceProvider`] (SEV-SNP through configfs-tsm or
//! `/dev/sev-guest` with an SVSM vTPM, TDX, the simulated backends) and a TPM reached
//! through [`transport`]. At start it derives the attestation key (AK: an ECC P-256
//! restricted signing key, a primary key of the endorsement hierarchy, so the same at every
//! boot of the same vTPM) and the hardware evidence binds it: the AK's `TPMT_PUBLIC` is a
//! bound field of REPORTDATA (`vtpm-ak`, see `cocoon_attestation::report_data`). For
//! every piece of evidence it asks the hardware for a report over the binding and the TPM
//! for a quote whose qualifying data is SHA-256 of the same binding, over the SHA-256 PCRs
//! the guest was told to quote. Extending the config register extends the hardware one
//! (TDX RTMR3) and PCR 15, and the runtime event log records both.
//!
//! Library: `tpm2-protocol` (pure Rust, no_std, no dependencies, by the Linux kernel's
//! TPM maintainer) marshals the commands, and the verifier reads the same structures with
//! it; the guest links no C TPM stack, and a client verifies without one.

use std::sync::Mutex;

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::vtpm::{
    qualifying_data, AkBinding, PcrValue, VtpmEvidence, CONFIG_PCR, SHA256_BANK,
};
use sha2::{Digest, Sha256};

use super::{ConfigRegister, Evidence, EvidenceProvider};
use crate::{Error, Result};

pub mod azure;
pub mod client;
pub mod transport;

pub use client::Tpm;
pub use transport::VtpmEndpoint;

/// The PCRs quoted when `--vtpm-pcrs` is not given: all 24 of the SHA-256 bank (firmware
/// 0-7, boot loader and kernel 8-14, the config 15, the rest).
pub const DEFAULT_QUOTED_PCRS: [u8; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];

/// How many times a quote is retaken when a PCR changed between the quote and the read.
const QUOTE_ATTEMPTS: usize = 3;

/// Hardware evidence plus vTPM quotes.
pub struct VtpmTee {
    hardware: Box<dyn EvidenceProvider>,
    tpm: Mutex<Tpm>,
    ak_handle: u32,
    ak_public: Vec<u8>,
    pcrs: Vec<u8>,
}

impl VtpmTee {
    /// Connects to the vTPM at `endpoint`, derives the AK, and quotes `pcrs` from now on.
    pub fn new(
        hardware: Box<dyn EvidenceProvider>,
        endpoint: &VtpmEndpoint,
        pcrs: &[u8],
    ) -> Result<Self> {
        let pcrs = quoted_pcrs(pcrs)?;
        let mut tpm = Tpm::open(endpoint)?;
        let (ak_handle, ak_public) = tpm.create_attestation_key()?;
        tracing::info!(
            vtpm = %endpoint,
            ak_sha256 = %hex::encode(Sha256::digest(&ak_public)),
            "vTPM attestation key ready"
        );
        Ok(Self {
            hardware,
            tpm: Mutex::new(tpm),
            ak_handle,
            ak_public,
            pcrs,
        })
    }

    /// A quote over `binding` and the PCR values it covers.
    fn quote(&self, binding: &ReportData) -> Result<VtpmEvidence> {
        let mut tpm = lock(&self.tpm)?;
        let key = QuotingKey {
            handle: self.ak_handle,
            public: &self.ak_public,
            binding: AkBinding::ReportData,
            hcl_report: None,
        };
        quote(&mut tpm, &key, &self.pcrs, binding)
    }
}

/// The vTPM connection, or an error if a panic poisoned its lock.
pub(crate) fn lock(tpm: &Mutex<Tpm>) -> Result<std::sync::MutexGuard<'_, Tpm>> {
    tpm.lock()
        .map_err(|_| Error::Tee("the vTPM lock is poisoned".into()))
}

/// The PCRs to quote, sorted, refusing a list without the config PCR.
pub(crate) fn quoted_pcrs(pcrs: &[u8]) -> Result<Vec<u8>> {
    let mut pcrs = pcrs.to_vec();
    pcrs.sort_unstable();
    pcrs.dedup();
    if !pcrs.contains(&CONFIG_PCR) {
        return Err(Error::Tee(format!(
            "the quoted PCRs must include PCR {CONFIG_PCR}, which records the measured config"
        )));
    }
    Ok(pcrs)
}

/// The attestation key a quote is made with, and how the hardware binds it.
pub(crate) struct QuotingKey<'a> {
    pub handle: u32,
    pub public: &'a [u8],
    pub binding: AkBinding,
    pub hcl_report: Option<&'a [u8]>,
}

/// A quote by `key` over `binding` and the SHA-256 values of `pcrs`, checked as a verifier
/// checks it; retaken when a PCR changed between the quote and the read.
pub(crate) fn quote(
    tpm: &mut Tpm,
    key: &QuotingKey<'_>,
    pcrs: &[u8],
    binding: &ReportData,
) -> Result<VtpmEvidence> {
    let qualifying = qualifying_data(binding);
    for _ in 0..QUOTE_ATTEMPTS {
        let quote = tpm.quote(key.handle, &qualifying, pcrs)?;
        let values = tpm
            .pcr_read_sha256(pcrs)?
            .into_iter()
            .map(|(index, value)| PcrValue {
                bank: SHA256_BANK,
                index,
                value,
            })
            .collect();
        let evidence = VtpmEvidence {
            binding: key.binding,
            ak_public: key.public.to_vec(),
            quote: quote.attest,
            signature: quote.signature,
            pcrs: values,
            hcl_report: key.hcl_report.map(<[u8]>::to_vec),
        };
        // The values read after the quote must be the quoted ones (a PCR extended in
        // between would make every verifier refuse): check as a verifier does.
        match evidence.verify(binding) {
            Ok(_) => return Ok(evidence),
            Err(cocoon_attestation::Error::DigestMismatch { .. }) => continue,
            Err(e) => {
                return Err(Error::Tee(format!(
                    "the vTPM's own quote does not verify: {e}"
                )))
            }
        }
    }
    Err(Error::Tee(format!(
        "PCRs kept changing between quote and read ({QUOTE_ATTEMPTS} attempts)"
    )))
}

/// Extends the config PCR with SHA-256 of the config digest.
pub(crate) fn extend_config_pcr(tpm: &Mutex<Tpm>, digest: &[u8; 48]) -> Result<()> {
    let extended: [u8; 32] = Sha256::digest(digest).into();
    lock(tpm)?.pcr_extend_sha256(CONFIG_PCR, &extended)
}

impl EvidenceProvider for VtpmTee {
    fn kind(&self) -> EvidenceKind {
        self.hardware.kind()
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let mut evidence = self.hardware.attest(report_data)?;
        evidence.vtpm = Some(self.quote(report_data)?);
        Ok(evidence)
    }

    fn extend_config_register(&self, digest: &[u8; 48]) -> Result<ConfigRegister> {
        let hardware = match self.hardware.extend_config_register(digest)? {
            ConfigRegister::TdxRtmr(r) => Some(r),
            ConfigRegister::None => None,
            ConfigRegister::Vtpm { rtmr, .. } => rtmr,
        };
        extend_config_pcr(&self.tpm, digest)?;
        Ok(ConfigRegister::Vtpm {
            rtmr: hardware,
            pcr: CONFIG_PCR,
        })
    }

    fn vtpm_attestation_key(&self) -> Option<&[u8]> {
        Some(&self.ak_public)
    }

    fn simulated(&self) -> bool {
        self.hardware.simulated()
    }
}

impl Drop for VtpmTee {
    fn drop(&mut self) {
        if let Ok(mut tpm) = self.tpm.lock() {
            let _ = tpm.flush(self.ak_handle);
        }
    }
}

#[cfg(all(test, feature = "simulated"))]
mod tests;
