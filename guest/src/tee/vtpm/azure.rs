//! Azure's SEV-SNP confidential VMs: the hardware report comes from the paravisor, through
//! the vTPM.
//!
//! On Azure the guest runs above a paravisor (VMPL0) that asked the hardware for a report
//! at boot and keeps it, wrapped in an HCL report, in vTPM NV index `0x01400001`; the
//! report's REPORTDATA commits to the paravisor's runtime data, which names the vTPM's
//! attestation key (RSA, persistent at `0x81000003`). The guest cannot ask the hardware
//! for a report over its own REPORTDATA, so its binding (TLS key, config, session) goes
//! into the quote's qualifying data and the hardware vouches for the AK: binding
//! `azure-hcl` (`cocoon_attestation::vtpm`). The config is recorded in PCR 15 only
//! (HOST_DATA is the paravisor's, not ours).
//!
//! Azure's TDX CVMs hold a TDREPORT there instead, which becomes a quote only through
//! Azure's instance metadata service: not supported here (the verifier checks recorded
//! Azure TDX evidence with `cocoon-verify tpm-quote`).

use std::sync::Mutex;

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::snp::ext_report::CertTable;
use cocoon_attestation::snp::SnpReport;
use cocoon_attestation::vtpm::hcl::{
    HclReport, HclReportType, AZURE_AK_HANDLE, AZURE_HCL_REPORT_NV_INDEX,
};
use cocoon_attestation::vtpm::{same_key, AkBinding, AttestationKey, CONFIG_PCR};
use sha2::{Digest, Sha256};

use super::{Tpm, VtpmEndpoint};
use crate::tee::{ConfigRegister, Evidence, EvidenceProvider, ParsedEvidence};
use crate::{Error, Result};

/// Azure SEV-SNP evidence: the paravisor's HCL report and vTPM quotes by its AK.
pub struct AzureVtpmTee {
    tpm: Mutex<Tpm>,
    ak_public: Vec<u8>,
    hcl_bytes: Vec<u8>,
    report: SnpReport,
    hardware_report: Vec<u8>,
    pcrs: Vec<u8>,
    certificates: Option<CertTable>,
    simulated: bool,
}

impl AzureVtpmTee {
    /// Reads the HCL report and the AK from the vTPM at `endpoint`, and checks they belong
    /// together (the runtime data names this AK; REPORTDATA commits to the runtime data).
    pub fn new(endpoint: &VtpmEndpoint, pcrs: &[u8]) -> Result<Self> {
        Self::new_with(Tpm::open(endpoint)?, pcrs)
    }

