//! The one verification pipeline: TDX and SEV-SNP evidence, from real hardware or from a
//! development PKI, in an RA-TLS certificate, in session-bound evidence, or bare.
//!
//! A [`Verifier`] is built from [`TrustAnchors`], a [`Policy`] and [`CollateralSource`]s;
//! nothing else is trusted and nothing is looked up behind the caller's back. Simulated
//! evidence is ordinary TDX/SNP evidence whose chain ends at a development anchor, so it
//! takes exactly the path hardware evidence takes, and is accepted only when the caller
//! passed that anchor.
//!
//! Checks, in order: the certificate (if any) parses, carries one evidence extension and
//! is valid at the verification time; the quote or report verifies to a trust anchor with
//! collateral that is current at that time (Intel's CRLs, TCB info and QE identity, by
//! dcap-qvl; AMD's VCEK/VLEK chain); REPORTDATA equals the expected binding; TDX: the
//! runtime event log replays to RTMR3 and records exactly the config digest; SNP:
//! HOST_DATA commits to the config digest; then every policy rule, the reference values
//! among them. The core does no I/O: the time and the collateral are inputs.

use std::sync::Arc;

use crate::anchors::TrustAnchors;
use crate::collateral::{CollateralSource, SnpCollateral};
use crate::event_log::RuntimeEventLog;
use crate::evidence::{EvidenceKind, EvidencePayload};
use crate::policy::Policy;
use crate::ratls::{parse_certificate, ParsedRaTlsCertificate};
use crate::report_data::{certificate_binding_with, snp_host_data, ReportData};
use crate::snp::verify::verify_report;
use crate::snp::SnpReport;
use crate::tdx::dcap::{verify_quote, QuotePckChain};
use crate::tdx::TdxQuote;
use crate::unix_time::format_time;
use crate::verified::{CertificateFacts, Claims, Facts, Verdict, Verified, VtpmFacts};
use crate::vtpm::{AkBinding, HardwareReport, VerifiedQuote, VtpmEvidence, CONFIG_PCR};
use crate::{Error, Result};

/// Verifies evidence against the anchors, collateral and policy it was built with.
#[derive(Debug, Clone)]
pub struct Verifier {
    anchors: TrustAnchors,
    policy: Policy,
    collateral: Vec<Arc<dyn CollateralSource>>,
}

/// What the evidence must be bound to.
enum Binding {
    /// Bare evidence (a quote or report file): no binding, no config digest.
    None,
    /// RA-TLS evidence: REPORTDATA was checked, and the reference values must be pinned.
    RaTls,
}

impl Verifier {
    /// A verifier that trusts `anchors` and applies `policy`, with no collateral yet.
    pub fn new(anchors: TrustAnchors, policy: Policy) -> Self {
        Self {
            anchors,
            policy,
            collateral: Vec::new(),
        }
    }

