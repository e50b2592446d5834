//! The guest's vTPM against a real TPM 2.0 implementation: `swtpm` (libtpms), started by
//! each test on Unix sockets in a fresh state directory. Evidence goes through the same
//! verifier clients run, and every tampering the checks exist for is refused.

use cocoon_attestation::event_log::RuntimeEventLog;
use cocoon_attestation::evidence::{EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::report_data::{certificate_binding_with, BoundExtras};
use cocoon_attestation::{Error as VerifyError, Policy, Verifier};

use super::{VtpmEndpoint, VtpmTee};
use crate::tee::{ConfigRegister, EvidenceProvider, SimulatedSnpTee};

struct Swtpm(cocoon_attestation_dev::swtpm::Swtpm);

impl Swtpm {
    fn start() -> Swtpm {
        Swtpm(cocoon_attestation_dev::swtpm::Swtpm::start().expect("swtpm starts"))
    }

    fn endpoint(&self) -> VtpmEndpoint {
        VtpmEndpoint::Unix(self.0.socket())
    }
}

const DIGEST: [u8; 48] = [0x5a; 48];
const SPKI: &[u8] = b"the certificate's public key";

/// A guest's start: simulated SEV-SNP launched for DIGEST, a vTPM, the config extended.
fn guest(swtpm: &Swtpm) -> (VtpmTee, Vec<u8>) {
    let hardware = SimulatedSnpTee::new(&DIGEST, false).unwrap();
    let tee = VtpmTee::new(Box::new(hardware), &swtpm.endpoint(), &[0, 7, 15]).unwrap();
    let log = extend_config(&tee);
    (tee, log)
}

/// Extends the config register as the guest does at start; returns the event log.
fn extend_config(tee: &dyn EvidenceProvider) -> Vec<u8> {
    let ConfigRegister::Vtpm { rtmr, pcr } = tee.extend_config_register(&DIGEST).unwrap() else {
        panic!("a vTPM guest extends a PCR");
    };
    assert_eq!((rtmr, pcr), (None, 15));
    RuntimeEventLog::config_in(rtmr, Some(pcr), &DIGEST)
        .to_cbor()
        .unwrap()
}

/// The payload a guest would put in its certificate, and the binding it carries.
fn payload(tee: &dyn EvidenceProvider, log: &[u8]) -> (EvidencePayload, [u8; 64]) {
    let extras = BoundExtras {
        vtpm_ak: tee.vtpm_attestation_key(),
        ..BoundExtras::default()
    };
    let binding = certificate_binding_with(SPKI, &DIGEST, extras);
    let evidence = tee.attest(&binding).unwrap();
    let payload = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: tee.kind(),
        evidence: evidence.raw,
        event_log: log.to_vec(),
        config_digest: DIGEST.to_vec(),
        gpu_evidence_digest: None,
        receipt_key: None,
        snp_certificates: evidence.certificates.map(|t| t.encode()),
        vtpm: evidence.vtpm,
    };
    (payload, binding)
}

fn verifier(policy: Policy) -> Verifier {
    Verifier::new(cocoon_attestation_dev::anchors().unwrap(), policy)
}

