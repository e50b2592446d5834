//! Admin tokens: read from a file and judged hard to guess before anything is served.
//!
//! The admin API can drain guests and export every receipt, and it checks a token on
//! every request without locking anyone out, so a guessable token is as good as none. The
//! agent refuses at start a token that is short or whose characters follow from the ones
//! before them (repeats, runs like `abcd…` or `0123…`, text copied from earlier in the
//! token), the way the guest refuses a weak host token. Words are not recognised: the
//! check catches the lazy token, not the memorable one; generate it (`openssl rand -hex
//! 32`).
//!
//! A token must also be sendable as is in `Authorization: Bearer …` (RFC 6750's
//! `b64token` characters), so what the operator put in the file is what the client sends.

use std::collections::HashSet;
use std::path::Path;

use crate::{Error, Result};

/// Fewest characters a token may have.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Fewest bits a token may be worth by [`estimated_bits`].
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// Characters of a token that are judged (a longer token is no weaker).
const JUDGED_CHARS: usize = 512;

/// The token in `file`, trimmed (a trailing newline is not part of it). Refuses an
/// unreadable or empty file; strength is judged by [`check_strength`], not here, so the
/// client can read the same file.
pub fn read_token_file(file: &Path) -> Result<String> {
    let refuse = |message: String| Error::AdminToken {
        file: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| refuse(format!("cannot read: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(refuse(
            "is empty; put a token in it (`openssl rand -hex 32`)".into(),
        ));
    }
    Ok(token.to_string())
}

/// Whether `c` may stand in a Bearer token (RFC 6750 `b64token`; `=` only at the end).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/".contains(c)
}

/// Refuses a token that is not a valid Bearer token, is shorter than
/// [`MIN_TOKEN_CHARS`], or is worth less than [`MIN_TOKEN_BITS`] by [`estimated_bits`];
/// the message says which and how to make a good one.
pub fn check_strength(token: &str) -> std::result::Result<(), String> {
    let body = token.trim_end_matches('=');
    if body.is_empty() || !body.chars().all(is_token_char) {
        return Err(
            "the token may hold only letters, digits and -._~+/ (and = at its end), \
             so that it can be sent as a Bearer token"
                .into(),
        );
    }
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(format!(
            "the token has {chars} characters, fewer than {MIN_TOKEN_CHARS}; make one with \
             `openssl rand -hex 32`"
        ));
    }
    let bits = estimated_bits(token);
    if bits < MIN_TOKEN_BITS {
        return Err(format!(
            "the token is too easy to guess: about {bits:.0} bits ({MIN_TOKEN_BITS:.0} \
             needed; repeats and runs count for little); make one with `openssl rand -hex 32`"
        ));
    }
    Ok(())
}

/// Bits of the smallest common alphabet that holds every character of `token`: digits,
/// hex digits, one case and digits, letters and digits, base64, Bearer token characters.
fn alphabet_bits(token: &str) -> f64 {
    let all = |ok: fn(char) -> bool| token.chars().all(ok);
    let size: u32 = if all(|c| c.is_ascii_digit()) {
        10
    } else if all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        || all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    {
        16
    } else if all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        || all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        36
    } else if all(|c| c.is_ascii_alphanumeric()) {
        62
    } else if all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        || all(|c| c.is_ascii_alphanumeric() || "-_=".contains(c))
    {
        64
    } else {
        67
    };
    f64::from(size).log2()
}

/// A conservative estimate of what a token is worth, in bits: the characters that do not
/// follow from the ones before them, each worth as much as a character of the smallest
/// common alphabet holding the token. A character follows from the ones before it when it
/// continues a run of equal steps (`aaa`, `abc`, `246`) or when the pair it ends (its
/// predecessor and itself) stood earlier in the token (`abab…`, a word typed twice).
pub fn estimated_bits(token: &str) -> f64 {
    let bytes = &token.as_bytes()[..token.len().min(JUDGED_CHARS)];
    let mut seen_pairs = HashSet::new();
    let mut fresh = 0u32;
    for (i, &byte) in bytes.iter().enumerate() {
        let continues_run =
            i >= 2 && byte.wrapping_sub(bytes[i - 1]) == bytes[i - 1].wrapping_sub(bytes[i - 2]);
        let repeats_pair = i >= 1 && !seen_pairs.insert((bytes[i - 1], byte));
        if !continues_run && !repeats_pair {
            fresh += 1;
        }
    }
    f64::from(fresh) * alphabet_bits(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl rand -hex 32`, `openssl rand -base64 32` and `-base64 24` outputs.
    const STRONG: [&str; 3] = [
        "c035cc8a9d7cbdafcf51c5ad9010f51845c77da18d5c65fe9686399e47237dcf",
        "GLJ05zRk2RJwS7uuWkFhokcydJ5NFldVVCa3CFzOuKg=",
        "QZqpZidJ5f30+WrsXQehJ2GBCKMEqFa6",
    ];

    #[test]
    fn generated_tokens_pass() {
        for token in STRONG {
            assert_eq!(check_strength(token), Ok(()), "{token}");
        }
    }

    #[test]
    fn guessable_tokens_are_refused_with_the_reason() {
        let cases = [
            ("a".repeat(40), "too easy to guess"),
            ("ab".repeat(20), "too easy to guess"),
            ("0123456789".repeat(4), "too easy to guess"),
            ("abcdefghijklmnopqrstuvwxyzABCDEFGH".to_string(), "too easy"),
            ("passwordpasswordpasswordpassword".to_string(), "too easy"),
            (STRONG[0][..31].to_string(), "31 characters"),
            (
                "c035cc8a 9d7cbdafcf51c5ad9010f51845c77".to_string(),
                "only letters",
            ),
            (
                "c035cc8a!9d7cbdafcf51c5ad9010f51845c77".to_string(),
                "only letters",
            ),
        ];
        for (token, why) in cases {
            let err = check_strength(&token).expect_err(&token);
            assert!(err.contains(why), "{token}: {err}");
        }
    }

    #[test]
    fn repeats_and_runs_count_for_little() {
        assert!(estimated_bits(&"x".repeat(500)) < 12.0);
        assert!(estimated_bits(&STRONG[0].repeat(8)) < estimated_bits(STRONG[0]) + 8.0);
        assert!(estimated_bits(STRONG[0]) > 180.0);
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("cocoon-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, format!("  {}\n", STRONG[0])).unwrap();
        assert_eq!(read_token_file(&file).unwrap(), STRONG[0]);
        std::fs::write(&file, " \n").unwrap();
        let err = read_token_file(&file).unwrap_err().to_string();
        assert!(err.contains("is empty") && err.contains("token"), "{err}");
        let missing = dir.join("missing");
        let err = read_token_file(&missing).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