    /// As [`Self::new`], on an open connection.
    pub fn new_with(mut tpm: Tpm, pcrs: &[u8]) -> Result<Self> {
        let hcl_bytes = tpm.nv_read(AZURE_HCL_REPORT_NV_INDEX)?;
        let not_azure = |e: cocoon_attestation::Error| {
            Error::Tee(format!(
                "vTPM NV index 0x{AZURE_HCL_REPORT_NV_INDEX:08x} does not hold an Azure HCL \
                 report: {e}"
            ))
        };
        let hcl = HclReport::parse(&hcl_bytes).map_err(not_azure)?;
        if hcl.report_type != HclReportType::SevSnp {
            return Err(Error::Tee(
                "this is an Azure TDX CVM (its HCL report holds a TDREPORT): only Azure \
                 SEV-SNP is supported by the guest"
                    .into(),
            ));
        }
        let report = hcl.snp_report().map_err(not_azure)?;
        let ak_public = tpm.read_public(AZURE_AK_HANDLE)?;
        let ak = AttestationKey::parse(&ak_public).map_err(|e| {
            Error::Tee(format!(
                "the key at 0x{AZURE_AK_HANDLE:08x} is not an AK: {e}"
            ))
        })?;
        let named = hcl
            .runtime()
            .and_then(|r| r.attestation_key())
            .map_err(not_azure)?;
        if !same_key(&named, &ak.key) {
            return Err(Error::Tee(format!(
                "the AK at 0x{AZURE_AK_HANDLE:08x} is not the one the HCL report names"
            )));
        }
        let pcrs = super::quoted_pcrs(pcrs)?;
        tracing::info!(
            vtpm = %tpm.endpoint(),
            ak_sha256 = %hex::encode(Sha256::digest(&ak_public)),
            "Azure HCL report and vTPM attestation key read"
        );
        Ok(Self {
            tpm: Mutex::new(tpm),
            ak_public,
            hardware_report: hcl.hardware_report.clone(),
            hcl_bytes,
            report,
            pcrs,
            certificates: None,
            simulated: false,
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Tpm>> {
        super::lock(&self.tpm)
    }
}

impl EvidenceProvider for AzureVtpmTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SevSnp
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let key = super::QuotingKey {
            handle: AZURE_AK_HANDLE,
            public: &self.ak_public,
            binding: AkBinding::AzureHcl,
            hcl_report: Some(&self.hcl_bytes),
        };
        let vtpm = super::quote(&mut *self.lock()?, &key, &self.pcrs, report_data)?;
        Ok(Evidence {
            kind: EvidenceKind::SevSnp,
            raw: self.hardware_report.clone(),
            parsed: ParsedEvidence::SevSnp(Box::new(self.report.clone())),
            certificates: self.certificates.clone(),
            vtpm: Some(vtpm),
        })
    }

    fn extend_config_register(&self, digest: &[u8; 48]) -> Result<ConfigRegister> {
        super::extend_config_pcr(&self.tpm, digest)?;
        Ok(ConfigRegister::Vtpm {
            rtmr: None,
            pcr: CONFIG_PCR,
        })
    }

    fn simulated(&self) -> bool {
        self.simulated
    }
}

/// Makes the vTPM at `endpoint` (swtpm) look like Azure's before the guest starts: an RSA
/// AK persistent at `0x81000003`, and an HCL report in NV `0x01400001` whose SEV-SNP report
/// (development ARK/ASK/VCEK; VMPL 0; HOST_DATA not the guest's) commits to runtime data
/// naming that AK. Then returns the guest's view of it.
#[cfg(feature = "simulated")]
pub fn simulated(endpoint: &VtpmEndpoint, pcrs: &[u8]) -> Result<AzureVtpmTee> {
    use crate::tee::SimulatedSnpTee;
    {
        let mut tpm = Tpm::open(endpoint)?;
        let public = tpm.provision_rsa_attestation_key(AZURE_AK_HANDLE)?;
        let ak = AttestationKey::parse(&public)
            .map_err(|e| Error::Tee(format!("provisioned AK: {e}")))?;
        let cocoon_attestation::vtpm::AkPublic::Rsa { modulus, exponent } = ak.key else {
            return Err(Error::Tee("provisioned AK is not RSA".into()));
        };
        let runtime = cocoon_attestation_dev::azure::runtime_data(&modulus, &exponent);
        let mut report_data = [0u8; 64];
        report_data[..32].copy_from_slice(&Sha256::digest(&runtime));
        // The paravisor's launch: its own HOST_DATA (zero), not the guest's config.
        let paravisor = SimulatedSnpTee::new(&[0u8; 48], false)?.with_certificates(true);
        let hardware = paravisor.attest(&report_data)?;
        let hcl = cocoon_attestation_dev::azure::hcl_report(
            &hardware.raw,
            cocoon_attestation_dev::azure::REPORT_TYPE_SNP,
            &runtime,
        );
        tpm.provision_nv(AZURE_HCL_REPORT_NV_INDEX, &hcl)?;
        let mut tee = AzureVtpmTee::new_with(tpm, pcrs)?;
        tee.certificates = hardware.certificates;
        tee.simulated = true;
        Ok(tee)
    }
}