    /// Adds a place to look up collateral (searched in the order added).
    pub fn with_collateral(mut self, source: Arc<dyn CollateralSource>) -> Self {
        self.collateral.push(source);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Verifies an RA-TLS certificate at `now` (seconds since the Unix epoch).
    pub fn verify_certificate(&self, der: &[u8], now: i64) -> Result<Verified> {
        self.verify_parsed_certificate(&parse_certificate(der)?, now)
    }

    fn verify_parsed_certificate(
        &self,
        cert: &ParsedRaTlsCertificate,
        now: i64,
    ) -> Result<Verified> {
        check_certificate_window(cert, now)?;
        let expected = certificate_binding_with(
            &cert.spki_der,
            &cert.evidence.config_digest,
            cert.evidence.bound_extras(),
        );
        self.verify_bound(&cert.evidence, &expected, Some(cert), now)
    }

    /// Verifies evidence fetched inside a TLS session (`POST /v1/attestation`): its
    /// REPORTDATA must bind the certificate's key and config digest *and* the client's
    /// nonce and the session's TLS exporter, so a quote replayed from another session, or
    /// relayed by a man in the middle who terminates TLS himself, does not verify. The
    /// certificate's own evidence is verified too, and both must come from the same kind
    /// of TEE with the same measurements.
    pub fn verify_session_evidence(
        &self,
        cert_der: &[u8],
        payload_cbor: &[u8],
        nonce: &[u8],
        tls_exporter: &[u8],
        now: i64,
    ) -> Result<Verified> {
        let cert = parse_certificate(cert_der)?;
        let in_certificate = self.verify_parsed_certificate(&cert, now)?;
        let payload = EvidencePayload::from_cbor(payload_cbor)?;
        let same = |rule: &'static str, observed: String, expected: String| {
            (observed != expected).then_some(Error::Policy {
                rule,
                observed,
                expected,
            })
        };
        let hex_opt = |v: &Option<Vec<u8>>| v.as_deref().map(hex::encode).unwrap_or_default();
        if let Some(e) = same(
            "session evidence must be of the certificate's kind",
            format!("{:?}", payload.kind),
            format!("{:?}", cert.evidence.kind),
        )
        .or_else(|| {
            same(
                "session evidence must carry the certificate's receipt key",
                hex_opt(&payload.receipt_key),
                hex_opt(&cert.evidence.receipt_key),
            )
        })
        .or_else(|| {
            same(
                "session evidence must carry the certificate's GPU evidence digest",
                hex_opt(&payload.gpu_evidence_digest),
                hex_opt(&cert.evidence.gpu_evidence_digest),
            )
        })
        .or_else(|| {
            let ak = |p: &EvidencePayload| {
                p.vtpm
                    .as_ref()
                    .map(|v| format!("{} {}", v.binding.name(), hex::encode(&v.ak_public)))
                    .unwrap_or_default()
            };
            same(
                "session evidence must carry the certificate's vTPM attestation key",
                ak(&payload),
                ak(&cert.evidence),
            )
        })
        .or_else(|| {
            same(
                "session evidence must carry the certificate's config digest",
                hex::encode(&payload.config_digest),
                hex::encode(&cert.evidence.config_digest),
            )
        }) {
            return Err(e);
        }
        let expected = crate::report_data::session_binding(
            &cert.spki_der,
            &payload.config_digest,
            nonce,
            tls_exporter,
        );
        let session = self.verify_bound(&payload, &expected, Some(&cert), now)?;
        if session.measurements != in_certificate.measurements {
            return Err(Error::Policy {
                rule: "session evidence must have the certificate evidence's measurements",
                observed: format!("{:?}", session.measurements),
                expected: format!("{:?}", in_certificate.measurements),
            });
        }
        Ok(session)
    }

    /// Verifies an evidence payload whose REPORTDATA must equal `expected` (no
    /// certificate involved: the result has no certificate facts).
    pub fn verify_payload(
        &self,
        payload: &EvidencePayload,
        expected: &ReportData,
        now: i64,
    ) -> Result<Verified> {
        self.verify_bound(payload, expected, None, now)
    }

    /// Verifies a bare TDX quote and reports every failed check.
    pub fn tdx_quote_verdict(&self, raw: &[u8], now: i64) -> Verdict {
        let claims = match TdxQuote::parse(raw) {
            Ok(q) => Claims::tdx(&q),
            Err(e) => return Verdict::refused("tdx", Claims::default(), None, vec![e.to_string()]),
        };
        self.bare_verdict("tdx", claims, self.tdx_facts(raw, now))
    }

    /// Verifies a bare SEV-SNP report (with the certificates given, else those the
    /// collateral sources hold) and reports every failed check.
    pub fn snp_report_verdict(
        &self,
        raw: &[u8],
        certificates: Option<&SnpCollateral>,
        now: i64,
    ) -> Verdict {
        let claims = match SnpReport::parse(raw) {
            Ok(r) => Claims::snp(&r),
            Err(e) => {
                return Verdict::refused("sev-snp", Claims::default(), None, vec![e.to_string()])
            }
        };
        let facts = match certificates {
            Some(c) => c
                .vcek_der()
                .and_then(|vcek| self.snp_facts_with(raw, &vcek, c.cert_chain.as_bytes(), now)),
            None => self.snp_facts(raw, None, now),
        };
        self.bare_verdict("sev-snp", claims, facts)
    }

    fn bare_verdict(&self, tee: &'static str, claims: Claims, facts: Result<Facts>) -> Verdict {
        let facts = match facts {
            Ok(f) => f,
            Err(e) => return Verdict::refused(tee, claims, None, vec![e.to_string()]),
        };
        let errors = self.policy_errors(&facts, Binding::None);
        if errors.is_empty() {
            Verdict::accepted(facts.into_verified(None, None, None))
        } else {
            let claims = facts.claims();
            let errors = errors.iter().map(ToString::to_string).collect();
            Verdict::refused(tee, claims, Some(&facts), errors)
        }
    }

