//! `SnpReport::parse` on untrusted bytes: never panics, nor do its accessors.
#![no_main]

use cocoon_attestation::snp::report::SnpReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = SnpReport::parse(data) {
        let _ = report.product();
        let _ = report.signed_by_vlek();
        let _ = report.chip_id_masked();
        let _ = report.policy.debug_allowed();
        let _ = report.reported_tcb.to_string();
    }
});
