//! Verification of an RA-TLS certificate's evidence.
//!
//! The core does no I/O: the certificate bytes, the verification time and the options
//! are inputs, so the same function serves the CLI, the rustls verifier and tests.
//!
//! Checks, in order: the certificate parses and carries exactly one evidence extension;
//! the verification time is inside the certificate's validity; the evidence kind is
//! allowed (simulated evidence only with `allow_simulated`); the quote parses and its
//! signature verifies with an attestation key we trust; debug is off unless allowed;
//! REPORTDATA equals the binding of the certificate's SubjectPublicKeyInfo and the
//! measured-config digest; the runtime event log replays to the quote's RTMR3 and records
//! exactly that config digest.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dev_pki::DevPki;
use crate::event_log::RuntimeEventLog;
use crate::evidence::EvidenceKind;
use crate::policy::Policy;
use crate::ratls::parse_certificate;
use crate::report_data::{certificate_binding_with, ReportData};
use crate::tdx::dcap::{verify_quote, TdxRoot};
use crate::{Error, Result};

/// What the caller is willing to accept beyond the secure defaults.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept evidence that chains to the development root (no TEE involved).
    pub allow_simulated: bool,
    /// Reference values and TCB rules (debug refused, UpToDate only, by default).
    pub policy: Policy,
}

/// The facts a successful verification established.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedEvidence {
    /// `tdx` or `sev-snp`.
    pub tee: &'static str,
    /// True when no TEE produced the evidence (development root).
    pub simulated: bool,
    pub debug: bool,
    /// Intel's TCB status name (TDX); `None` for SEV-SNP.
    pub tcb_status: Option<String>,
    pub advisories: Vec<String>,
    /// `mrtd`, `rtmr0`..`rtmr3` (TDX) or `measurement`, `host_data` (SEV-SNP), hex.
    pub measurements: BTreeMap<&'static str, String>,
    pub report_data: String,
    pub config_digest: String,
    /// Ed25519 key (hex) that signs this guest's usage receipts, bound in REPORTDATA.
    pub receipt_key: Option<String>,
    /// SHA-256 of the certificate DER: pin exactly this certificate in an SDK.
    pub certificate_sha256: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Verifies an RA-TLS certificate at `now` (seconds since the Unix epoch).
pub fn verify_certificate(
    der: &[u8],
    now: i64,
    options: &VerifyOptions,
) -> Result<VerifiedEvidence> {
    let cert = parse_certificate(der)?;
    if now < cert.not_before || now > cert.not_after {
        return Err(Error::CertificateExpired {
            at: format_time(now),
            not_before: format_time(cert.not_before),
            not_after: format_time(cert.not_after),
        });
    }
    let expected = certificate_binding_with(
        &cert.spki_der,
        &cert.evidence.config_digest,
        cert.evidence.bound_extras(),
    );
    let mut verified = verify_payload(&cert.evidence, &expected, now, options)?;
    verified.certificate_sha256 = hex::encode(cert.sha256);
    verified.not_before = cert.not_before;
    verified.not_after = cert.not_after;
    Ok(verified)
}