    /// The pipeline for RA-TLS evidence (certificate or session-bound).
    fn verify_bound(
        &self,
        payload: &EvidencePayload,
        expected: &ReportData,
        cert: Option<&ParsedRaTlsCertificate>,
        now: i64,
    ) -> Result<Verified> {
        let facts = match payload.kind {
            EvidenceKind::Tdx => self.tdx_facts(&payload.evidence, now)?,
            EvidenceKind::SevSnp => {
                self.snp_facts(&payload.evidence, payload.snp_certificates.as_deref(), now)?
            }
        };
        let vtpm = match &payload.vtpm {
            None => {
                check_binding(&facts, payload, expected)?;
                None
            }
            Some(vtpm) => Some(check_vtpm(&facts, payload, vtpm, expected)?),
        };
        if let Some(first) = self
            .policy_errors(&facts, Binding::RaTls)
            .into_iter()
            .chain(self.policy.vtpm.check(vtpm.as_ref().map(|(_, q)| q)))
            .next()
        {
            return Err(first);
        }
        if let Some(refused) = self.policy.check_config_digest(&payload.config_digest) {
            return Err(refused);
        }
        if let Some(refused) = self
            .policy
            .check_gpu_bound(payload.gpu_evidence_digest.as_deref())
        {
            return Err(refused);
        }
        let mut verified = facts.into_verified(
            Some(hex::encode(&payload.config_digest)),
            payload.receipt_key.as_deref().map(hex::encode),
            cert.map(|c| CertificateFacts {
                sha256: hex::encode(c.sha256),
                not_before: c.not_before,
                not_after: c.not_after,
            }),
        );
        verified.gpu_evidence_digest = payload.gpu_evidence_digest.as_deref().map(hex::encode);
        verified.vtpm = vtpm.map(|(binding, quote)| VtpmFacts::of(binding.name(), &quote));
        Ok(verified)
    }

    /// Every policy rule the verified evidence breaks.
    fn policy_errors(&self, facts: &Facts, binding: Binding) -> Vec<Error> {
        let mut errors = match facts {
            Facts::Tdx(f) => self.policy.check_tdx(f),
            Facts::Snp(f) => self.policy.check_snp(f),
        };
        if let Binding::RaTls = binding {
            errors.extend(self.policy.check_reference_values(facts.tee()));
        }
        errors
    }

    /// DCAP verification of a quote, to the first anchor and collateral that verify it.
    fn tdx_facts(&self, raw: &[u8], now: i64) -> Result<Facts> {
        let roots = self.anchors.tdx_roots();
        let chain = QuotePckChain::of(raw)?;
        if let Some(root) = chain.root_der() {
            // Compared by key: a root re-issued with the same key (a new signature, new
            // dates) is the same anchor, as it is for dcap-qvl's chain check.
            if !roots.iter().any(|r| same_key(&r.der, &root)) {
                return Err(Error::UntrustedAnchor {
                    tee: "tdx",
                    detail: format!(
                        "its PCK chain ends at '{}', which is not among the anchors given [{}]{}",
                        root_name(&root),
                        roots
                            .iter()
                            .map(|r| root_name(&r.der))
                            .collect::<Vec<_>>()
                            .join(", "),
                        development_hint(&root),
                    ),
                });
            }
        }
        let fmspc = chain.fmspc()?;
        let candidates: Vec<_> = self
            .collateral
            .iter()
            .flat_map(|s| s.tdx_collateral(&fmspc, now))
            .collect();
        if candidates.is_empty() {
            return Err(Error::Collateral(format!(
                "no TDX collateral for FMSPC {} at {}: fetch it (--pccs, --cache-dir) or pass \
                 a bundle (--collateral)",
                hex::encode(fmspc),
                format_time(now)
            )));
        }
        let mut failures = Vec::new();
        for root in self.anchors.tdx_roots() {
            for collateral in &candidates {
                match verify_quote(raw, collateral, now, root) {
                    Ok(facts) => return Ok(Facts::Tdx(Box::new(facts))),
                    Err(e) => failures.push(format!("{}: {e}", root_name(&root.der))),
                }
            }
        }
        failures.dedup();
        Err(Error::Dcap(failures.join("; ")))
    }

    /// SNP verification with the certificates the evidence carries, else those from the
    /// collateral sources.
    fn snp_facts(&self, raw: &[u8], table: Option<&[u8]>, now: i64) -> Result<Facts> {
        if let Some(table) = table {
            let (vcek, chain) =
                crate::snp::ext_report::CertTable::parse(table)?.vcek_and_chain()?;
            return self.snp_facts_with(raw, &vcek, chain.as_bytes(), now);
        }
        let report = SnpReport::parse(raw)?;
        let candidates: Vec<_> = self
            .collateral
            .iter()
            .flat_map(|s| s.snp_collateral(&report, now))
            .collect();
        if candidates.is_empty() {
            return Err(Error::Collateral(
                "the SEV-SNP evidence carries no certificates and none were fetched: pass \
                 --kds (or --vcek/--collateral)"
                    .into(),
            ));
        }
        let mut failures = Vec::new();
        for c in &candidates {
            let attempt = c
                .vcek_der()
                .and_then(|vcek| self.snp_facts_with(raw, &vcek, c.cert_chain.as_bytes(), now));
            match attempt {
                Ok(facts) => return Ok(facts),
                Err(e) => failures.push(e.to_string()),
            }
        }
        failures.dedup();
        Err(Error::BadSignature(failures.join("; ")))
    }

