//! NVIDIA RIMs: parsing, the XML signature (canonicalization checked against independent
//! tools), the chain to the pinned root at a fixed time, tampering, and the reference
//! values against the measurements of the matching real H100 report.

use cocoon_attestation::gpu::rim::{Rim, RimKind, SHA384_LEN};
use cocoon_attestation::gpu::xmldsig;
use cocoon_attestation::Error;
use sha2::{Digest, Sha384};

const DRIVER: &[u8] = include_bytes!("fixtures/gpu/nvtrust_driver_rim_test_no_gpu.swidtag");
const VBIOS: &[u8] =
    include_bytes!("fixtures/gpu/nvtrust_vbios_rim_1010_0200_882_96005E0001_test_no_gpu.swidtag");
const RIM_ROOT_PEM: &[u8] = include_bytes!("fixtures/gpu/nvtrust_verifier_RIM_root.pem");
const REPORT_HEX: &str = include_str!("fixtures/gpu/nvtrust2023_h100_attestation_report.hex.txt");
const FOREIGN_ROOT_PEM: &[u8] = include_bytes!("fixtures/tdx/intel_sgx_root_ca.pem");

/// 2024-06-01T00:00:00Z: inside every RIM certificate's window.
const AT_2024_06_01: i64 = 1_717_200_000;
/// 2026-12-01T00:00:00Z: after the signers (June 2025) and the L3 CA (2026-11-11).
const AT_2026_12_01: i64 = 1_796_083_200;

/// SHA-384 of the canonical form (Canonical XML 1.1, no comments) of each RIM less its
/// `ds:Signature` element, as `xmllint --c14n11` (libxml2) gives it after the signature
/// element is cut out of the text. Equal to each RIM's DigestValue.
const DRIVER_DOC_C14N_SHA384: &str =
    "0dcd829b862b573145d06ea37e1a3397bf944e6d8d9e9821892971a64ea270daeb075f1cab9beef86a3d972b603887c1";
const VBIOS_DOC_C14N_SHA384: &str =
    "c1e2aaf082e2bffe2b47882e6f5b7bdf8e73bb1d69e236d043559dc82747ac406c2b841a996ccd682c8b9940c0d87b2d";
/// SHA-384 of the canonical `ds:SignedInfo` (896 bytes each), as Python lxml 6
/// `etree.tostring(signed_info, method="c14n")` gives it; Python `cryptography` verifies
/// the SignatureValue over exactly these bytes with the first certificate's key.
const DRIVER_SIGNED_INFO_SHA384: &str =
    "48bd63ad5d5734b3d0779e58dda9c9e6a2a0f28a2f0fb081dd2dba116046608ecb4481057c055a5e88bb1c8ac48ede4b";
const VBIOS_SIGNED_INFO_SHA384: &str =
    "2ba884974fb58e7d3afd3f3128852f5c88ea9cce1229ec4b222175de6411475e2a38fa3ad3d843b1799d9274700e4f22";

fn pem_der(pem: &[u8]) -> Vec<u8> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .next()
        .unwrap()
        .unwrap()
        .contents
}

fn replace_once(doc: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(doc).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from} must occur once");
    text.replacen(from, to, 1).into_bytes()
}

/// Parses `xml` (which must parse) and returns why its verification at 2024-06-01 fails.
fn verify_err(xml: &[u8]) -> Error {
    Rim::parse(xml).unwrap().verify(AT_2024_06_01).unwrap_err()
}

#[test]
fn gpu_rim_driver_and_vbios_parse() {
    let driver = Rim::parse(DRIVER).unwrap();
    assert_eq!(driver.kind, RimKind::Driver);
    assert_eq!(driver.colloquial_version, "545.00");
    assert_eq!(driver.name, "GH100");
    assert_eq!(driver.version, "1.0");
    assert_eq!(driver.product.as_deref(), Some("GH100"));
    assert_eq!(
        driver.platform_manufacturer.as_deref(),
        Some("NVIDIA Corporation")
    );
    assert!(driver.tag_id.starts_with("f0d3a263ab9e"));
    assert_eq!(driver.measurements.len(), 64);
    assert_eq!(driver.active_count(), 21);

    let vbios = Rim::parse(VBIOS).unwrap();
    assert_eq!(vbios.kind, RimKind::Vbios);
    assert_eq!(vbios.colloquial_version, "96.00.5E.00.01");
    assert_eq!(vbios.measurements.len(), 64);
    assert_eq!(vbios.active_count(), 12);

    for rim in [&driver, &vbios] {
        for m in &rim.measurements {
            assert!(!m.alternatives.is_empty());
            assert!(m.alternatives.iter().all(|h| h.len() == SHA384_LEN));
        }
    }
    // Driver index 7 (block 8), as in the file; index 23 has two alternatives; VBIOS
    // index 12 has four.
    let refs = driver.reference_measurements();
    assert_eq!(refs.len(), 21);
    assert_eq!(refs[0].block_index, 8);
    assert_eq!(
        hex::encode(&refs[0].alternatives[0]),
        "0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9"
    );
    assert_eq!(refs[0].source, "driver RIM 545.00 index 7");
    let r23 = refs.iter().find(|r| r.block_index == 24).unwrap();
    assert_eq!(r23.alternatives.len(), 2);
    let vrefs = vbios.reference_measurements();
    assert_eq!(vrefs.len(), 12);
    assert_eq!(vrefs[0].source, "VBIOS RIM 96.00.5E.00.01 index 0");
    assert_eq!(
        vrefs
            .iter()
            .find(|r| r.block_index == 13)
            .unwrap()
            .alternatives
            .len(),
        4
    );
    // The two RIMs cover disjoint blocks.
    assert!(refs
        .iter()
        .all(|r| vrefs.iter().all(|v| v.block_index != r.block_index)));
}

