//! The simulated TDX TEE: real-format quotes from the development DCAP PKI.
//!
//! CI has no TEE, yet must run the verifier code that real evidence goes through. So the
//! simulated backend produces genuine TDX v4 quotes (header, TD 1.0 body, ECDSA quote
//! signature, QE report certification data with a PCK chain) signed through
//! [`cocoon_attestation::tdx_pki::DevPki`], derived from a public development seed. Verifiers run the
//! full DCAP verification on them against the development root; anyone can derive that
//! root, which is exactly why verifiers refuse it unless told otherwise: it shows the code
//! path works, never that a TEE exists.

use sha2::{Digest, Sha384};

use crate::tdx_pki::{DevPki, DevTdMeasurements};
use cocoon_attestation::event_log::rtmr_extend;
use cocoon_attestation::report_data::ReportData;
use cocoon_attestation::Result;

fn labelled_digest(label: &str) -> [u8; 48] {
    Sha384::digest(format!("cocoon simulated {label}").as_bytes()).into()
}

/// The boot-time registers a simulated TEE reports: what the TDX module and TDVF would
/// have measured (MRTD, RTMR0-2) and the SEV-SNP launch digest.
///
/// A real TEE measures the boot itself. The simulated one cannot, so whoever launches it
/// says what a real one would have measured: by default fixed labelled digests; for a
/// booted image, the reference values `cocoon-measure` predicted for the artifacts the
/// launcher boots (a manifest's `tdx` and first `sev_snp` measurement). Verifiers refuse
/// simulated evidence unless told otherwise, so this channel is never trusted; it lets
/// tests check a booted image against a manifest end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedBoot {
    pub mr_td: [u8; 48],
    /// RTMR0..RTMR2 (RTMR3 is the runtime register the guest extends).
    pub rtmr: [[u8; 48]; 3],
    pub snp_measurement: [u8; 48],
}

impl Default for SimulatedBoot {
    fn default() -> Self {
        Self {
            mr_td: labelled_digest("MRTD"),
            rtmr: [
                labelled_digest("RTMR0"),
                labelled_digest("RTMR1"),
                labelled_digest("RTMR2"),
            ],
            snp_measurement: Sha384::digest(b"cocoon simulated SNP MEASUREMENT").into(),
        }
    }
}

fn hex48(what: &str, value: &str) -> Result<[u8; 48]> {
    let bytes = hex::decode(value).map_err(|e| cocoon_attestation::Error::Malformed {
        what: "simulated boot measurements",
        detail: format!("{what}: {e}"),
    })?;
    bytes
        .try_into()
        .map_err(|_| cocoon_attestation::Error::Malformed {
            what: "simulated boot measurements",
            detail: format!("{what}: not 48 bytes"),
        })
}

impl SimulatedBoot {
    /// The values of a (validated, unsigned) manifest: its `tdx` registers and its first
    /// `sev_snp` measurement; what it does not name keeps the default.
    pub fn from_manifest(manifest: &cocoon_attestation::manifest::Manifest) -> Result<Self> {
        manifest.validate()?;
        let mut boot = Self::default();
        if let Some(tdx) = &manifest.tdx {
            boot.mr_td = hex48("tdx.mrtd", &tdx.mrtd)?;
            boot.rtmr = [
                hex48("tdx.rtmr0", &tdx.rtmr0)?,
                hex48("tdx.rtmr1", &tdx.rtmr1)?,
                hex48("tdx.rtmr2", &tdx.rtmr2)?,
            ];
        }
        if let Some(first) = manifest
            .sev_snp
            .as_ref()
            .and_then(|s| s.measurements.first())
        {
            boot.snp_measurement = hex48("sev_snp.measurements[0]", first)?;
        }
        Ok(boot)
    }
}

/// What a simulated TD reports about itself.
#[derive(Debug, Clone)]
pub struct SimulatedTdConfig {
    /// SHA-384 of the measured config, extended into RTMR3.
    pub config_digest: Vec<u8>,
    /// Launch the simulated TD with TD_ATTRIBUTES.DEBUG set (for policy tests).
    pub debug: bool,
}

impl SimulatedTdConfig {
    /// The runtime event log that explains this TD's RTMR3: one config event.
    pub fn event_log(&self) -> Result<Vec<u8>> {
        let digest: [u8; 48] = self.config_digest.as_slice().try_into().map_err(|_| {
            cocoon_attestation::Error::Malformed {
                what: "simulated TD config",
                detail: format!(
                    "config digest has {} bytes, expected 48",
                    self.config_digest.len()
                ),
            }
        })?;
        cocoon_attestation::event_log::RuntimeEventLog::config(3, &digest).to_cbor()
    }
}

/// A development "TEE" that signs TDX v4 quotes through the development PKI.
pub struct SimulatedTdx {
    pki: DevPki,
}

impl SimulatedTdx {
    /// The development TEE every verifier can recreate (from [`crate::DEV_SEED`]).
    pub fn dev() -> Result<Self> {
        Ok(Self {
            pki: DevPki::dev()?,
        })
    }

