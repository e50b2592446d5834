//! Ed25519 private keys as PKCS#8 PEM files, shared by the manifest signing key and client
//! account keys.
//!
//! PKCS#8 PEM is what `openssl genpkey -algorithm ed25519` writes, so keys made with
//! standard tools work, and one parser serves every key file this crate reads.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::{Error, Result};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

fn malformed(what: &'static str, detail: String) -> Error {
    Error::Malformed { what, detail }
}

/// A fresh key pair and its PKCS#8 (v2) PEM encoding; `what` names the key in errors.
pub(crate) fn generate(what: &'static str) -> Result<(Ed25519KeyPair, String)> {
    let rng = ring::rand::SystemRandom::new();
    let der = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| Error::Crypto("Ed25519 key generation failed".into()))?;
    let pair = from_der(der.as_ref(), what)?;
    let b64 = B64.encode(der.as_ref());
    let mut pem = String::from(PEM_BEGIN);
    pem.push('\n');
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    Ok((pair, pem))
}

/// Reads a PKCS#8 (v1 or v2) Ed25519 private key in DER.
pub(crate) fn from_der(der: &[u8], what: &'static str) -> Result<Ed25519KeyPair> {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|e| malformed(what, format!("not a PKCS#8 Ed25519 private key: {e}")))
}

/// Reads a PKCS#8 PEM private key.
pub(crate) fn from_pem(pem: &str, what: &'static str) -> Result<Ed25519KeyPair> {
    let body = pem
        .trim()
        .strip_prefix(PEM_BEGIN)
        .and_then(|rest| rest.trim_end().strip_suffix(PEM_END))
        .ok_or_else(|| malformed(what, format!("expected a '{PEM_BEGIN}' block")))?;
    let b64: String = body.split_whitespace().collect();
    let der = B64
        .decode(b64)
        .map_err(|e| malformed(what, format!("private key PEM is not base64: {e}")))?;
    from_der(&der, what)
}

/// The 32 bytes of the pair's public key.
pub(crate) fn public_key(pair: &Ed25519KeyPair) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(pair.public_key().as_ref());
    key
}
