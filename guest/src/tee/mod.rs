//! Evidence providers: where the guest gets a signed report over its REPORTDATA, and
//! where it records its measured runtime config.
//!
//! Two duties, one trait: produce evidence (a TDX quote or an SNP report) over 64 bytes of
//! REPORTDATA, and extend the runtime measurement register that records the measured
//! config (TDX RTMR3). SEV-SNP has no guest-extendable register; there the config is
//! bound through REPORTDATA and HOST_DATA (set by the launcher, checked by the guest at
//! start), so [`EvidenceProvider::extend_config_register`] reports that nothing was
//! extended.
//!
//! Backends (chosen by `--tee`, see [`probe`]): Linux configfs-tsm for both TEEs
//! ([`configfs_tsm`]), `/dev/tdx_guest` with Intel's quote generation service
//! ([`tdx_guest`], [`qgs`]), `/dev/sev-guest` ([`sev_guest`]), RTMR3 through tsm-mr
//! ([`tsm_mr`]), all on the kernel interfaces of [`platform`] at the paths of [`paths`];
//! and, only in a build with the `simulated` feature, the development backends of
//! `simulated`. Every backend hands what the device returned to [`check_device_output`],
//! the one place that parses it, checks the TEE type and the REPORTDATA echo, and splits
//! the SEV-SNP certificate table. Simulated providers produce the real binary formats
//! from the development PKI, keep their register state the way the TDX module does, and
//! go through that same function, so the code after the device read is the same for
//! simulated and real evidence. A production image is built without the feature: it has
//! no `--tee simulated` and no code that could produce simulated evidence.

use cocoon_attestation::evidence::EvidenceKind;
use cocoon_attestation::report_data::{snp_host_data, ReportData};
use cocoon_attestation::snp::ext_report::CertTable;
use cocoon_attestation::snp::SnpReport;
use cocoon_attestation::tdx::TdxQuote;

use crate::{Error, Result};

pub mod configfs_tsm;
pub mod paths;
pub mod platform;
pub mod probe;
pub mod qgs;
pub mod sev_guest;
#[cfg(feature = "simulated")]
pub mod simulated;
mod sys;
pub mod tdx_guest;
pub mod tsm_mr;
pub mod vtpm;

pub use paths::TeePaths;
pub use platform::{Host, HostDevice, HostFs, KernelFs, Platform, RetryPolicy};
pub use probe::{select, select_on, SelectOptions, TeeChoice};
#[cfg(feature = "simulated")]
pub use simulated::{SimulatedSnpTee, SimulatedTee};

/// What extending the config register did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigRegister {
    /// The digest was extended into this TDX RTMR (index 0-3).
    TdxRtmr(u8),
    /// The TEE has no guest-extendable register (SEV-SNP): the config is bound through
    /// REPORTDATA and HOST_DATA only.
    None,
    /// A vTPM's SHA-256 PCR was extended, and the hardware's RTMR too when it has one.
    Vtpm { rtmr: Option<u8>, pcr: u8 },
}

/// Something that can produce attestation evidence over 64 bytes of report data.
pub trait EvidenceProvider: Send + Sync {
    /// What the evidence is.
    fn kind(&self) -> EvidenceKind;
    /// Evidence whose REPORTDATA is `report_data`, checked by [`check_device_output`].
    fn attest(&self, report_data: &ReportData) -> Result<Evidence>;
    /// The raw quote or report, as the TEE returned it, whose REPORTDATA is
    /// `report_data`.
    fn evidence(&self, report_data: &ReportData) -> Result<Vec<u8>> {
        Ok(self.attest(report_data)?.raw)
    }
    /// Extends the register that records the measured config with its SHA-384 digest.
    fn extend_config_register(&self, digest: &[u8; 48]) -> Result<ConfigRegister>;
    /// True for the development backends (no TEE: evidence from the public dev PKI).
    fn simulated(&self) -> bool {
        false
    }
    /// The vTPM attestation key's `TPMT_PUBLIC` that REPORTDATA must bind, when the
    /// evidence carries vTPM quotes ([`vtpm`]).
    fn vtpm_attestation_key(&self) -> Option<&[u8]> {
        None
    }
}

/// A quote or report, parsed.
#[derive(Debug, Clone)]
pub enum ParsedEvidence {
    Tdx(Box<TdxQuote>),
    SevSnp(Box<SnpReport>),
}