#[test]
fn gpu_rim_c14n_matches_reference_tools() {
    for (xml, doc_hash, si_hash) in [
        (DRIVER, DRIVER_DOC_C14N_SHA384, DRIVER_SIGNED_INFO_SHA384),
        (VBIOS, VBIOS_DOC_C14N_SHA384, VBIOS_SIGNED_INFO_SHA384),
    ] {
        let doc = xmldsig::parse_document(xml).unwrap();
        let sig = doc
            .descendants()
            .find(|n| {
                n.tag_name().namespace() == Some(xmldsig::DSIG_NS)
                    && n.tag_name().name() == "Signature"
            })
            .unwrap();
        let canonical = xmldsig::canonicalize_document(&doc, Some(sig.id())).unwrap();
        assert_eq!(hex::encode(Sha384::digest(&canonical)), doc_hash);
        let signed_info = sig.first_element_child().unwrap();
        let canonical = xmldsig::canonicalize_subtree(signed_info).unwrap();
        assert_eq!(canonical.len(), 896);
        assert_eq!(hex::encode(Sha384::digest(&canonical)), si_hash);
    }
}

#[test]
fn gpu_rim_signatures_verify_at_2024_06_01() {
    for (xml, version) in [(DRIVER, "545.00"), (VBIOS, "96.00.5E.00.01")] {
        let verified = Rim::parse_verified(xml, AT_2024_06_01).unwrap();
        assert_eq!(verified.rim.colloquial_version, version);
        let chain = &verified.signature.chain_subjects;
        assert_eq!(chain.len(), 4, "{chain:?}");
        assert!(chain[0].contains("HCC RIM L4 Signer"));
        assert!(chain[1].contains("NVIDIA Reference Value L3 GH100 001"));
        assert!(chain[2].contains("NVIDIA Reference Value GH100 CA"));
        assert!(chain[3].contains("NVIDIA CoRIM signing Root CA"));
        assert_eq!(verified.signature.digest.len(), 48);
    }
}

#[test]
fn gpu_rim_pinned_root_is_nvidias() {
    assert_eq!(
        xmldsig::nvidia_rim_root_der().unwrap(),
        pem_der(RIM_ROOT_PEM)
    );
}

