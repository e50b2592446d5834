//! What the host and the firmware hand an SEV-SNP guest besides the report, on untrusted
//! bytes: `CertTable::parse` (the host's certificate table, configfs-tsm `auxblob` or the
//! `SNP_GET_EXT_REPORT` buffer) and `ReportResponse::parse` (`MSG_REPORT_RSP`). Neither
//! panics; an accepted table re-encodes to one that parses to the same certificates.
#![no_main]

use cocoon_attestation::snp::ext_report::{CertTable, ReportResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = CertTable::parse(data) {
        for entry in &table.entries {
            let _ = entry.kind.name();
            assert!(!entry.der.is_empty());
        }
        let again = CertTable::parse(&table.encode()).expect("an encoded table parses");
        assert_eq!(again, table);
    }
    if let Ok(response) = ReportResponse::parse(data) {
        assert!(!response.report.is_empty());
        assert!(response.report.len() <= data.len());
    }
});