fn lenient() -> Policy {
    Policy {
        accept_any_image: true,
        ..Policy::default()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn verify(payload: &EvidencePayload) -> Result<cocoon_attestation::Verified, VerifyError> {
    let expected = certificate_binding_with(SPKI, &DIGEST, payload.bound_extras());
    verifier(lenient()).verify_payload(payload, &expected, now())
}

#[test]
fn vtpm_swtpm_quote_verifies_and_replays_the_config_pcr() {
    let swtpm = Swtpm::start();
    let (tee, log) = guest(&swtpm);
    let (payload, _) = payload(&tee, &log);
    // The payload survives its CBOR encoding.
    let payload = EvidencePayload::from_cbor(&payload.to_cbor().unwrap()).unwrap();
    let verified = verify(&payload).unwrap();
    let vtpm = verified.vtpm.expect("vTPM facts");
    assert_eq!(vtpm.binding, "report-data");
    assert_eq!(
        vtpm.pcrs.keys().copied().collect::<Vec<_>>(),
        vec![0, 7, 15]
    );
    // PCR 15 is SHA-256(zeros || SHA-256(config digest)), as the log says.
    let log = RuntimeEventLog::from_cbor(&log).unwrap();
    assert_eq!(vtpm.pcrs[&15], hex::encode(log.replay_pcr(15)));
    assert_ne!(vtpm.pcrs[&15], hex::encode([0u8; 32]));
    // A policy naming PCR 15's value accepts; another value, or an unquoted PCR, refuses.
    let mut policy = lenient();
    policy
        .vtpm
        .pcrs
        .insert("15".into(), vec![vtpm.pcrs[&15].clone()]);
    let expected = certificate_binding_with(SPKI, &DIGEST, payload.bound_extras());
    verifier(policy.clone())
        .verify_payload(&payload, &expected, now())
        .unwrap();
    policy.vtpm.pcrs.insert("15".into(), vec!["00".repeat(32)]);
    let err = verifier(policy.clone())
        .verify_payload(&payload, &expected, now())
        .unwrap_err();
    assert!(err.to_string().contains("vtpm.pcrs"), "{err}");
    let mut policy = lenient();
    policy.vtpm.pcrs.insert("9".into(), vec![]);
    let err = verifier(policy)
        .verify_payload(&payload, &expected, now())
        .unwrap_err();
    assert!(err.to_string().contains("PCR 9 not quoted"), "{err}");
}

#[test]
fn vtpm_tampered_pcr_value_is_refused() {
    let swtpm = Swtpm::start();
    let (tee, log) = guest(&swtpm);
    let (mut payload, _) = payload(&tee, &log);
    payload.vtpm.as_mut().unwrap().pcrs[0].value[0] ^= 1;
    let err = verify(&payload).unwrap_err();
    assert!(matches!(err, VerifyError::DigestMismatch { .. }), "{err}");
}

#[test]
fn vtpm_quote_over_other_qualifying_data_is_refused() {
    let swtpm = Swtpm::start();
    let (tee, log) = guest(&swtpm);
    let (mut payload, _) = payload(&tee, &log);
    // A genuine quote by the same AK, over another binding (say, another session's).
    let other = tee.quote(&[9u8; 64]).unwrap();
    payload.vtpm = Some(other);
    let err = verify(&payload).unwrap_err();
    assert!(matches!(err, VerifyError::NonceMismatch { .. }), "{err}");
}

#[test]
fn vtpm_quote_from_an_unbound_ak_is_refused() {
    // A genuine quote over the right binding, from another vTPM whose AK the hardware
    // report does not bind.
    let (swtpm, other_swtpm) = (Swtpm::start(), Swtpm::start());
    let (tee, log) = guest(&swtpm);
    let (other, _) = guest(&other_swtpm);
    let (mut payload, binding) = payload(&tee, &log);
    // A quote over the binding as it would be with the foreign AK in it: the quote is
    // fine, but the hardware REPORTDATA binds the guest's own AK.
    let foreign_extras = BoundExtras {
        vtpm_ak: other.vtpm_attestation_key(),
        ..BoundExtras::default()
    };
    let foreign_binding = certificate_binding_with(SPKI, &DIGEST, foreign_extras);
    let foreign = other.quote(&foreign_binding).unwrap();
    assert_ne!(foreign.ak_public, tee.ak_public, "two vTPMs, two AKs");
    payload.vtpm = Some(foreign);
    let err = verify(&payload).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReportDataMismatch { .. }),
        "{err}"
    );
    // A quote over the right binding by the foreign AK, naming the foreign AK: the
    // quote's qualifying data is not what the foreign AK's binding needs.
    let mut foreign = other.quote(&binding).unwrap();
    payload.vtpm = Some(foreign.clone());
    let err = verify(&payload).unwrap_err();
    assert!(matches!(err, VerifyError::NonceMismatch { .. }), "{err}");
    // Naming the bound AK with the foreign quote: the signature does not verify.
    foreign.ak_public = tee.ak_public.clone();
    payload.vtpm = Some(foreign);
    let err = verify(&payload).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature(_)), "{err}");
}

#[test]
fn vtpm_config_pcr_extended_by_someone_else_is_refused() {
    let swtpm = Swtpm::start();
    let (tee, log) = guest(&swtpm);
    // Something else extends PCR 15 (swtpm serves one connection at a time, so through
    // the guest's own); the log cannot explain it.
    tee.tpm
        .lock()
        .unwrap()
        .pcr_extend_sha256(15, &[1u8; 32])
        .unwrap();
    let (payload, binding) = payload(&tee, &log);
    let err = verify(&payload).unwrap_err();
    assert!(err.to_string().contains("quoted PCR"), "{err}");
    // The guest itself notices at start, before any client would refuse it.
    let evidence = tee.attest(&binding).unwrap();
    let err = crate::tee::self_check(&evidence, &binding, &DIGEST, &log).unwrap_err();
    assert!(err.to_string().contains("PCR15"), "{err}");
}

