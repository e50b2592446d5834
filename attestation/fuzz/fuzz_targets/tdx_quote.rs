//! `TdxQuote::parse` on untrusted bytes: never panics; a quote it accepts re-encodes to
//! bytes that parse to the same quote.
#![no_main]

use cocoon_attestation::tdx::quote::TdxQuote;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = TdxQuote::parse(data) {
        let _ = quote.body.debug();
        let again = quote.to_bytes();
        let reparsed = TdxQuote::parse(&again).expect("a re-encoded quote parses");
        assert_eq!(reparsed, quote, "parse(to_bytes(q)) != q");
    }
});
