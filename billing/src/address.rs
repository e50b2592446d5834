//! TON addresses as people write them: raw (`0:<64 hex>`) or user-friendly (48 base64 or
//! base64url characters with flags and a checksum). Operators paste either into configs
//! and command lines; everything inside the protocol is a plain `addr_std` on workchain 0
//! or −1, so anything else is refused here rather than at the contract.

pub use tycho_types::cell::Cell;
pub use tycho_types::models::StdAddr;
use tycho_types::models::StdAddrFormat;

use crate::{Error, Result};

/// Parses a raw or user-friendly address (the user-friendly flags are not kept: whether
/// a message bounces is the sender's choice, made where it is built).
pub fn parse_address(text: &str) -> Result<StdAddr> {
    let text = text.trim();
    let invalid = |reason: String| Error::Invalid {
        what: "TON address",
        reason,
    };
    let (addr, _) = StdAddr::from_str_ext(text, StdAddrFormat::any()).map_err(|e| {
        invalid(format!(
            "'{}': {e} (expected 0:<64 hex digits> or a 48-character user-friendly address)",
            text.chars().take(80).collect::<String>()
        ))
    })?;
    if addr.anycast.is_some() {
        return Err(Error::Anycast);
    }
    if addr.workchain != 0 && addr.workchain != -1 {
        return Err(invalid(format!(
            "workchain {} (only 0 and -1 exist)",
            addr.workchain
        )));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_address_raw_and_user_friendly_forms_parse_to_the_same_address() {
        let raw = format!("0:{}", "ab".repeat(32));
        let addr = parse_address(&raw).unwrap();
        assert_eq!(addr.to_string(), raw);
        let friendly = addr.display_base64_url(true).to_string();
        assert_eq!(friendly.len(), 48);
        assert_eq!(parse_address(&friendly).unwrap(), addr);
        let standard = addr.display_base64(false).to_string();
        assert_eq!(parse_address(&standard).unwrap(), addr);
        for bad in ["", "0:zz", "5:", "hello", &format!("7:{}", "ab".repeat(32))] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        // One changed character breaks the user-friendly checksum.
        let mut tampered: Vec<char> = friendly.chars().collect();
        tampered[10] = if tampered[10] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert!(parse_address(&tampered).is_err());
    }
}
