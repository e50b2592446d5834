//! vTPM evidence recorded on real Azure confidential VMs (SEV-SNP Genoa and Milan, TDX):
//! the TPM quote, its AK's binding through the HCL report, the hardware report's chain to
//! AMD's root, and every tampering the checks exist for.

use cocoon_attestation::snp::verify::verify_report;
use cocoon_attestation::vtpm::azure::AzureEvidence;
use cocoon_attestation::vtpm::hcl::{HclReport, HclReportType};
use cocoon_attestation::vtpm::{same_key, QuoteSignature, SHA256_BANK};
use cocoon_attestation::{Error, TrustAnchors};

const GENOA: &[u8] = include_bytes!("fixtures/vtpm/azure_snp_genoa_evidence_v0.json");
const MILAN_V1: &[u8] = include_bytes!("fixtures/vtpm/azure_snp_milan_evidence_v1.json");
const MILAN_V2: &[u8] = include_bytes!("fixtures/vtpm/azure_snp_milan_evidence_v2.json");
const TDX_V1: &[u8] = include_bytes!("fixtures/vtpm/azure_tdx_evidence_v1.json");
const GENOA_CHAIN: &[u8] = include_bytes!("fixtures/snp/amd_ask_ark_genoa.pem");
const MILAN_CHAIN: &[u8] = include_bytes!("fixtures/snp/amd_ask_ark_milan.pem");

const GENOA_NONCE: &str = "0218488bae25d2509232bf676f1a66a30d7372add909109b36016ef136f2938ca05475f8b46094de6b64270ea35d950f";
const MILAN_V2_NONCE: &str = "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef";
/// 2026-01-01T00:00:00Z: inside every recorded VCEK's validity.
const AT: i64 = 1_767_225_600;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn vtpm_azure_snp_genoa_recorded_evidence_verifies_to_amd() {
    let evidence = AzureEvidence::from_json(GENOA).unwrap();
    assert_eq!(evidence.version, 0);
    let checked = evidence.check(&hex(GENOA_NONCE)).unwrap();
    assert_eq!(checked.hcl.report_type, HclReportType::SevSnp);
    assert_eq!(checked.hcl.version, 2);
    // All 24 SHA-256 PCRs quoted; PCR 0 as the independent decoder read it.
    assert_eq!(checked.quote.pcrs.len(), 24);
    assert!(hex::encode(checked.quote.sha256_pcr(0).unwrap()).starts_with("afd689d0"));
    assert!(hex::encode(&checked.quote.quote.pcr_digest).starts_with("2b30a66d"));
    // The hardware report is the one the shared test vectors hold, and it verifies to
    // AMD's Genoa ARK with the recorded VCEK.
    assert_eq!(
        checked.hcl.hardware_report,
        include_bytes!("fixtures/snp/trustee_azure_genoa_report_v3.bin")
    );
    let facts = verify_report(
        &checked.hcl.hardware_report,
        evidence.vcek_der.as_deref().unwrap(),
        GENOA_CHAIN,
        AT,
        TrustAnchors::vendor().snp_arks(),
    )
    .unwrap();
    assert_eq!(facts.product, "Genoa");
    assert_eq!(facts.report.vmpl, 0);
}

#[test]
fn vtpm_azure_snp_milan_v1_and_v2_recorded_evidence_verify() {
    for (bytes, nonce, version) in [
        (MILAN_V1, b"challenge".to_vec(), 1),
        (MILAN_V2, hex(MILAN_V2_NONCE), 2),
    ] {
        let evidence = AzureEvidence::from_json(bytes).unwrap();
        assert_eq!(evidence.version, version);
        let checked = evidence.check(&nonce).unwrap();
        let facts = verify_report(
            &checked.hcl.hardware_report,
            evidence.vcek_der.as_deref().unwrap(),
            MILAN_CHAIN,
            AT,
            TrustAnchors::vendor().snp_arks(),
        )
        .unwrap();
        assert_eq!(facts.product, "Milan");
        if version == 2 {
            // Version 2 also puts the nonce in the runtime data's user-data.
            let user = checked.hcl.runtime().unwrap().user_data.unwrap();
            assert!(user.to_lowercase().starts_with(MILAN_V2_NONCE));
        }
    }
}

#[test]
fn vtpm_azure_tdx_recorded_evidence_binds_td_quote() {
    let evidence = AzureEvidence::from_json(TDX_V1).unwrap();
    let checked = evidence.check(b"challenge").unwrap();
    assert_eq!(checked.hcl.report_type, HclReportType::Tdx);
    let td_quote = checked.td_quote.unwrap();
    // REPORTDATA = SHA-256(runtime data) || zeros, as the decoder found.
    assert!(hex::encode(td_quote.body.report_data).starts_with("9734504f"));
    assert_eq!(td_quote.body.report_data[32..], [0u8; 32]);
    assert!(hex::encode(checked.quote.sha256_pcr(0).unwrap()).starts_with("782b20b1"));
}

#[test]
fn vtpm_azure_wrong_nonce_is_refused() {
    let evidence = AzureEvidence::from_json(MILAN_V1).unwrap();
    let err = evidence.check(b"challengf").unwrap_err();
    assert!(matches!(err, Error::NonceMismatch { .. }), "{err}");
}

#[test]
fn vtpm_azure_tampered_pcr_is_refused() {
    let mut evidence = AzureEvidence::from_json(GENOA).unwrap();
    evidence.pcrs[8][0] ^= 1;
    let err = evidence.check(&hex(GENOA_NONCE)).unwrap_err();
    assert!(err.to_string().contains("PCR digest"), "{err}");
}

