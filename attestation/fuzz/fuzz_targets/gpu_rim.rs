//! NVIDIA RIM parsing and XML-signature checking on untrusted bytes: `Rim::parse` and
//! `xmldsig::verify_enveloped` never panic; an accepted RIM's reference values map RIM
//! index i to SPDM block i + 1 and hold only SHA-384 values.
#![no_main]

use cocoon_attestation::gpu::rim::Rim;
use cocoon_attestation::gpu::xmldsig;
use libfuzzer_sys::fuzz_target;

/// 2024-06-01T00:00:00Z, inside the seed RIMs' certificate windows.
const AT: i64 = 1_717_200_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(rim) = Rim::parse(data) {
        let refs = rim.reference_measurements();
        assert_eq!(refs.len(), rim.active_count());
        for r in &refs {
            assert!(rim
                .measurements
                .iter()
                .any(|m| m.active && m.rim_index + 1 == u32::from(r.block_index)));
            assert!(!r.alternatives.is_empty());
            assert!(r.alternatives.iter().all(|h| h.len() == 48));
        }
        let _ = rim.verify(AT);
    } else if let Ok(root) = xmldsig::nvidia_rim_root_der() {
        let _ = xmldsig::verify_enveloped(data, &root, AT);
    }
});
