//! What the (untrusted) Quote Generation Service and the TD see, on untrusted bytes:
//! `GetQuoteResponse::decode`, `GetQuoteRequest::decode`, the length prefix and
//! `TdReport::parse`. None panics; accepted messages re-encode to messages that decode
//! to the same values.
#![no_main]

use cocoon_attestation::tdx::qgs::{framed_len, GetQuoteRequest, GetQuoteResponse};
use cocoon_attestation::tdx::td_report::TdReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = GetQuoteResponse::decode(data) {
        let bytes = response.encode().expect("an accepted response encodes");
        assert_eq!(
            GetQuoteResponse::decode(&bytes).expect("and decodes"),
            response
        );
    }
    if let Ok(request) = GetQuoteRequest::decode(data) {
        let bytes = request.encode().expect("an accepted request encodes");
        assert_eq!(
            GetQuoteRequest::decode(&bytes).expect("and decodes"),
            request
        );
    }
    if let Some(prefix) = data.get(..4) {
        if let Ok(len) = framed_len([prefix[0], prefix[1], prefix[2], prefix[3]]) {
            assert!(len <= cocoon_attestation::tdx::qgs::MAX_MESSAGE_LEN);
        }
    }
    if let Ok(report) = TdReport::parse(data) {
        assert_eq!(report.report_type[0], 0x81);
    }
});
