//! Writes the generated fuzz seeds (an RA-TLS certificate, evidence payloads, a signed
//! manifest) into
//! `fuzz/seeds/`. The real quote and report seeds are copies of the test fixtures.
//!
//! `cargo run -p cocoon-attestation --example fuzz_seeds -- attestation/fuzz/seeds`

use std::path::PathBuf;

use cocoon_attestation::evidence::{EvidenceKind, EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::manifest::{Manifest, ManifestSigningKey, SnpReference, TdxReference};
use cocoon_attestation::ratls::{build_certificate, CertificateParams, SubjectAltName, TlsKey};
use cocoon_attestation::report_data::certificate_binding;
use cocoon_attestation_dev::{SimulatedTdConfig, SimulatedTdx};
use time::OffsetDateTime;

const SNP_REPORT: &[u8] = include_bytes!("../tests/fixtures/snp/gosev_milan_attestation.bin");

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "attestation/fuzz/seeds".into()),
    );
    let key = TlsKey::generate()?;
    let config_digest = vec![0x5a; 48];
    let report_data = certificate_binding(key.spki_der(), &config_digest);
    let td = SimulatedTdConfig {
        config_digest: config_digest.clone(),
        debug: false,
    };
    let quote = SimulatedTdx::dev()?.quote(&report_data, &td)?;
    let simulated = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: EvidenceKind::Tdx,
        evidence: quote,
        event_log: td.event_log()?,
        config_digest: config_digest.clone(),
        gpu_evidence_digest: None,
        receipt_key: None,
        snp_certificates: None,
        vtpm: None,
    };
    let snp = EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: EvidenceKind::SevSnp,
        evidence: SNP_REPORT.to_vec(),
        event_log: vec![1, 2, 3],
        config_digest,
        gpu_evidence_digest: Some(vec![0xa5; 48]),
        receipt_key: Some(vec![0x5a; 32]),
        snp_certificates: None,
        vtpm: None,
    };
    // Fixed dates so that the seed only changes with the key and serial.
    let not_before = OffsetDateTime::from_unix_timestamp(1_751_328_000)?;
    let not_after = OffsetDateTime::from_unix_timestamp(1_751_328_000 + 86_400)?;
    let cert = build_certificate(
        &key,
        &CertificateParams {
            common_name: "cocoon-guest",
            subject_alt_names: &[
                SubjectAltName::parse("localhost"),
                SubjectAltName::parse("127.0.0.1"),
            ],
            not_before,
            not_after,
            evidence: &simulated,
        },
    )?;
    // The seed must be accepted by the parser it feeds.
    cocoon_attestation::ratls::parse_certificate(&cert)?;

    let write = |sub: &str, name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)?;
        println!("{} ({} bytes)", d.join(name).display(), bytes.len());
        Ok(())
    };
    write("ratls_certificate", "simulated_tdx_cert.der", &cert)?;
    write(
        "evidence_payload",
        "simulated_tdx.cbor",
        &simulated.to_cbor()?,
    )?;
    write("evidence_payload", "sev_snp_gpu.cbor", &snp.to_cbor()?)?;

    // A manifest for both TEEs, signed with the RFC 8410 example key (Ed25519 signatures
    // are deterministic, so the seed is stable).
    let manifest = Manifest {
        version: 1,
        image: "cocoon-guest fuzz seed".into(),
        release: 1,
        not_after: "2030-01-01T00:00:00Z".into(),
        tdx: Some(TdxReference {
            mrtd: "11".repeat(48),
            rtmr0: "22".repeat(48),
            rtmr1: "33".repeat(48),
            rtmr2: "44".repeat(48),
            td_attributes: None,
            xfam: None,
        }),
        sev_snp: Some(SnpReference {
            measurements: vec!["55".repeat(48)],
            min_tcb: None,
        }),
        config_digests: vec!["66".repeat(48)],
        vtpm_pcrs: Default::default(),
    };
    let key = ManifestSigningKey::from_pem(
        "-----BEGIN PRIVATE KEY-----\n\
         MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
         -----END PRIVATE KEY-----\n",
    )?;
    write("manifest", "signed_manifest.json", &manifest.sign(&key)?)?;
    write("manifest", "payload.json", &manifest.to_json()?)?;
    Ok(())
}
