//! `ratls::parse_certificate` on untrusted DER: never panics; the evidence payload it
//! accepts survives a CBOR round trip.
#![no_main]

use cocoon_attestation::evidence::EvidencePayload;
use cocoon_attestation::ratls::parse_certificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = parse_certificate(data) {
        let cbor = cert
            .evidence
            .to_cbor()
            .expect("an accepted payload encodes");
        let back = EvidencePayload::from_cbor(&cbor).expect("a re-encoded payload decodes");
        assert_eq!(back, cert.evidence);
    }
});