#[test]
fn vtpm_azure_tampered_quote_or_signature_is_refused() {
    let mut evidence = AzureEvidence::from_json(MILAN_V1).unwrap();
    let last = evidence.quote.len() - 1;
    evidence.quote[last] ^= 1;
    let err = evidence.check(b"challenge").unwrap_err();
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
    let mut evidence = AzureEvidence::from_json(MILAN_V1).unwrap();
    evidence.signature[10] ^= 1;
    let err = evidence.check(b"challenge").unwrap_err();
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
}

#[test]
fn vtpm_azure_unbound_ak_is_refused() {
    // The Milan quote with the Genoa VM's HCL report: that report names another AK.
    let mut evidence = AzureEvidence::from_json(MILAN_V1).unwrap();
    evidence.hcl_report = AzureEvidence::from_json(GENOA).unwrap().hcl_report;
    let err = evidence.check(b"challenge").unwrap_err();
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
    // Runtime data edited (another AK could be named): REPORTDATA no longer commits to it.
    let mut evidence = AzureEvidence::from_json(MILAN_V1).unwrap();
    let at = 0x4D4 + 20;
    evidence.hcl_report[at] ^= 0x01;
    let err = evidence.check(b"challenge").unwrap_err();
    assert!(
        err.to_string().contains("commit to the HCL runtime data")
            || matches!(err, Error::Malformed { .. }),
        "{err}"
    );
}

#[test]
fn vtpm_hcl_runtime_ak_matches_quote_signer_and_parser_refuses_junk() {
    let evidence = AzureEvidence::from_json(GENOA).unwrap();
    let hcl = HclReport::parse(&evidence.hcl_report).unwrap();
    let ak = hcl.runtime().unwrap().attestation_key().unwrap();
    let signature = QuoteSignature::rsassa_sha256(&evidence.signature);
    signature.verify(&ak, &evidence.quote).unwrap();
    assert!(same_key(&ak, &ak));
    assert_eq!(signature.hash(), SHA256_BANK);
    for junk in [
        &b""[..],
        b"HCLA",
        &[0u8; 2000],
        &evidence.hcl_report[..0x4D0],
    ] {
        assert!(HclReport::parse(junk).is_err());
    }
    // A runtime data length past the end is a truncation error, not a panic.
    let mut long = evidence.hcl_report.clone();
    long[0x4D0..0x4D4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(HclReport::parse(&long).is_err());
    // Unknown JSON versions and non-JSON are refused with a message.
    assert!(AzureEvidence::from_json(b"{\"version\": 9}").is_err());
    assert!(AzureEvidence::from_json(b"not json").is_err());
}

const GCE_NONCE: &[u8] = include_bytes!("fixtures/vtpm/gce_cos85_nonce9009.pb");
const GCE_NO_NONCE: &[u8] = include_bytes!("fixtures/vtpm/gce_cos85_no_nonce.pb");

#[test]
fn vtpm_gce_recorded_attestation_verifies_to_googles_pinned_root() {
    use cocoon_attestation::vtpm::google::GceAttestation;
    for (bytes, nonce) in [(GCE_NONCE, &[0x90u8, 0x09][..]), (GCE_NO_NONCE, &[][..])] {
        let attestation = GceAttestation::from_protobuf(bytes).unwrap();
        let checked = attestation.check(nonce, AT).unwrap();
        // One quote per bank (SHA-1, SHA-256, SHA-384), 24 PCRs each.
        assert_eq!(checked.quotes.len(), 3);
        assert!(checked.quotes.iter().all(|q| q.pcrs.len() == 24));
        // AK certificate → tpm_ek_v1_cloud_host signer (2020) → pinned root (2018).
        assert_eq!(checked.chain.len(), 3, "{:?}", checked.chain);
        assert!(checked.chain[1]
            .0
            .contains("tpm_ek_v1_cloud_host-signer-0-2020"));
        assert!(checked.chain[2]
            .0
            .contains("tpm_ek_v1_cloud_host_root-signer"));
        assert_eq!(
            checked.quotes[0].quote.firmware_version,
            0x2016_0511_0016_2800
        );
    }
}

#[test]
fn vtpm_gce_wrong_nonce_foreign_key_and_bad_time_are_refused() {
    use cocoon_attestation::vtpm::google::GceAttestation;
    let attestation = GceAttestation::from_protobuf(GCE_NONCE).unwrap();
    let err = attestation.check(&[0x90, 0x0a], AT).unwrap_err();
    assert!(matches!(err, Error::NonceMismatch { .. }), "{err}");
    // Before Google's intermediate was issued (2020-10-22).
    let err = attestation.check(&[0x90, 0x09], 1_577_836_800).unwrap_err();
    assert!(matches!(err, Error::CertificateChain { .. }), "{err}");
    // A modulus byte changed in the AK: the certificate no longer certifies it.
    let mut foreign = attestation.clone();
    let last = foreign.ak_pub.len() - 1;
    foreign.ak_pub[last] ^= 1;
    let err = foreign.check(&[0x90, 0x09], AT).unwrap_err();
    assert!(err.to_string().contains("certify"), "{err}");
    // A certificate whose signature was tampered with does not chain.
    let mut forged = attestation.clone();
    let n = forged.ak_cert.len();
    forged.ak_cert[n - 5] ^= 1;
    assert!(forged.check(&[0x90, 0x09], AT).is_err());
    // No certificate at all: refused, naming the rule.
    let mut bare = attestation.clone();
    bare.ak_cert.clear();
    let err = bare.check(&[0x90, 0x09], AT).unwrap_err();
    assert!(err.to_string().contains("Google's certificate"), "{err}");
    // Not a protobuf of this shape.
    assert!(GceAttestation::from_protobuf(b"\xff\xff\xff").is_err());
    assert!(GceAttestation::from_protobuf(b"").is_err());
}