/// What a backend returns: the device's bytes, parsed and checked.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub kind: EvidenceKind,
    /// Exactly as the TEE returned it.
    pub raw: Vec<u8>,
    pub parsed: ParsedEvidence,
    /// SEV-SNP: the certificates the host attached (VCEK or VLEK, ASK, ARK), when the
    /// interface returns them.
    pub certificates: Option<CertTable>,
    /// A vTPM quote over the same binding ([`vtpm::VtpmTee`]).
    pub vtpm: Option<cocoon_attestation::vtpm::VtpmEvidence>,
}

/// The one post-read path of every backend, simulated included: parses what the device
/// returned as the evidence `kind` says (which checks the TEE type: a TDX quote's header
/// says 0x81, an SNP report has its own length and version), checks that REPORTDATA is
/// the `requested` one, and for SEV-SNP splits `auxblob` (the host's certificate table)
/// into typed certificates.
pub fn check_device_output(
    kind: EvidenceKind,
    raw: Vec<u8>,
    auxblob: Option<&[u8]>,
    requested: &ReportData,
) -> Result<Evidence> {
    let not_a = |what: &str, e: cocoon_attestation::Error| {
        Error::Tee(format!(
            "the {} interface returned something that is not {what}: {e}",
            kind.tee_name()
        ))
    };
    let (parsed, observed, what, certificates) = match kind {
        EvidenceKind::Tdx => {
            let quote = TdxQuote::parse(&raw).map_err(|e| not_a("a TDX quote", e))?;
            let observed = quote.body.report_data;
            (
                ParsedEvidence::Tdx(Box::new(quote)),
                observed,
                "TDX quote",
                None,
            )
        }
        EvidenceKind::SevSnp => {
            let report = SnpReport::parse(&raw).map_err(|e| not_a("an SEV-SNP report", e))?;
            let observed = report.report_data;
            let certificates = auxblob
                .map(CertTable::parse)
                .transpose()
                .map_err(|e| not_a("an SEV-SNP certificate table", e))?;
            (
                ParsedEvidence::SevSnp(Box::new(report)),
                observed,
                "SEV-SNP report",
                certificates,
            )
        }
    };
    if observed != *requested {
        return Err(Error::ReportDataMismatch {
            what,
            observed: hex::encode(observed),
            requested: hex::encode(requested),
        });
    }
    Ok(Evidence {
        kind,
        raw,
        parsed,
        certificates,
        vtpm: None,
    })
}

/// The RTMR the measured config goes into (RTMR3: reserved for the guest application;
/// firmware and kernel use RTMR0-2).
pub const CONFIG_RTMR: u8 = 3;

/// Checks, before serving, that this guest's own evidence will pass the verifier's
/// measured-config rules: on TDX the event log must replay to the quote's RTMRs (an
/// extension of RTMR3 by anyone else would make every client refuse us), on SEV-SNP
/// HOST_DATA must be what the launcher was told to set for this config. Failing here
/// gives the operator the reason at start instead of clients refusing later. With a vTPM,
/// its quote must verify over `report_data` and PCR 15 must replay from the event log.
pub fn self_check(
    evidence: &Evidence,
    report_data: &ReportData,
    config_digest: &[u8; 48],
    event_log: &[u8],
) -> Result<()> {
    match &evidence.parsed {
        ParsedEvidence::Tdx(quote) => {
            cocoon_attestation::event_log::RuntimeEventLog::from_cbor(event_log)?
                .check_tdx(&quote.body.rtmr, config_digest)?;
        }
        ParsedEvidence::SevSnp(_)
            if evidence
                .vtpm
                .as_ref()
                .is_some_and(|v| v.binding == cocoon_attestation::vtpm::AkBinding::AzureHcl) =>
        {
            // The paravisor launched the VM: HOST_DATA is its, and the config is bound
            // through the vTPM's PCR 15 (checked below).
        }
        ParsedEvidence::SevSnp(report) => {
            let expected = snp_host_data(config_digest);
            if report.host_data != expected {
                return Err(Error::Tee(format!(
                    "HOST_DATA is {} but this config needs {} (SHA-256 of the config \
                     digest): launch the VM with that HOST_DATA, or start the guest with \
                     the config it was launched for",
                    hex::encode(report.host_data),
                    hex::encode(expected)
                )));
            }
        }
    }
    if let Some(vtpm) = &evidence.vtpm {
        // A PCR 15 extended by anything but this start would make every client refuse.
        let (_, quote) = vtpm.verify(report_data)?;
        cocoon_attestation::event_log::RuntimeEventLog::from_cbor(event_log)?.check_pcrs(
            &quote,
            cocoon_attestation::vtpm::CONFIG_PCR,
            config_digest,
        )?;
    }
    Ok(())
}
