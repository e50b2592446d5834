//! Account headers on untrusted bytes: `verify_claim` (the `x-cocoon-account` and
//! `x-cocoon-account-proof` values a client sends) never panics, whatever the two values
//! are; an account id that parses prints back to the same text.
#![no_main]

use cocoon_attestation::account::{verify_claim, AccountId};
use libfuzzer_sys::fuzz_target;

const EXPORTER: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    // The first byte splits the rest into the two header values.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (account, proof) = rest.split_at(usize::from(split).min(rest.len()));
    let _ = verify_claim(Some(account), None, &EXPORTER);
    let _ = verify_claim(None, Some(proof), &EXPORTER);
    let _ = verify_claim(Some(account), Some(proof), &EXPORTER);
    if let Ok(text) = std::str::from_utf8(account) {
        if let Ok(id) = AccountId::parse(text) {
            assert_eq!(id.to_string(), text);
        }
    }
});
