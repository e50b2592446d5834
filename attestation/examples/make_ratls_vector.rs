//! Writes the RA-TLS test vector `tests/vectors/ra-tls-simulated-tdx.json`: a
//! certificate with simulated TDX evidence and the fields a compatible verifier must
//! decode from it. Run once; the committed vector is what `tests/vector.rs` checks.
//!
//! `cargo run -p cocoon-attestation --example make_ratls_vector -- attestation/tests/vectors`

use cocoon_attestation::evidence::{EvidenceKind, EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::ratls::{
    build_certificate, certificate_pem, CertificateParams, SubjectAltName, TlsKey,
};
use cocoon_attestation::report_data::{certificate_binding_with, BoundExtras};
use cocoon_attestation_dev::{SimulatedTdConfig, SimulatedTdx};
use sha2::{Digest, Sha256, Sha384};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "attestation/tests/vectors".into()),
    );
    let key = TlsKey::generate()?;
    let config_digest: [u8; 48] = Sha384::digest(b"cocoon test vector config").into();
    // The receipt key of RFC 8032's first Ed25519 test vector: any 32 bytes would do.
    let receipt_key =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")?;
    let report_data = certificate_binding_with(
        key.spki_der(),
        &config_digest,
        BoundExtras {
            receipt_key: Some(&receipt_key),
            gpu_evidence_digest: None,
            vtpm_ak: None,
        },
    );
    let td = SimulatedTdConfig {
        config_digest: config_digest.to_vec(),
        debug: false,
    };
    let quote = SimulatedTdx::dev()?.quote(&report_data, &td)?;
    let event_log = td.event_log()?;
    let payload = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: EvidenceKind::Tdx,
        evidence: quote.clone(),
        event_log: event_log.clone(),
        config_digest: config_digest.to_vec(),
        gpu_evidence_digest: None,
        receipt_key: Some(receipt_key.clone()),
        snp_certificates: None,
        vtpm: None,
    };
    let not_before = time::macros::datetime!(2026-01-01 00:00 UTC);
    let not_after = time::macros::datetime!(2036-01-01 00:00 UTC);
    let der = build_certificate(
        &key,
        &CertificateParams {
            common_name: "cocoon-guest",
            subject_alt_names: &[
                SubjectAltName::parse("localhost"),
                SubjectAltName::parse("127.0.0.1"),
            ],
            not_before,
            not_after,
            evidence: &payload,
        },
    )?;
    let vector = serde_json::json!({
        "description": "RA-TLS certificate with simulated TDX evidence (Cocoon development PKI)",
        "certificate_pem": certificate_pem(&der),
        "extension_oid": cocoon_attestation::oid::EVIDENCE_EXTENSION,
        "extension_cbor_hex": hex::encode(payload.to_cbor()?),
        "expected": {
            "payload_version": PAYLOAD_VERSION,
            "kind": "tdx",
            "config_digest": hex::encode(config_digest),
            "evidence_sha256": hex::encode(Sha256::digest(&quote)),
            "event_log_cbor_hex": hex::encode(&event_log),
            "rtmr3_rule": "replay of the event log: RTMR3 = SHA-384(0^48 || config_digest)",
            "spki_sha256": hex::encode(Sha256::digest(key.spki_der())),
            "report_data": hex::encode(report_data),
            "receipt_key": hex::encode(&receipt_key),
            "report_data_rule": "SHA-512(\"cocoon/ra-tls/cert/v1\" || u32be(len(SPKI)) || SPKI || u32be(48) || config_digest || u32be(11) || \"receipt-key\" || u32be(32) || receipt_key)",
            "verifies_at": "2030-01-01T00:00:00Z",
            "verifies_with": "the development TDX root as a trust anchor (--allow-simulated) and the development collateral"
        }
    });
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ra-tls-simulated-tdx.json");
    std::fs::write(&path, serde_json::to_string_pretty(&vector)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}