    fn snp_facts_with(&self, raw: &[u8], vcek: &[u8], chain_pem: &[u8], now: i64) -> Result<Facts> {
        if self.anchors.snp_arks().is_empty() {
            return Err(Error::UntrustedAnchor {
                tee: "sev-snp",
                detail: "no AMD root key was given".into(),
            });
        }
        let facts = verify_report(raw, vcek, chain_pem, now, self.anchors.snp_arks())?;
        Ok(Facts::Snp(Box::new(facts)))
    }
}

/// True when both certificates carry the same public key.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let spki = |der: &[u8]| {
        x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c.public_key().raw.to_vec())
    };
    matches!((spki(a), spki(b)), (Some(x), Some(y)) if x == y)
}

/// The subject of a root certificate, for messages.
fn root_name(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "an unparsable root".into())
}

/// Points at `--allow-simulated` when a root says it is a development root.
fn development_hint(root_der: &[u8]) -> &'static str {
    if root_name(root_der).contains("DEV") {
        " (this is a development root: the evidence is SIMULATED and proves nothing about \
         confidentiality; pass --allow-simulated only for development and tests)"
    } else {
        ""
    }
}

fn check_certificate_window(cert: &ParsedRaTlsCertificate, now: i64) -> Result<()> {
    if now < cert.not_before || now > cert.not_after {
        return Err(Error::CertificateExpired {
            at: format_time(now),
            not_before: format_time(cert.not_before),
            not_after: format_time(cert.not_after),
        });
    }
    Ok(())
}

/// REPORTDATA must be exactly the expected binding; the TDX event log must replay to
/// RTMR3 and record the config digest; SNP's HOST_DATA must commit to it.
fn check_binding(facts: &Facts, payload: &EvidencePayload, expected: &ReportData) -> Result<()> {
    let report_data = match facts {
        Facts::Tdx(f) => &f.quote.body.report_data,
        Facts::Snp(f) => &f.report.report_data,
    };
    if report_data != expected {
        return Err(Error::ReportDataMismatch {
            observed: hex::encode(report_data),
            expected: hex::encode(expected),
        });
    }
    match facts {
        Facts::Tdx(f) => RuntimeEventLog::from_cbor(&payload.event_log)?
            .check_tdx(&f.quote.body.rtmr, &payload.config_digest),
        Facts::Snp(f) => {
            let host_data = snp_host_data(&payload.config_digest);
            if f.report.host_data != host_data {
                return Err(Error::Policy {
                    rule: "HOST_DATA must equal SHA-256 of the measured config digest",
                    observed: hex::encode(f.report.host_data),
                    expected: hex::encode(host_data),
                });
            }
            Ok(())
        }
    }
}

/// Evidence with a vTPM quote: the quote verifies over `qualifying_data(expected)`; its
/// AK is bound to the verified hardware report (REPORTDATA with the AK as a bound field,
/// plus the usual TDX log / SNP HOST_DATA checks; or Azure's HCL report); and the event
/// log replays to the quoted config PCR and records the config digest there.
fn check_vtpm(
    facts: &Facts,
    payload: &EvidencePayload,
    vtpm: &VtpmEvidence,
    expected: &ReportData,
) -> Result<(AkBinding, VerifiedQuote)> {
    let (ak, quote) = vtpm.verify(expected)?;
    match vtpm.binding {
        AkBinding::ReportData => check_binding(facts, payload, expected)?,
        AkBinding::AzureHcl => {
            let hardware = match facts {
                Facts::Tdx(f) => HardwareReport::Tdx(&f.quote.body),
                Facts::Snp(_) => HardwareReport::SevSnp(&payload.evidence),
            };
            vtpm.check_hcl_binding(&ak, hardware)?;
        }
    }
    RuntimeEventLog::from_cbor(&payload.event_log)?.check_pcrs(
        &quote,
        CONFIG_PCR,
        &payload.config_digest,
    )?;
    Ok((vtpm.binding, quote))
}
