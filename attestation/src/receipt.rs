//! Usage receipts: what the guest says it served, signed by a key only the TEE holds.
//!
//! Billing happens outside the trust boundary, so neither the client nor the operator
//! should have to trust the other's count. The guest meters every request from the
//! engine's own token counts and signs a receipt with an Ed25519 key made at boot inside
//! the TEE; the key's public half is bound in the evidence (REPORTDATA covers it), so a
//! receipt that verifies under the attested key was issued by the attested guest.
//!
//! Receipts are per client account and carry a sequence number and cumulative totals, so
//! a dropped, replayed or reordered receipt is visible: the latest receipt alone states
//! everything owed since the key was made.
//!
//! Encoding: JWS compact serialisation (RFC 7515) with `alg: EdDSA` (RFC 8037), so any
//! JOSE library can check one: `BASE64URL(header) . BASE64URL(receipt JSON) .
//! BASE64URL(signature)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// JWS `typ` of a receipt.
pub const RECEIPT_TYPE: &str = "cocoon-usage-receipt+jws";

/// The receipt format version this crate writes and reads.
/// Version 2 added `request_sha256` and `response_sha256`.
pub const RECEIPT_VERSION: u32 = 2;

/// Token counts of one request, or cumulative counts of an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCounts {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Prompt tokens served from the prefix cache (billed at the cached price).
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

impl TokenCounts {
    /// Field-wise sum (saturating: counts never wrap).
    pub fn plus(self, other: TokenCounts) -> TokenCounts {
        TokenCounts {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            cached_tokens: self.cached_tokens.saturating_add(other.cached_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

/// Everything billed to one account since the signing key was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cumulative {
    pub requests: u64,
    pub tokens: TokenCounts,
    /// Charge for `tokens` under the price table, in the table's currency unit.
    pub charge: u64,
}

/// One signed statement of usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReceipt {
    pub version: u32,
    /// The response id the client saw (`chatcmpl-…`, `cmpl-…`).
    pub request_id: String,
    /// The client account billed.
    pub account: String,
    /// The model id that served the request.
    pub model: String,
    /// How the request ended: `stop`, `length`, `tool_calls`; `cancelled` (the client
    /// went away or stopped reading: billed for everything generated); `timeout` or
    /// `error` (the server's failure: billed for what the client was sent).
    pub finish: String,
    /// This request's tokens. `prompt_tokens` counts the prompt once per choice that
    /// prefilled it (`n` > 1 prefills it `n` times; OpenAI's `usage` shows it once).
    pub tokens: TokenCounts,
    /// SHA-256 (hex) of the request body as the guest received it.
    pub request_sha256: String,
    /// SHA-256 (hex) of the response body the guest sent: the JSON document, or every
    /// byte of the event stream up to and including `data: [DONE]` (padding included;
    /// for an abandoned stream, what was sent until then; for an answer never sent, of
    /// no bytes).
    pub response_sha256: String,
    /// This request's charge (the increase of `cumulative.charge`).
    pub charge: u64,
    /// SHA-256 (hex) of the canonical price table in the measured config.
    pub price_table_sha256: String,
    /// Unix seconds at signing.
    pub issued_at: u64,
    /// 1 for the account's first receipt under this key, then +1 each time.
    pub sequence: u64,
    pub cumulative: Cumulative,
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "usage receipt",
        detail: detail.into(),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwsHeader {
    alg: String,
    typ: String,
}

/// The guest's receipt-signing key (made at boot, never leaves the TEE).
pub struct ReceiptSigner {
    pair: Ed25519KeyPair,
}

impl ReceiptSigner {
    /// A fresh key from the system's randomness.
    pub fn generate() -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Crypto("Ed25519 key generation failed".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref())
            .map_err(|e| Error::Crypto(format!("Ed25519 key: {e}")))?;
        Ok(Self { pair })
    }

    /// The 32-byte public key, as bound in the evidence.
    pub fn public_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        key
    }

    /// Signs a TON cell's 32-byte representation hash (a voucher, `billing/PROTOCOL.md`),
    /// as TON contracts check signatures. No other message can collide with it: a
    /// receipt's signing input is base64url text with a `.`, never a bare 32-byte hash,
    /// and every signed cell starts with its own 32-bit tag.
    pub fn sign_cell_hash(&self, hash: &[u8; 32]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.pair.sign(hash).as_ref());
        signature
    }