#[test]
fn gpu_rim_expired_chain_fails_at_2026_12_01() {
    for xml in [DRIVER, VBIOS] {
        let err = Rim::parse(xml).unwrap().verify(AT_2026_12_01).unwrap_err();
        assert!(matches!(err, Error::CertificateExpired { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("not valid at 2026-12-01"), "{msg}");
    }
    // Mid-2025: the signer (June 2025) has expired, the L3 CA has not.
    let err = Rim::parse(DRIVER)
        .unwrap()
        .verify(1_751_328_000)
        .unwrap_err();
    assert!(err.to_string().contains("HCC RIM L4 Signer"), "{err}");
}

#[test]
fn gpu_rim_tampered_reference_hash_fails_digest_check() {
    let tampered = replace_once(
        DRIVER,
        "0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9",
        "1e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9",
    );
    // Still parses (the hash is well formed) …
    let rim = Rim::parse(&tampered).unwrap();
    // … but the signature's reference digest no longer matches.
    let err = rim.verify(AT_2024_06_01).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("digest mismatch"));
}

#[test]
fn gpu_rim_tampered_signature_value_fails() {
    let tampered = replace_once(
        DRIVER,
        "<ds:SignatureValue>/BgnH",
        "<ds:SignatureValue>/BgnI",
    );
    let err = verify_err(&tampered);
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
}

#[test]
fn gpu_rim_changed_signed_info_attribute_fails() {
    // An extra attribute on ds:Reference: the digest still matches, the signature over
    // SignedInfo does not.
    let tampered = replace_once(
        DRIVER,
        "<ds:Reference URI=\"\">",
        "<ds:Reference Id=\"r\" URI=\"\">",
    );
    let err = verify_err(&tampered);
    assert!(matches!(err, Error::BadSignature(_)), "{err}");
    // A different algorithm is refused before any crypto.
    let tampered = replace_once(
        VBIOS,
        "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#sha384\"/>",
        "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>",
    );
    let err = verify_err(&tampered);
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[test]
fn gpu_rim_without_signature_is_not_signed() {
    let text = std::str::from_utf8(DRIVER).unwrap();
    let start = text.find("<ds:Signature").unwrap();
    let end = text.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let unsigned = format!("{}{}", &text[..start], &text[end..]);
    let rim = Rim::parse(unsigned.as_bytes()).unwrap();
    assert_eq!(rim.active_count(), 21);
    let err = rim.verify(AT_2024_06_01).unwrap_err();
    assert!(matches!(err, Error::NotSigned { .. }), "{err}");
    assert!(err.to_string().contains("not signed"));
}

#[test]
fn gpu_rim_chain_to_foreign_root_fails() {
    let foreign = pem_der(FOREIGN_ROOT_PEM);
    let err = Rim::parse(DRIVER)
        .unwrap()
        .verify_with_root(&foreign, AT_2024_06_01)
        .unwrap_err();
    assert!(matches!(err, Error::UntrustedAnchor { .. }), "{err}");
    // The explicit NVIDIA root verifies.
    Rim::parse(VBIOS)
        .unwrap()
        .verify_with_root(&pem_der(RIM_ROOT_PEM), AT_2024_06_01)
        .unwrap();
}

/// Test-only reader of the SPDM 1.1 MEASUREMENTS response in the 2023 report: after the
/// 37-byte GET_MEASUREMENTS request, a 4-byte header, the block count, a 3-byte record
/// length, then blocks (index, spec, size u16 LE, DMTF type, value size u16 LE, value).
fn report_measurements() -> Vec<(u8, Vec<u8>)> {
    let bytes = hex::decode(REPORT_HEX.trim()).unwrap();
    let resp = &bytes[37..];
    assert_eq!(resp[1], 0x60, "MEASUREMENTS response code");
    let count = resp[4] as usize;
    let len = resp[5] as usize | (resp[6] as usize) << 8 | (resp[7] as usize) << 16;
    let record = &resp[8..8 + len];
    let mut out = Vec::new();
    let mut at = 0;
    for _ in 0..count {
        let index = record[at];
        let size = u16::from_le_bytes([record[at + 2], record[at + 3]]) as usize;
        let value_size = u16::from_le_bytes([record[at + 5], record[at + 6]]) as usize;
        assert_eq!(value_size + 3, size);
        out.push((index, record[at + 7..at + 7 + value_size].to_vec()));
        at += 4 + size;
    }
    assert_eq!(at, len);
    out
}

#[test]
fn gpu_rim_reference_values_match_the_2023_report() {
    let blocks = report_measurements();
    assert_eq!(blocks.len(), 64);
    let mut checked = 0;
    for xml in [DRIVER, VBIOS] {
        for r in Rim::parse(xml).unwrap().reference_measurements() {
            let (_, value) = blocks
                .iter()
                .find(|(i, _)| *i == r.block_index)
                .unwrap_or_else(|| panic!("no block {}", r.block_index));
            assert!(
                r.alternatives.contains(value),
                "{}: block {} = {}",
                r.source,
                r.block_index,
                hex::encode(value)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 33);
}

#[test]
fn gpu_rim_untrusted_input_errors_without_panic() {
    for bad in [
        &b""[..],
        b"<",
        b"\xff\xfe",
        b"<SoftwareIdentity/>",
        b"<x xmlns=\"http://standards.iso.org/iso/19770/-2/2015/schema.xsd\"/>",
    ] {
        assert!(Rim::parse(bad).is_err());
        assert!(xmldsig::verify_enveloped(bad, &pem_der(RIM_ROOT_PEM), AT_2024_06_01).is_err());
    }
    // Every truncation of a real RIM fails cleanly.
    for cut in (0..DRIVER.len()).step_by(997) {
        let _ = Rim::parse(&DRIVER[..cut]);
    }
    // Single-byte changes all over a real RIM are refused (or, inside ignorable text,
    // still verify), never a panic.
    for (n, at) in (0..VBIOS.len()).step_by(211).enumerate() {
        let mut changed = VBIOS.to_vec();
        changed[at] = [b'<', b'"', b'&', b'0', b' '][n % 5];
        if let Ok(rim) = Rim::parse(&changed) {
            let _ = rim.verify(AT_2024_06_01);
        }
    }
}
