//! The internal endpoint the host agent collects receipts from.
//!
//! The host agent sits outside the TEE and relays TLS it cannot read, so it cannot see the
//! receipts that go to clients. It collects its own copy here, authenticated with a bearer
//! token the operator gives the guest at launch (`--host-token-file`). The token only
//! guards *who may drain the journal*; receipts are signed, so a host cannot alter them,
//! only fail to collect them, and then the guest stops taking work (see `meter`).
//!
//! These routes are served only on a separate listener (`--internal-listen`, plain HTTP on
//! a loopback address: in a VM, an address only the host reaches), never on the public TLS
//! port that the relay forwards, so no client reaches them and a guessing client costs the
//! collector nothing. Without a token there is no collector: no listener, no journal.
//!
//! - `GET /internal/v1/receipts?after=N&limit=M` → `{"object":"list","data":[{"index",
//!   "receipt"}],"receipt_key": hex}`
//! - `POST /internal/v1/receipts/ack` with `{"upto": N}` → `{"acknowledged": count}`
//!
//! The token must be hard to guess, judged by its content, not its length: a simple
//! entropy estimate ([`estimated_bits`]: repeats and runs count for little) must reach
//! [`MIN_TOKEN_BITS`] bits and zxcvbn must find no guessable pattern (words, keyboard
//! walks), so `"a"×32`, `"abab…"` or `"0123…"` are refused at start and
//! `openssl rand -hex 32` (or `-base64 32`) passes.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api_error::ApiError;
use crate::meter::Meter;

/// Longest page of receipts one call returns.
pub const MAX_PAGE: usize = 1000;

/// Least strength of a host token, in bits by [`estimated_bits`].
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// Least zxcvbn estimate, in bits. zxcvbn counts guesses in a `u64`, so its estimate
/// stops at 64 bits: it serves to find patterns (words, keyboard walks, dates, sequences),
/// the entropy estimate to find length.
const MIN_ZXCVBN_BITS: f64 = 60.0;

/// Characters of a token that are judged (a longer token is no weaker).
const JUDGED_CHARS: usize = 256;

/// Bits of a token by a simple, conservative estimate: the empirical Shannon entropy per
/// character (of the characters, or of the steps between neighbours, whichever is less, so
/// runs like `0123…` count for little) times the number of characters a copy of earlier
/// text does not explain (a greedy LZ77 parse: a repeat of 3 or more characters counts as
/// one), so `aaaa…`, `abab…` or a word typed four times are worth a few characters.
pub fn estimated_bits(token: &str) -> f64 {
    let bytes = &token.as_bytes()[..token.len().min(JUDGED_CHARS)];
    let n = bytes.len();
    let mut units = 0usize;
    let mut i = 0;
    while i < n {
        let longest = (0..i)
            .map(|j| {
                (0..n - i)
                    .take_while(|&k| bytes[j + k] == bytes[i + k])
                    .count()
            })
            .max()
            .unwrap_or(0);
        units += 1;
        i += if longest >= 3 { longest } else { 1 };
    }
    fn entropy(values: impl Iterator<Item = u8>) -> f64 {
        let mut counts = [0usize; 256];
        let mut total = 0usize;
        for v in values {
            counts[usize::from(v)] += 1;
            total += 1;
        }
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total as f64;
                -p * p.log2()
            })
            .sum()
    }
    let characters = entropy(bytes.iter().copied());
    let steps = entropy(bytes.windows(2).map(|w| w[1].wrapping_sub(w[0])));
    characters.min(steps) * units as f64
}

/// The bearer token the host agent must present (SHA-256 of it is kept, not the token).
pub struct HostToken {
    sha256: [u8; 32],
}

impl HostToken {
    /// A token (trimmed) that is hard to guess: at least [`MIN_TOKEN_BITS`] by
    /// [`estimated_bits`], and no pattern zxcvbn knows (words, keyboard walks, dates);
    /// others are refused at start with the estimates.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        let bits = estimated_bits(token);
        let zxcvbn_bits = zxcvbn::zxcvbn(&token.chars().take(100).collect::<String>(), &[])
            .guesses_log10()
            * std::f64::consts::LOG2_10;
        if !(bits >= MIN_TOKEN_BITS && zxcvbn_bits >= MIN_ZXCVBN_BITS) {
            return Err(format!(
                "the host token is too easy to guess: about {:.0} bits by entropy \
                 ({MIN_TOKEN_BITS:.0} needed) and {:.0} by zxcvbn's pattern search \
                 ({MIN_ZXCVBN_BITS:.0} needed), {} characters; make one with \
                 `openssl rand -hex 32`",
                bits.max(0.0),
                zxcvbn_bits.max(0.0),
                token.chars().count()
            ));
        }
        Ok(Self {
            sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }

    fn matches(&self, presented: &str) -> bool {
        // Digests are compared without an early exit, so timing says nothing about them.
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(&self.sha256)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// Checks the `Authorization` header value against the configured token.
pub fn authorize(token: Option<&HostToken>, authorization: Option<&str>) -> Result<(), ApiError> {
    let token = token.ok_or_else(ApiError::internal_api_disabled)?;
    let presented = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::invalid_host_token())
    }
}

/// Parses `after=N&limit=M` (both optional).
fn page(query: Option<&str>) -> Result<(u64, usize), ApiError> {
    let (mut after, mut limit) = (0u64, 100usize);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            ApiError::invalid(
                format!("'{name}' must be {what}, got '{value}'"),
                Some(name.to_string()),
                Some("invalid_value"),
            )
        };
        match name {
            "after" => after = value.parse().map_err(|_| bad("a non-negative integer"))?,
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| bad(&format!("an integer from 1 to {MAX_PAGE}")))?
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("unknown query parameter '{name}' (known: after, limit)"),
                    Some(name.to_string()),
                    Some("unknown_parameter"),
                ))
            }
        }
    }
    Ok((after, limit))
}

