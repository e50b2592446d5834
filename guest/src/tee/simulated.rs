//! The development backends: real binary evidence formats signed by the development
//! PKI (public seed), for development and CI without a TEE. Compiled only with the
//! `simulated` feature (on by default for `make run` and the tests); the production image
//! is built without it, so it has no `--tee simulated` and cannot produce such evidence.
//! This is the only place in the guest that imports the development PKI.

use std::sync::Mutex;

use cocoon_attestation::event_log::rtmr_extend;
use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::snp_host_data;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation_dev::{DevSnpPki, SimulatedBoot, SimulatedTdx};

use super::{check_device_output, ConfigRegister, Evidence, EvidenceProvider, CONFIG_RTMR};
use crate::{Error, Result};

/// TDX v4 quotes from the development DCAP PKI (public seed): for development and CI.
/// Keeps RTMR3 like a TD does: zero at launch, changed only by extension.
pub struct SimulatedTee {
    tee: SimulatedTdx,
    boot: SimulatedBoot,
    rtmr3: Mutex<[u8; 48]>,
    debug: bool,
}

impl SimulatedTee {
    /// `debug` launches the simulated TD with TD_ATTRIBUTES.DEBUG set, so that
    /// verifiers' refusal of debug guests can be tested.
    pub fn new(debug: bool) -> Result<Self> {
        Ok(Self {
            tee: SimulatedTdx::dev()?,
            boot: SimulatedBoot::default(),
            rtmr3: Mutex::new([0; 48]),
            debug,
        })
    }

    /// Reports `boot`'s MRTD and RTMR0-2 (the measurements a launcher predicted).
    pub fn booted(mut self, boot: SimulatedBoot) -> Self {
        self.boot = boot;
        self
    }

    fn rtmr3(&self) -> Result<std::sync::MutexGuard<'_, [u8; 48]>> {
        self.rtmr3
            .lock()
            .map_err(|_| Error::Tee("simulated RTMR3 lock poisoned".into()))
    }
}

impl EvidenceProvider for SimulatedTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Tdx
    }

    fn simulated(&self) -> bool {
        true
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let rtmr3 = *self.rtmr3()?;
        let quote = self
            .tee
            .quote_booted(report_data, &self.boot, &rtmr3, self.debug)?;
        check_device_output(EvidenceKind::Tdx, quote, None, report_data)
    }

    fn extend_config_register(&self, digest: &[u8; 48]) -> Result<ConfigRegister> {
        let mut rtmr3 = self.rtmr3()?;
        *rtmr3 = rtmr_extend(&rtmr3, digest);
        Ok(ConfigRegister::TdxRtmr(CONFIG_RTMR))
    }
}

/// SEV-SNP v3 reports from the development ARK/ASK/VCEK (public seed): for development
/// and CI. HOST_DATA is fixed at launch, as a launcher sets it: SHA-256 of the measured
/// config digest the guest is started for.
pub struct SimulatedSnpTee {
    pki: &'static DevSnpPki,
    measurement: [u8; 48],
    host_data: [u8; 32],
    debug: bool,
    /// The development VCEK, ASK and ARK as the host's certificate table (`None`: a host
    /// that attaches none, so verifiers fetch the VCEK from a KDS).
    cert_table: Option<Vec<u8>>,
}

impl SimulatedSnpTee {
    /// `launch_config_digest` plays the launcher's choice of HOST_DATA.
    pub fn new(launch_config_digest: &[u8], debug: bool) -> Result<Self> {
        let pki = DevSnpPki::dev()?;
        Ok(Self {
            pki,
            measurement: SimulatedBoot::default().snp_measurement,
            host_data: snp_host_data(launch_config_digest),
            debug,
            cert_table: Some(cocoon_attestation_dev::snp_cert_table(pki)?.encode()),
        })
    }

    /// Reports `boot`'s launch digest as MEASUREMENT.
    pub fn booted(mut self, boot: &SimulatedBoot) -> Self {
        self.measurement = boot.snp_measurement;
        self
    }

    /// With `attach == false`, the evidence carries no certificate table.
    pub fn with_certificates(mut self, attach: bool) -> Self {
        if !attach {
            self.cert_table = None;
        }
        self
    }
}

impl EvidenceProvider for SimulatedSnpTee {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::SevSnp
    }

    fn simulated(&self) -> bool {
        true
    }

    fn attest(&self, report_data: &ReportData) -> Result<Evidence> {
        let report = self
            .pki
            .report(report_data, &self.measurement, &self.host_data, self.debug);
        check_device_output(
            EvidenceKind::SevSnp,
            report,
            self.cert_table.as_deref(),
            report_data,
        )
    }

    fn extend_config_register(&self, _digest: &[u8; 48]) -> Result<ConfigRegister> {
        Ok(ConfigRegister::None)
    }
}
