//! The published RA-TLS test vector decodes to its recorded fields and verifies (with
//! the development root allowed) at its recorded time; without it, it is refused.

use cocoon_attestation::ratls::parse_certificate;
use cocoon_attestation::report_data::certificate_binding_with;
use cocoon_attestation::verify::{verify_certificate, VerifyOptions};
use sha2::{Digest, Sha256};

const VECTOR: &str = include_str!("vectors/ra-tls-simulated-tdx.json");

#[test]
fn vector_decodes_to_its_recorded_fields_and_verifies() {
    let v: serde_json::Value = serde_json::from_str(VECTOR).unwrap();
    let e = &v["expected"];
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(v["certificate_pem"].as_str().unwrap().as_bytes())
            .unwrap();
    let der = pem.contents;
    let cert = parse_certificate(&der).unwrap();
    assert_eq!(
        hex::encode(cert.evidence.to_cbor().unwrap()),
        v["extension_cbor_hex"].as_str().unwrap()
    );
    assert_eq!(
        cert.evidence.version as u64,
        e["payload_version"].as_u64().unwrap()
    );
    assert_eq!(serde_json::to_value(cert.evidence.kind).unwrap(), e["kind"]);
    assert_eq!(
        hex::encode(&cert.evidence.config_digest),
        e["config_digest"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(Sha256::digest(&cert.evidence.evidence)),
        e["evidence_sha256"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(Sha256::digest(&cert.spki_der)),
        e["spki_sha256"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(&cert.evidence.event_log),
        e["event_log_cbor_hex"].as_str().unwrap()
    );
    assert_eq!(
        cert.evidence.receipt_key.as_deref().map(hex::encode),
        e["receipt_key"].as_str().map(String::from)
    );
    let rd = certificate_binding_with(
        &cert.spki_der,
        &cert.evidence.config_digest,
        cert.evidence.bound_extras(),
    );
    assert_eq!(hex::encode(rd), e["report_data"].as_str().unwrap());

    let at = time::OffsetDateTime::parse(
        e["verifies_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let allow = VerifyOptions {
        allow_simulated: true,
        policy: Default::default(),
    };
    let verified = verify_certificate(&der, at, &allow).unwrap();
    assert!(verified.simulated);
    assert_eq!(verified.report_data, e["report_data"].as_str().unwrap());
    assert!(verify_certificate(&der, at, &VerifyOptions::default()).is_err());
}
