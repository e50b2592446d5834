//! Escrow cells on untrusted bytes: the guest parses every client's
//! `x-cocoon-escrow-authorization` header, and the host agent every voucher a guest's
//! internal API hands it. Whatever the bytes, parsing ends in a value or an error, never a
//! panic, a hang or an allocation beyond the BoC limits; and whatever parses re-encodes
//! to the same bytes' cell (the strict parsers accept only canonical cells).
#![no_main]

use cocoon_billing::layout::{CellLayout, EscrowMessage, SignedAuthorization, SignedVoucher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(auth) = SignedAuthorization::from_header_value(&text) {
                let again = SignedAuthorization::from_boc(&auth.to_boc().unwrap()).unwrap();
                assert_eq!(again, auth);
            }
        }
        1 => {
            if let Ok(voucher) = SignedVoucher::from_boc(rest) {
                let again = SignedVoucher::from_boc(&voucher.to_boc().unwrap()).unwrap();
                assert_eq!(again, voucher);
                // Checking the signature never panics either (the seed is validly signed).
                let _ = voucher.verify();
            }
        }
        2 => {
            let _ = SignedAuthorization::from_boc(rest);
        }
        _ => {
            let _ = EscrowMessage::from_boc(rest);
        }
    }
});