fn meter_error(e: crate::Error) -> ApiError {
    ApiError::internal("meter_error", e.to_string())
}

/// `GET /internal/v1/receipts`.
pub fn list_receipts(meter: &Meter, query: Option<&str>) -> Result<Value, ApiError> {
    let (after, limit) = page(query)?;
    let entries = meter.pending(after, limit).map_err(meter_error)?;
    Ok(json!({
        "object": "list",
        "data": entries,
        "receipt_key": hex::encode(meter.public_key()),
    }))
}

/// `POST /internal/v1/receipts/ack` with body `{"upto": N}`.
pub fn acknowledge(meter: &Meter, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ack {
        upto: u64,
    }
    let ack: Ack = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            format!("the body must be {{\"upto\": <index>}}: {e}"),
            None,
            Some("invalid_json"),
        )
    })?;
    let n = meter.acknowledge(ack.upto).map_err(meter_error)?;
    Ok(json!({"acknowledged": n}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PriceTable;
    use cocoon_attestation::receipt::TokenCounts;
    use hyper::StatusCode;

    fn meter() -> Meter {
        Meter::new(
            PriceTable {
                currency: "nanoton".into(),
                prompt_per_million: 1,
                cached_prompt_per_million: 1,
                completion_per_million: 1,
            },
            10,
            10,
        )
        .unwrap()
    }

    /// What `openssl rand -hex 32` printed once.
    const STRONG: &str = "372e6511537134e8d6940693fa82498804d75a3c675a82de789c7ed7fd91438d";

    #[test]
    fn tokens_are_judged_by_content_not_length() {
        for weak in [
            "short".to_string(),
            "a".repeat(32),
            "a".repeat(200),
            "ab".repeat(32),
            "0123456789abcdef".repeat(4),
            "0123456789abcdef0123456789abcdef-host-token".to_string(),
            "passwordpasswordpasswordpassword1".to_string(),
            "qwertyuiopasdfghjklzxcvbnm1234567890".to_string(),
            String::new(),
            // `openssl rand -hex 16`: 128 random bits, but an estimate from 32 characters
            // reads less (about 110): the documented token is 32 bytes.
            "74209365eecd1ecb6d7154643da54580".to_string(),
        ] {
            let err = HostToken::new(&weak)
                .err()
                .unwrap_or_else(|| panic!("{weak:?} accepted"));
            assert!(err.contains("too easy to guess"), "{err}");
        }
        for strong in [
            STRONG,
            // `openssl rand -base64 32`
            "rJF4YSJaKeimTl0DdBG5+XVBilmA6jQYB4cofJbsFxw=",
            // trailing newline from `> file`
            "372e6511537134e8d6940693fa82498804d75a3c675a82de789c7ed7fd91438d\n",
        ] {
            assert!(HostToken::new(strong).is_ok(), "{strong:?} refused");
        }
    }

    #[test]
    fn the_estimate_counts_what_repeats_do_not_explain() {
        assert_eq!(estimated_bits(""), 0.0);
        assert_eq!(estimated_bits(&"a".repeat(1000)), 0.0);
        assert!(estimated_bits(&"ab".repeat(500)) < 8.0);
        // 16 distinct characters once: 16 x 4 bits at most, however often repeated.
        assert!(estimated_bits(&"0123456789abcdef".repeat(10)) < 64.0);
        assert!(estimated_bits(STRONG) > 200.0, "{}", estimated_bits(STRONG));
    }

    #[test]
    fn tokens_are_required_and_compared_exactly() {
        let token = HostToken::new(STRONG).unwrap();
        let ok = format!("Bearer {STRONG}");
        assert!(authorize(Some(&token), Some(&ok)).is_ok());
        let other = format!("Bearer {}", &STRONG[1..]);
        for bad in [
            None,
            Some("Bearer "),
            Some("tttt"),
            Some("Basic abc"),
            Some(STRONG),
            Some(other.as_str()),
        ] {
            assert_eq!(
                authorize(Some(&token), bad).unwrap_err().status,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            authorize(None, Some(&ok)).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn pages_and_acknowledgements() {
        let m = meter();
        for i in 0..3 {
            let id = format!("r{i}");
            m.record(
                "a",
                &crate::meter::tests::billed(&id, "stop", TokenCounts::default()),
            )
            .unwrap();
        }
        let body = list_receipts(&m, Some("after=1&limit=1")).unwrap();
        assert_eq!(body["data"][0]["index"], 2);
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        for bad in ["limit=0", "after=-1", "limit=99999", "colour=red"] {
            assert_eq!(
                list_receipts(&m, Some(bad)).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(
            acknowledge(&m, br#"{"upto":2}"#).unwrap()["acknowledged"],
            2
        );
        assert_eq!(
            acknowledge(&m, b"{}").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(list_receipts(&m, None).unwrap()["data"][0]["index"], 3);
    }
}
