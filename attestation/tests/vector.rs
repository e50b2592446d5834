//! The published RA-TLS test vector decodes to its recorded fields and verifies (with
//! the development root allowed) at its recorded time; without it, it is refused.

use cocoon_attestation::ratls::parse_certificate;
use cocoon_attestation::report_data::certificate_binding_with;
use cocoon_attestation::{Policy, TrustAnchors, Verifier};
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
    let policy = Policy {
        accept_any_image: true,
        ..Default::default()
    };
    let allow = cocoon_attestation_dev::verifier(policy.clone()).unwrap();
    let verified = allow.verify_certificate(&der, at).unwrap();
    assert!(verified.simulated);
    assert_eq!(verified.report_data, e["report_data"].as_str().unwrap());
    let vendor_only = Verifier::new(TrustAnchors::vendor(), policy)
        .with_collateral(std::sync::Arc::new(cocoon_attestation_dev::DevCollateral));
    let refused = vendor_only.verify_certificate(&der, at).unwrap_err();
    assert!(
        refused.to_string().contains("not among the anchors"),
        "{refused}"
    );
}
