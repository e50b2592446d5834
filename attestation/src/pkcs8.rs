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

/// A fresh key pair, its seed and its PKCS#8 (v2) PEM encoding; `what` names the key in
/// errors.
pub(crate) fn generate_with_seed(what: &'static str) -> Result<(Ed25519KeyPair, [u8; 32], String)> {
    let (pair, pem) = generate(what)?;
    let der = der_from_pem(&pem, what)?;
    let seed = seed(&der, &pair, what)?;
    Ok((pair, seed, pem))
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
    from_der(&der_from_pem(pem, what)?, what)
}

/// The DER inside a PKCS#8 PEM block.
pub(crate) fn der_from_pem(pem: &str, what: &'static str) -> Result<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix(PEM_BEGIN)
        .and_then(|rest| rest.trim_end().strip_suffix(PEM_END))
        .ok_or_else(|| malformed(what, format!("expected a '{PEM_BEGIN}' block")))?;
    let b64: String = body.split_whitespace().collect();
    B64.decode(b64)
        .map_err(|e| malformed(what, format!("private key PEM is not base64: {e}")))
}

/// What every PKCS#8 Ed25519 key (RFC 8410) holds before its 32-byte seed, after the
/// outer SEQUENCE header and version: AlgorithmIdentifier { id-Ed25519 } and the
/// OCTET STRING wrapping the OCTET STRING of the seed.
const SEED_PREFIX: [u8; 11] = [
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The 32-byte seed (RFC 8032 private key) of a PKCS#8 v1 (`openssl genpkey`) or v2
/// (ring) Ed25519 key, checked against the key pair `from_der` read from the same bytes.
pub(crate) fn seed(der: &[u8], pair: &Ed25519KeyPair, what: &'static str) -> Result<[u8; 32]> {
    // 30 len 02 01 {00|01} <SEED_PREFIX> <seed> [attributes, public key]
    let known =
        der.len() >= 48 && der[0] == 0x30 && der[2..4] == [0x02, 0x01] && der[5..16] == SEED_PREFIX;
    if !known {
        return Err(malformed(
            what,
            "an Ed25519 PKCS#8 layout this reader does not know".into(),
        ));
    }
    let seed = &der[16..48];
    let mut out = [0u8; 32];
    out.copy_from_slice(seed);
    let again = Ed25519KeyPair::from_seed_unchecked(&out)
        .map_err(|_| malformed(what, "the seed is not an Ed25519 key".into()))?;
    if again.public_key().as_ref() != pair.public_key().as_ref() {
        return Err(malformed(
            what,
            "the public key in the file is not the seed's".into(),
        ));
    }
    Ok(out)
}

/// The 32 bytes of the pair's public key.
pub(crate) fn public_key(pair: &Ed25519KeyPair) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(pair.public_key().as_ref());
    key
}