/// Verifies evidence fetched inside a TLS session (`POST /v1/attestation`): its
/// REPORTDATA must bind the certificate's key and config digest *and* the client's nonce
/// and the session's TLS exporter, so a quote replayed from another session, or relayed
/// by a man in the middle who terminates TLS himself, does not verify.
pub fn verify_session_evidence(
    cert_der: &[u8],
    payload_cbor: &[u8],
    nonce: &[u8],
    tls_exporter: &[u8],
    now: i64,
    options: &VerifyOptions,
) -> Result<VerifiedEvidence> {
    let cert = parse_certificate(cert_der)?;
    let payload = crate::evidence::EvidencePayload::from_cbor(payload_cbor)?;
    if payload.receipt_key != cert.evidence.receipt_key {
        return Err(Error::Policy {
            rule: "session evidence must carry the certificate's receipt key",
            observed: payload
                .receipt_key
                .as_deref()
                .map(hex::encode)
                .unwrap_or_default(),
            expected: cert
                .evidence
                .receipt_key
                .as_deref()
                .map(hex::encode)
                .unwrap_or_default(),
        });
    }
    if payload.config_digest != cert.evidence.config_digest {
        return Err(Error::Policy {
            rule: "session evidence must carry the certificate's config digest",
            observed: hex::encode(&payload.config_digest),
            expected: hex::encode(&cert.evidence.config_digest),
        });
    }
    let expected = crate::report_data::session_binding(
        &cert.spki_der,
        &payload.config_digest,
        nonce,
        tls_exporter,
    );
    let mut verified = verify_payload(&payload, &expected, now, options)?;
    verified.certificate_sha256 = hex::encode(cert.sha256);
    verified.not_before = cert.not_before;
    verified.not_after = cert.not_after;
    Ok(verified)
}

/// Verifies an evidence payload whose REPORTDATA must equal `expected`. The certificate
/// fields of the result are left empty for the caller to fill in.
pub fn verify_payload(
    payload: &crate::evidence::EvidencePayload,
    expected: &ReportData,
    now: i64,
    options: &VerifyOptions,
) -> Result<VerifiedEvidence> {
    if payload.kind.is_simulated() && !options.allow_simulated {
        return Err(Error::SimulatedRefused);
    }
    let verified = match payload.kind {
        EvidenceKind::SimulatedTdx => verify_simulated_tdx(payload, expected, now, options)?,
        EvidenceKind::SimulatedSevSnp => verify_simulated_snp(payload, expected, now, options)?,
        EvidenceKind::Tdx | EvidenceKind::SevSnp => Err(Error::Unsupported {
            what: "evidence kind in an RA-TLS certificate (hardware evidence needs collateral \
                   from Intel PCS / AMD KDS, which the endpoint check does not fetch yet; \
                   verify the quote offline with `cocoon-verify tdx-quote` / `snp-report`)",
            value: payload.kind.tee_name().to_string(),
        })?,
    };
    // The measured config is checked once the evidence proved the digest is the one the
    // TEE committed to (RTMR3 / HOST_DATA).
    match options.policy.check_config_digest(&payload.config_digest) {
        Some(refused) => Err(refused),
        None => Ok(verified),
    }
}

/// REPORTDATA must be exactly the expected binding.
fn check_binding(report_data: &[u8; 64], expected: &ReportData) -> Result<()> {
    if report_data != expected {
        return Err(Error::ReportDataMismatch {
            observed: hex::encode(report_data),
            expected: hex::encode(expected),
        });
    }
    Ok(())
}

/// Simulated TDX: the full DCAP verification against the development root, with
/// collateral the verifier derives itself for `now`.
fn verify_simulated_tdx(
    payload: &crate::evidence::EvidencePayload,
    expected: &ReportData,
    now: i64,
    options: &VerifyOptions,
) -> Result<VerifiedEvidence> {
    let pki = DevPki::dev()?;
    let root = TdxRoot {
        der: pki.root_der(),
        simulated: true,
    };
    let facts = verify_quote(&payload.evidence, &pki.collateral(now)?, now, &root)?;
    if let Some(first) = options.policy.check_tdx(&facts).into_iter().next() {
        return Err(first);
    }
    let body = &facts.quote.body;
    check_binding(&body.report_data, expected)?;
    RuntimeEventLog::from_cbor(&payload.event_log)?
        .check_tdx(&body.rtmr, &payload.config_digest)?;
    Ok(VerifiedEvidence {
        tee: EvidenceKind::SimulatedTdx.tee_name(),
        simulated: true,
        debug: body.debug(),
        tcb_status: Some(facts.tcb_status.clone()),
        advisories: facts.advisory_ids.clone(),
        measurements: BTreeMap::from([
            ("mrtd", hex::encode(body.mr_td)),
            ("rtmr0", hex::encode(body.rtmr[0])),
            ("rtmr1", hex::encode(body.rtmr[1])),
            ("rtmr2", hex::encode(body.rtmr[2])),
            ("rtmr3", hex::encode(body.rtmr[3])),
        ]),
        report_data: hex::encode(body.report_data),
        config_digest: hex::encode(&payload.config_digest),
        receipt_key: payload.receipt_key.as_deref().map(hex::encode),
        certificate_sha256: String::new(),
        not_before: 0,
        not_after: 0,
    })
}

