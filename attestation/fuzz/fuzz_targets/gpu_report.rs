//! `GpuReport::parse` (SPDM GET_MEASUREMENTS request + MEASUREMENTS response, NVIDIA's
//! opaque TLVs) on untrusted bytes: never panics; what parses re-encodes to the same bytes;
//! the opaque-data accessors and the reference comparison never panic either.
#![no_main]

use cocoon_attestation::gpu::reference::{compare, ReferenceMeasurement};
use cocoon_attestation::gpu::spdm::{GpuReport, OpaqueData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = GpuReport::parse(data) {
        assert_eq!(report.to_bytes().ok().as_deref(), Some(data));
        let opaque = &report.response.opaque;
        let _ = opaque.driver_version();
        let _ = opaque.vbios_version();
        let _ = opaque.measurement_counts();
        let refs: Vec<ReferenceMeasurement> = report
            .response
            .blocks
            .iter()
            .step_by(2)
            .map(|b| ReferenceMeasurement {
                block_index: b.index,
                alternatives: vec![b.value.clone()],
                source: String::new(),
            })
            .collect();
        let c = compare(&report, &refs);
        assert!(c.passed());
        let _ = c.to_string();
    }
    if let Ok(opaque) = OpaqueData::parse(data) {
        assert_eq!(opaque.to_bytes().ok().as_deref(), Some(data));
    }
    let _ = GpuReport::parse_hex(data);
});