    /// A simulated TEE with a PKI of its own (tests use this to play an impostor).
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        Ok(Self {
            pki: DevPki::from_seed(seed)?,
        })
    }

    /// A TDX v4 quote over `report_data`: fixed labelled MRTD and RTMR0-2, RTMR3 = the
    /// config digest extended once into zero.
    pub fn quote(&self, report_data: &ReportData, td: &SimulatedTdConfig) -> Result<Vec<u8>> {
        self.quote_with_rtmr3(
            report_data,
            &rtmr_extend(&[0; 48], &td.config_digest),
            td.debug,
        )
    }

    /// A TDX v4 quote over `report_data` with the given RTMR3 (a simulated TD that keeps
    /// its own register state and extends it like the TDX module does).
    pub fn quote_with_rtmr3(
        &self,
        report_data: &ReportData,
        rtmr3: &[u8; 48],
        debug: bool,
    ) -> Result<Vec<u8>> {
        self.quote_booted(report_data, &SimulatedBoot::default(), rtmr3, debug)
    }

    /// A TDX v4 quote with the boot registers of `boot` and the given RTMR3.
    pub fn quote_booted(
        &self,
        report_data: &ReportData,
        boot: &SimulatedBoot,
        rtmr3: &[u8; 48],
        debug: bool,
    ) -> Result<Vec<u8>> {
        let [rtmr0, rtmr1, rtmr2] = boot.rtmr;
        self.pki.quote(
            report_data,
            &DevTdMeasurements {
                mr_td: boot.mr_td,
                rtmr: [rtmr0, rtmr1, rtmr2, *rtmr3],
                debug,
            },
        )
    }
}

/// An RA-TLS certificate for `key` carrying a simulated TDX quote over `report_data`
/// (tests of the certificate verifiers build theirs with it).
pub fn test_certificate(
    key: &cocoon_attestation::ratls::TlsKey,
    tee: &SimulatedTdx,
    report_data: &ReportData,
    td: &SimulatedTdConfig,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<Vec<u8>> {
    use cocoon_attestation::evidence::{EvidenceKind, EvidencePayload, PAYLOAD_VERSION};
    use cocoon_attestation::ratls::{build_certificate, CertificateParams, SubjectAltName};
    let payload = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: EvidenceKind::Tdx,
        evidence: tee.quote(report_data, td)?,
        event_log: td.event_log()?,
        config_digest: td.config_digest.clone(),
        gpu_evidence_digest: None,
        receipt_key: None,
        snp_certificates: None,
        vtpm: None,
    };
    build_certificate(
        key,
        &CertificateParams {
            common_name: "cocoon-test",
            subject_alt_names: &[SubjectAltName::parse("localhost")],
            not_before,
            not_after,
            evidence: &payload,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_attestation::tdx::TdxQuote;

    #[test]
    fn simulated_quote_carries_the_measured_config_in_rtmr3() {
        let cfg = SimulatedTdConfig {
            config_digest: vec![3; 48],
            debug: false,
        };
        let q =
            TdxQuote::parse(&SimulatedTdx::dev().unwrap().quote(&[5; 64], &cfg).unwrap()).unwrap();
        assert_eq!(q.body.report_data, [5; 64]);
        assert_eq!(q.body.rtmr[3], rtmr_extend(&[0; 48], &[3; 48]));
        assert_eq!(q.body.mr_td, labelled_digest("MRTD"));
        assert!(!q.body.debug());
        let dbg = SimulatedTdConfig { debug: true, ..cfg };
        let q =
            TdxQuote::parse(&SimulatedTdx::dev().unwrap().quote(&[5; 64], &dbg).unwrap()).unwrap();
        assert!(q.body.debug());
    }

    #[test]
    fn a_booted_td_reports_the_manifest_registers() {
        let hex48 = |b: u8| hex::encode([b; 48]);
        let manifest = cocoon_attestation::manifest::Manifest::from_json(
            format!(
                r#"{{"version":1,"image":"t","release":1,"not_after":"2099-01-01T00:00:00Z",
               "tdx":{{"mrtd":"{}","rtmr0":"{}","rtmr1":"{}","rtmr2":"{}"}}}}"#,
                hex48(1),
                hex48(2),
                hex48(3),
                hex48(4)
            )
            .as_bytes(),
        )
        .unwrap();
        let boot = SimulatedBoot::from_manifest(&manifest).unwrap();
        let q = TdxQuote::parse(
            &SimulatedTdx::dev()
                .unwrap()
                .quote_booted(&[5; 64], &boot, &[9; 48], false)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(q.body.mr_td, [1; 48]);
        assert_eq!(q.body.rtmr, [[2; 48], [3; 48], [4; 48], [9; 48]]);
        assert_eq!(
            boot.snp_measurement,
            SimulatedBoot::default().snp_measurement
        );
    }

    #[test]
    fn rtmr_extend_matches_a_direct_sha384() {
        let mut input = vec![0u8; 48];
        input.extend_from_slice(&[3; 48]);
        let direct: [u8; 48] = Sha384::digest(&input).into();
        assert_eq!(rtmr_extend(&[0; 48], &[3; 48]), direct);
    }
}