#[test]
fn vtpm_endpoints_parse_and_a_missing_tpm_is_a_clear_error() {
    for (text, ok) in [
        ("/dev/tpmrm0", true),
        ("unix:/run/swtpm.sock", true),
        ("tcp:127.0.0.1:2321", true),
        ("tcp:127.0.0.1", false),
        ("tpm0", false),
    ] {
        assert_eq!(text.parse::<VtpmEndpoint>().is_ok(), ok, "{text}");
    }
    let missing = VtpmEndpoint::Unix("/nonexistent/cocoon-swtpm.sock".into());
    let err = super::Tpm::open(&missing).err().expect("no TPM there");
    assert!(err.to_string().contains("connect"), "{err}");
}

/// Azure's layout on swtpm: the payload a guest on an Azure SEV-SNP CVM would serve.
fn azure_guest(swtpm: &Swtpm) -> (super::azure::AzureVtpmTee, Vec<u8>) {
    let tee = super::azure::simulated(&swtpm.endpoint(), &[0, 7, 15]).unwrap();
    assert!(
        tee.vtpm_attestation_key().is_none(),
        "the HCL report binds the AK"
    );
    let ConfigRegister::Vtpm { rtmr, pcr } = tee.extend_config_register(&DIGEST).unwrap() else {
        panic!("an Azure guest extends a PCR");
    };
    let log = RuntimeEventLog::config_in(rtmr, Some(pcr), &DIGEST)
        .to_cbor()
        .unwrap();
    (tee, log)
}

fn azure_payload(tee: &super::azure::AzureVtpmTee, log: &[u8]) -> EvidencePayload {
    let (payload, binding) = payload(tee, log);
    // The guest's own start check passes (HOST_DATA is the paravisor's, PCR 15 replays).
    let evidence = tee.attest(&binding).unwrap();
    crate::tee::self_check(&evidence, &binding, &DIGEST, log).unwrap();
    payload
}

#[test]
fn vtpm_simulated_azure_evidence_verifies_through_the_hcl_binding() {
    let swtpm = Swtpm::start();
    let (tee, log) = azure_guest(&swtpm);
    let payload = azure_payload(&tee, &log);
    let verified = verify(&payload).unwrap();
    let vtpm = verified.vtpm.expect("vTPM facts");
    assert_eq!(vtpm.binding, "azure-hcl");
    let replayed = RuntimeEventLog::from_cbor(&log).unwrap().replay_pcr(15);
    assert_eq!(vtpm.pcrs[&15], hex::encode(replayed));
    // The hardware REPORTDATA is the runtime data's hash, not the guest's binding.
    let hcl = cocoon_attestation::vtpm::hcl::HclReport::parse(
        payload.vtpm.as_ref().unwrap().hcl_report.as_ref().unwrap(),
    )
    .unwrap();
    assert!(verified
        .report_data
        .starts_with(&hex::encode(hcl.runtime_data_digest())));
}

#[test]
fn vtpm_azure_tampered_hcl_report_or_foreign_ak_is_refused() {
    let (swtpm, other_swtpm) = (Swtpm::start(), Swtpm::start());
    let (tee, log) = azure_guest(&swtpm);
    let payload = azure_payload(&tee, &log);

    // Runtime data edited (to name another key, say): REPORTDATA no longer commits to it.
    let mut edited = payload.clone();
    let hcl = edited.vtpm.as_mut().unwrap().hcl_report.as_mut().unwrap();
    let at = 0x4D4 + hcl[0x4D4..].iter().position(|b| *b == b'"').unwrap() + 1;
    hcl[at] ^= 0x20;
    let err = verify(&edited).unwrap_err();
    assert!(err.to_string().contains("runtime data"), "{err}");

    // Another VM's HCL report (and hardware report): it names another AK.
    let (other, other_log) = azure_guest(&other_swtpm);
    let foreign = azure_payload(&other, &other_log);
    let mut mixed = payload.clone();
    mixed.evidence = foreign.evidence.clone();
    mixed.snp_certificates = foreign.snp_certificates.clone();
    mixed.vtpm.as_mut().unwrap().hcl_report = foreign.vtpm.unwrap().hcl_report;
    let err = verify(&mixed).unwrap_err();
    assert!(err.to_string().contains("HCLAkPub"), "{err}");

    // The HCL report of this VM with another hardware report: not the one it holds.
    let mut swapped = payload.clone();
    swapped.evidence = foreign.evidence;
    let err = verify(&swapped).unwrap_err();
    assert!(err.to_string().contains("HCL report must hold"), "{err}");
}
