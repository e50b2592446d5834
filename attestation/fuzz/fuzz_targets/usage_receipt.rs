//! Usage receipts on untrusted bytes: `verify_receipt` (what the host agent runs on every
//! receipt a guest's internal API hands it, and clients on the receipts they get) never
//! panics, whatever the text and whatever the key bytes; it only ever answers Ok for a
//! signature that verifies, which random input does not have.
#![no_main]

use cocoon_attestation::receipt::verify_receipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the key's length (a wrong length must be an error, not a
    // panic); the rest is the JWS text.
    let Some((&key_len, rest)) = data.split_first() else {
        return;
    };
    let key = vec![0x42u8; usize::from(key_len % 40)];
    let text = String::from_utf8_lossy(rest);
    assert!(verify_receipt(&text, &key).is_err());
});
