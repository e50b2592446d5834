//! `GpuEvidenceDocument::parse` and `verify_served_gpu` (`GET /v1/attestation/gpu`, served
//! by an untrusted host's relay) on untrusted bytes: never panic; what parses re-serialises
//! and re-parses to the same document.
#![no_main]

use cocoon_attestation::gpu::{verify_served_gpu, GpuEvidenceDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = GpuEvidenceDocument::parse(data) {
        let again = GpuEvidenceDocument::parse(&doc.to_json()).expect("re-parses");
        assert_eq!(again, doc);
        let _ = doc.evidence();
    }
    let check = verify_served_gpu(data, b"spki", &[0; 48], 1_700_000_000, &[], &[]);
    assert!(!check.verified, "no root is trusted: nothing verifies");
});