/// HOST_DATA a simulated SNP guest sets: SHA-256 of the measured-config digest (the
/// field is 32 bytes; the digest is 48).
pub fn snp_host_data(config_digest: &[u8]) -> [u8; 32] {
    Sha256::digest(config_digest).into()
}

/// Simulated SEV-SNP: the report against the development ARK → ASK → VCEK chain, which
/// the verifier recreates from the public seed.
fn verify_simulated_snp(
    payload: &crate::evidence::EvidencePayload,
    expected: &ReportData,
    now: i64,
    options: &VerifyOptions,
) -> Result<VerifiedEvidence> {
    let pki = crate::snp::dev::DevSnpPki::dev()?;
    // The certificates the guest attached, when it did; the trust anchor is the
    // (development) ARK either way.
    let (vcek_der, chain_pem) = match &payload.snp_certificates {
        Some(table) => snp_certificates_from_table(table)?,
        None => (pki.vcek_der().to_vec(), pki.chain_pem()),
    };
    let facts = crate::snp::verify::verify_report(
        &payload.evidence,
        &vcek_der,
        chain_pem.as_bytes(),
        now,
        &[pki.trusted_ark()],
    )?;
    if let Some(first) = options.policy.check_snp(&facts).into_iter().next() {
        return Err(first);
    }
    let r = &facts.report;
    check_binding(&r.report_data, expected)?;
    let host_data = snp_host_data(&payload.config_digest);
    if r.host_data != host_data {
        return Err(Error::Policy {
            rule: "HOST_DATA must equal SHA-256 of the measured config digest",
            observed: hex::encode(r.host_data),
            expected: hex::encode(host_data),
        });
    }
    Ok(VerifiedEvidence {
        tee: EvidenceKind::SimulatedSevSnp.tee_name(),
        simulated: true,
        debug: r.policy.debug_allowed(),
        tcb_status: None,
        advisories: Vec::new(),
        measurements: BTreeMap::from([
            ("measurement", hex::encode(r.measurement)),
            ("host_data", hex::encode(r.host_data)),
        ]),
        report_data: hex::encode(r.report_data),
        config_digest: hex::encode(&payload.config_digest),
        receipt_key: payload.receipt_key.as_deref().map(hex::encode),
        certificate_sha256: String::new(),
        not_before: 0,
        not_after: 0,
    })
}

/// The VCEK (or VLEK) DER and the ASK + ARK chain (PEM) from an SNP certificate table.
pub fn snp_certificates_from_table(table: &[u8]) -> Result<(Vec<u8>, String)> {
    use crate::snp::ext_report::{CertKind, CertTable};
    let table = CertTable::parse(table)?;
    let missing = |what: &str| Error::Malformed {
        what: "SNP certificate table",
        detail: format!("has no {what} certificate"),
    };
    let vcek = table
        .get(CertKind::Vcek)
        .or_else(|| table.get(CertKind::Vlek))
        .ok_or_else(|| missing("VCEK or VLEK"))?;
    let ask = table.get(CertKind::Ask).ok_or_else(|| missing("ASK"))?;
    let ark = table.get(CertKind::Ark).ok_or_else(|| missing("ARK"))?;
    let chain = format!(
        "{}{}",
        crate::ratls::certificate_pem(ask),
        crate::ratls::certificate_pem(ark)
    );
    Ok((vcek.to_vec(), chain))
}

