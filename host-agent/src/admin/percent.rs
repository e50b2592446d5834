//! Percent-encoding of the few values that travel in admin URLs: guest names in paths,
//! account IDs in queries (a TON address holds `:`, `+` or `/`). The client encodes every
//! byte outside RFC 3986's unreserved set; the server decodes `%XX` (and `+` as a space
//! in queries, as forms send it) and refuses what is not UTF-8.

/// `value` with every byte outside `A-Z a-z 0-9 - . _ ~` written as `%XX`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `value` with `%XX` decoded (and `+` as a space when `plus_is_space`); `None` for a
/// broken escape or bytes that are not UTF-8.
pub fn decode(value: &str, plus_is_space: bool) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let high = char::from(bytes.next()?).to_digit(16)?;
                let low = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(high * 16 + low).ok()?);
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_anything() {
        for value in ["plain", "0:ab+cd/ef==", "a b%c", "ünï", "", "x?y&z=1#"] {
            let encoded = encode(value);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                "{encoded}"
            );
            assert_eq!(decode(&encoded, true).as_deref(), Some(value));
        }
    }

    #[test]
    fn refuses_broken_escapes() {
        assert_eq!(decode("a%2", false), None);
        assert_eq!(decode("a%zz", false), None);
        assert_eq!(decode("%ff", false), None, "not UTF-8");
        assert_eq!(decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(decode("a+b", true).as_deref(), Some("a b"));
    }
}