    /// The receipt as a JWS compact string.
    pub fn sign(&self, receipt: &UsageReceipt) -> Result<String> {
        let header = serde_json::to_vec(&JwsHeader {
            alg: "EdDSA".into(),
            typ: RECEIPT_TYPE.into(),
        })
        .map_err(|e| malformed(e.to_string()))?;
        let payload = serde_json::to_vec(receipt).map_err(|e| malformed(e.to_string()))?;
        let signing_input = format!("{}.{}", B64URL.encode(header), B64URL.encode(payload));
        let signature = self.pair.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            B64URL.encode(signature.as_ref())
        ))
    }
}

/// Checks a receipt's signature under the attested receipt key (32 bytes, from the
/// verified evidence) and returns its contents.
pub fn verify_receipt(jws: &str, receipt_key: &[u8]) -> Result<UsageReceipt> {
    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "expected three dot-separated base64url parts (JWS compact)",
        ));
    };
    let decode = |what: &str, part: &str| {
        B64URL
            .decode(part)
            .map_err(|e| malformed(format!("{what} is not base64url: {e}")))
    };
    let header: JwsHeader = serde_json::from_slice(&decode("header", h)?)
        .map_err(|e| malformed(format!("header: {e}")))?;
    if header.alg != "EdDSA" || header.typ != RECEIPT_TYPE {
        return Err(malformed(format!(
            "header alg={} typ={}, expected alg=EdDSA typ={RECEIPT_TYPE}",
            header.alg, header.typ
        )));
    }
    let signature = decode("signature", s)?;
    let signing_input = &jws.trim()[..h.len() + 1 + p.len()];
    UnparsedPublicKey::new(&ED25519, receipt_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| {
            Error::BadSignature("the receipt is not signed by the attested receipt key".to_string())
        })?;
    let receipt: UsageReceipt = serde_json::from_slice(&decode("payload", p)?)
        .map_err(|e| malformed(format!("payload: {e}")))?;
    if receipt.version != RECEIPT_VERSION {
        return Err(malformed(format!(
            "version {} (this verifier reads {RECEIPT_VERSION})",
            receipt.version
        )));
    }
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> UsageReceipt {
        UsageReceipt {
            version: RECEIPT_VERSION,
            request_id: "chatcmpl-1".into(),
            account: "acct".into(),
            model: "m".into(),
            finish: "stop".into(),
            tokens: TokenCounts {
                prompt_tokens: 10,
                cached_tokens: 0,
                completion_tokens: 5,
            },
            request_sha256: "11".repeat(32),
            response_sha256: "22".repeat(32),
            charge: 7,
            price_table_sha256: "00".repeat(32),
            issued_at: 1_800_000_000,
            sequence: 1,
            cumulative: Cumulative {
                requests: 1,
                tokens: TokenCounts {
                    prompt_tokens: 10,
                    cached_tokens: 0,
                    completion_tokens: 5,
                },
                charge: 7,
            },
        }
    }

    #[test]
    fn signed_receipts_verify_under_their_key_only() {
        let signer = ReceiptSigner::generate().unwrap();
        let jws = signer.sign(&sample()).unwrap();
        assert_eq!(
            verify_receipt(&jws, &signer.public_key()).unwrap(),
            sample()
        );
        let other = ReceiptSigner::generate().unwrap();
        let err = verify_receipt(&jws, &other.public_key()).unwrap_err();
        assert!(
            err.to_string().contains("not signed by the attested"),
            "{err}"
        );
    }

    #[test]
    fn tampering_and_junk_are_refused() {
        let signer = ReceiptSigner::generate().unwrap();
        let jws = signer.sign(&sample()).unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        let mut cheaper = sample();
        cheaper.charge = 1;
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(serde_json::to_vec(&cheaper).unwrap()),
            parts[2]
        );
        assert!(verify_receipt(&forged, &signer.public_key()).is_err());
        let none = format!(
            "{}.{}.{}",
            B64URL.encode(br#"{"alg":"none","typ":"cocoon-usage-receipt+jws"}"#),
            parts[1],
            parts[2]
        );
        let err = verify_receipt(&none, &signer.public_key()).unwrap_err();
        assert!(err.to_string().contains("alg=none"), "{err}");
        for junk in ["", "a.b", "a.b.c.d", "!!.??.**", &format!("{jws}.x")] {
            assert!(
                verify_receipt(junk, &signer.public_key()).is_err(),
                "{junk}"
            );
        }
        assert!(verify_receipt(&jws, &[0u8; 5]).is_err());
    }
}
