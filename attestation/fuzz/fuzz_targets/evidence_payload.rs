//! `EvidencePayload::from_cbor` on untrusted bytes: never panics; what it accepts
//! re-encodes to CBOR that decodes to the same payload.
#![no_main]

use cocoon_attestation::evidence::EvidencePayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = EvidencePayload::from_cbor(data) {
        let cbor = payload.to_cbor().expect("an accepted payload encodes");
        let back = EvidencePayload::from_cbor(&cbor).expect("a re-encoded payload decodes");
        assert_eq!(back, payload);
    }
});