/// RFC 3339 rendering of a Unix time, for messages.
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratls::TlsKey;
    use crate::simulated::{test_certificate, SimulatedTdConfig, SimulatedTdx};
    use time::OffsetDateTime;

    const T0: i64 = 1_800_000_000;

    struct Built {
        der: Vec<u8>,
    }

    fn build(tee: &SimulatedTdx, debug: bool, bind_key: Option<&TlsKey>) -> Built {
        let key = TlsKey::generate().unwrap();
        let cfg = vec![9u8; 48];
        let bound = bind_key.unwrap_or(&key);
        let rd = crate::report_data::certificate_binding(bound.spki_der(), &cfg);
        let t0 = OffsetDateTime::from_unix_timestamp(T0).unwrap();
        let td = SimulatedTdConfig {
            config_digest: cfg,
            debug,
        };
        let der = test_certificate(&key, tee, &rd, &td, t0, t0 + time::Duration::hours(1));
        Built { der }
    }

    fn allow() -> VerifyOptions {
        VerifyOptions {
            allow_simulated: true,
            policy: Policy::default(),
        }
    }

    #[test]
    fn accepts_bound_simulated_evidence_only_when_allowed() {
        let b = build(&SimulatedTdx::dev().unwrap(), false, None);
        let v = verify_certificate(&b.der, T0 + 10, &allow()).unwrap();
        assert!(v.simulated);
        assert_eq!(v.tee, "tdx");
        let err = verify_certificate(&b.der, T0 + 10, &VerifyOptions::default()).unwrap_err();
        assert!(matches!(err, Error::SimulatedRefused), "{err}");
    }

    #[test]
    fn rejects_evidence_bound_to_another_key() {
        let other = TlsKey::generate().unwrap();
        let b = build(&SimulatedTdx::dev().unwrap(), false, Some(&other));
        let err = verify_certificate(&b.der, T0 + 10, &allow()).unwrap_err();
        assert!(matches!(err, Error::ReportDataMismatch { .. }), "{err}");
    }

    #[test]
    fn rejects_foreign_signer_debug_and_expiry() {
        let b = build(&SimulatedTdx::from_seed(b"impostor").unwrap(), false, None);
        let err = verify_certificate(&b.der, T0 + 10, &allow()).unwrap_err();
        assert!(
            matches!(err, Error::Dcap(_)),
            "an impostor PKI must fail DCAP: {err}"
        );

        let b = build(&SimulatedTdx::dev().unwrap(), true, None);
        let err = verify_certificate(&b.der, T0 + 10, &allow()).unwrap_err();
        assert!(err.to_string().contains("debug"), "{err}");
        let mut with_debug = allow();
        with_debug.policy.allow_debug = true;
        assert!(
            verify_certificate(&b.der, T0 + 10, &with_debug)
                .unwrap()
                .debug
        );

        let b = build(&SimulatedTdx::dev().unwrap(), false, None);
        let err = verify_certificate(&b.der, T0 + 7200, &allow()).unwrap_err();
        assert!(matches!(err, Error::CertificateExpired { .. }), "{err}");
        assert!(verify_certificate(&b.der, T0 - 1, &allow()).is_err());
    }

    #[test]
    fn snp_certificate_tables_give_the_vcek_and_chain_or_name_what_is_missing() {
        use crate::snp::dev::DevSnpPki;
        use crate::snp::ext_report::{CertKind, CertTable};
        let pki = DevSnpPki::dev().unwrap();
        let table = CertTable::dev(pki).unwrap();
        let (vcek, chain) = snp_certificates_from_table(&table.encode()).unwrap();
        assert_eq!(vcek, pki.vcek_der());
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        let mut no_ark = table.clone();
        no_ark.entries.retain(|e| e.kind != CertKind::Ark);
        let err = snp_certificates_from_table(&no_ark.encode()).unwrap_err();
        assert!(err.to_string().contains("no ARK"), "{err}");
    }
}
