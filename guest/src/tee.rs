//! Evidence providers: where the guest gets a signed report over its REPORTDATA.
//!
//! Only the simulated backend exists so far; the Linux configfs-tsm, `/dev/tdx_guest` and
//! `/dev/sev-guest` backends plug in behind the same trait.

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::simulated::{SimulatedTdConfig, SimulatedTdx};
use cocoon_attestation::snp::dev::DevSnpPki;
use cocoon_attestation::verify::snp_host_data;
use sha2::{Digest, Sha384};

use crate::Result;

/// Something that can produce attestation evidence over 64 bytes of report data.
pub trait EvidenceProvider: Send + Sync {
    /// What the evidence is.
    fn kind(&self) -> EvidenceKind;
    /// Evidence whose REPORTDATA is `report_data`, plus the event log that explains
    /// the runtime measurements.
    fn evidence(&self, report_data: &ReportData) -> Result<(Vec<u8>, Vec<u8>)>;
}

/// TDX v4 quotes from the development DCAP PKI (public seed): for development and CI.
pub struct SimulatedTee {
    tee: SimulatedTdx,
    td: SimulatedTdConfig,
}

impl SimulatedTee {
    /// `debug` launches the simulated TD with TD_ATTRIBUTES.DEBUG set, so that
    /// verifiers' refusal of debug guests can be tested.
    pub fn new(config_digest: &[u8], debug: bool) -> Result<Self> {
        Ok(Self {
            tee: SimulatedTdx::dev()?,
            td: SimulatedTdConfig {
                config_digest: config_digest.to_vec(),
                debug,
            },
        })
    }
}

impl EvidenceProvider for SimulatedTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SimulatedTdx
    }

    fn evidence(&self, report_data: &ReportData) -> Result<(Vec<u8>, Vec<u8>)> {
        Ok((self.tee.quote(report_data, &self.td)?, Vec::new()))
    }
}

/// SEV-SNP v3 reports from the development ARK/ASK/VCEK (public seed): for development
/// and CI. HOST_DATA carries SHA-256 of the measured-config digest.
pub struct SimulatedSnpTee {
    pki: &'static DevSnpPki,
    measurement: [u8; 48],
    host_data: [u8; 32],
    debug: bool,
}

impl SimulatedSnpTee {
    pub fn new(config_digest: &[u8], debug: bool) -> Result<Self> {
        Ok(Self {
            pki: DevSnpPki::dev()?,
            measurement: Sha384::digest(b"cocoon simulated SNP MEASUREMENT").into(),
            host_data: snp_host_data(config_digest),
            debug,
        })
    }
}

impl EvidenceProvider for SimulatedSnpTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SimulatedSevSnp
    }

    fn evidence(&self, report_data: &ReportData) -> Result<(Vec<u8>, Vec<u8>)> {
        let report = self
            .pki
            .report(report_data, &self.measurement, &self.host_data, self.debug);
        Ok((report, Vec::new()))
    }
}
