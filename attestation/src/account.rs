//! Client accounts: an account is an Ed25519 public key, proven inside the attested TLS
//! session.
//!
//! The guest signs usage receipts naming the account they bill, and the escrow that pays
//! for them is owned by that account's key. A name a client merely asserts would let anyone
//! (the operator included, who can be a client of his own relay) have receipts signed that
//! bill someone else. So an account is a public key, written [`AccountId`]
//! (`ed25519:<64 lowercase hex>`), and every request that names one carries a proof:
//! an Ed25519 signature by that key over
//!
//! `"cocoon/account-proof/v1" || u32be(32) || exporter`
//!
//! where `exporter` is the RFC 9266 `EXPORTER-Channel-Binding` value (32 bytes, no
//! context) of the TLS session the request travels in. The guest computes the exporter of
//! its own side of the session, never taking it from the request, so a proof is good in
//! exactly one session: replayed in another one (by a man in the middle who terminated the
//! client's TLS, or from a log) it fails. Both sides contribute fresh randomness to every
//! TLS 1.3 handshake, so no extra guest nonce is needed (`attestation/docs/RA-TLS.md`).
//!
//! Headers: `x-cocoon-account: ed25519:<hex>` and `x-cocoon-account-proof: <base64url,
//! no padding, of the 64-byte signature>`. Private keys are PKCS#8 PEM, as for manifest
//! keys (`openssl genpkey -algorithm ed25519` keys work).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};

use crate::{Error, Result};

/// Request header that names the account a request is billed to.
pub const ACCOUNT_HEADER: &str = "x-cocoon-account";

/// Request header that carries the account's proof for this TLS session.
pub const ACCOUNT_PROOF_HEADER: &str = "x-cocoon-account-proof";

/// Domain tag of the signed proof message.
pub const ACCOUNT_PROOF_TAG: &[u8] = b"cocoon/account-proof/v1";

/// How an account id starts.
pub const ACCOUNT_ID_PREFIX: &str = "ed25519:";

/// Length of an encoded proof: base64url without padding of 64 bytes.
const PROOF_CHARS: usize = 86;

fn bad_account(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "account",
        detail: detail.into(),
    }
}

/// An account: the Ed25519 public key that owns it. Its text form,
/// `ed25519:<64 lowercase hex>`, is the only one accepted, so one key is one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// Parses `ed25519:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self> {
        let hex_part = text.strip_prefix(ACCOUNT_ID_PREFIX).ok_or_else(|| {
            bad_account(format!(
                "'{}' is not an account id: expected {ACCOUNT_ID_PREFIX}<64 lowercase hex \
                 digits of an Ed25519 public key>",
                shorten(text)
            ))
        })?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad_account(format!(
                "'{}': the key must be exactly 64 lowercase hex digits",
                shorten(text)
            )));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut key)
            .map_err(|e| bad_account(format!("'{}': {e}", shorten(text))))?;
        Ok(Self(key))
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ACCOUNT_ID_PREFIX}{}", hex::encode(self.0))
    }
}

impl FromStr for AccountId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// At most 80 characters of untrusted text, for error messages.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// The bytes an account proof signs for the TLS session with this exporter.
pub fn proof_message(exporter: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ACCOUNT_PROOF_TAG.len() + 4 + exporter.len());
    message.extend_from_slice(ACCOUNT_PROOF_TAG);
    message.extend_from_slice(&(exporter.len() as u32).to_be_bytes());
    message.extend_from_slice(exporter);
    message
}

/// An account's private key (kept by the client, never sent anywhere).
///
/// The same key owns the account's escrow (`billing/PROTOCOL.md`) and controls the
/// client's TON wallet, so it is also made from a TON mnemonic ([`AccountKey::from_seed`]
/// with the seed TON wallets derive) and keeps its seed for the wallet.
pub struct AccountKey {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
}

impl AccountKey {
    /// A fresh key, returned with its PKCS#8 PEM encoding.
    pub fn generate() -> Result<(Self, String)> {
        let (pair, seed, pem) = crate::pkcs8::generate_with_seed("account key")?;
        Ok((Self { pair, seed }, pem))
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = crate::pkcs8::der_from_pem(pem, "account key")?;
        let pair = crate::pkcs8::from_der(&der, "account key")?;
        let seed = crate::pkcs8::seed(&der, &pair, "account key")?;
        Ok(Self { pair, seed })
    }

    /// The key with this 32-byte seed (the RFC 8032 private key; for a TON mnemonic, the
    /// first 32 bytes of the seed TON derives from the words).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| bad_account("the seed is not an Ed25519 private key"))?;
        Ok(Self { pair, seed: *seed })
    }

    /// The 32-byte seed, for the TON wallet this key controls. Secret: it is the key.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The key pair, for signing TON payloads (authorizations and owner requests of the
    /// escrow, `cocoon_billing::layout`): those sign a cell's 32-byte representation
    /// hash, and each cell starts with its own tag and names its escrow, so none can be
    /// taken for an account proof (whose message is longer than 32 bytes).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// The account this key owns.
    pub fn id(&self) -> AccountId {
        AccountId(crate::pkcs8::public_key(&self.pair))
    }

    /// The `x-cocoon-account-proof` value for the TLS session with this exporter.
    pub fn prove(&self, exporter: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.sign(&proof_message(exporter)).as_ref())
    }
}

/// Checks that `proof` (the header value) is `account`'s signature for the session with
/// this exporter.
pub fn verify_proof(account: &AccountId, exporter: &[u8], proof: &str) -> Result<()> {
    if proof.len() != PROOF_CHARS {
        return Err(bad_account(format!(
            "the {ACCOUNT_PROOF_HEADER} value has {} characters; expected {PROOF_CHARS} \
             (base64url without padding of a 64-byte Ed25519 signature)",
            proof.len()
        )));
    }
    let signature = URL_SAFE_NO_PAD.decode(proof).map_err(|e| {
        bad_account(format!(
            "the {ACCOUNT_PROOF_HEADER} value is not base64url without padding: {e}"
        ))
    })?;
    UnparsedPublicKey::new(&ED25519, &account.0)
        .verify(&proof_message(exporter), &signature)
        .map_err(|_| {
            Error::BadSignature(format!(
                "the {ACCOUNT_PROOF_HEADER} value is not a signature by {account} over this \
                 TLS session's exporter (a proof made for another session, or by another key)"
            ))
        })
}

/// Checks a request's account headers (raw values; `None` when absent) against the
/// exporter of the session they came in. `Ok(None)`: the request names no account.
pub fn verify_claim(
    account: Option<&[u8]>,
    proof: Option<&[u8]>,
    exporter: &[u8],
) -> Result<Option<AccountId>> {
    let text = |name: &str, value: &[u8]| {
        std::str::from_utf8(value)
            .map(str::to_owned)
            .map_err(|_| bad_account(format!("the {name} header is not ASCII")))
    };
    match (account, proof) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(bad_account(format!(
            "{ACCOUNT_PROOF_HEADER} was sent without {ACCOUNT_HEADER}"
        ))),
        (Some(account), None) => {
            let named = text(ACCOUNT_HEADER, account)?;
            Err(bad_account(format!(
                "the request names account '{}' but carries no {ACCOUNT_PROOF_HEADER}: an \
                 account is an Ed25519 key that signs this TLS session's exporter \
                 (`cocoon-client proxy --account-key FILE` does it)",
                shorten(&named)
            )))
        }
        (Some(account), Some(proof)) => {
            let id = AccountId::parse(&text(ACCOUNT_HEADER, account)?)?;
            verify_proof(&id, exporter, &text(ACCOUNT_PROOF_HEADER, proof)?)?;
            Ok(Some(id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORTER: [u8; 32] = [7; 32];

    #[test]
    fn a_proof_verifies_for_its_key_and_session_only() {
        let (key, pem) = AccountKey::generate().unwrap();
        let again = AccountKey::from_pem(&pem).unwrap();
        assert_eq!(key.id(), again.id());
        let proof = key.prove(&EXPORTER);
        assert_eq!(proof.len(), PROOF_CHARS);
        verify_proof(&key.id(), &EXPORTER, &proof).unwrap();
        let id = key.id().to_string();
        assert_eq!(
            verify_claim(Some(id.as_bytes()), Some(proof.as_bytes()), &EXPORTER).unwrap(),
            Some(key.id())
        );

        // Another session's exporter: a replayed proof fails.
        let err = verify_proof(&key.id(), &[8; 32], &proof).unwrap_err();
        assert!(err.to_string().contains("another session"), "{err}");
        // Another key: naming someone else's account with my proof fails.
        let (other, _) = AccountKey::generate().unwrap();
        assert!(verify_proof(&other.id(), &EXPORTER, &proof).is_err());
        // The same key signing without the domain tag (a signature made for another
        // purpose) is not a proof.
        let untagged = URL_SAFE_NO_PAD.encode(key.pair.sign(&EXPORTER).as_ref());
        assert!(verify_proof(&key.id(), &EXPORTER, &untagged).is_err());
        let wrong_tag = {
            let mut m = b"cocoon/account-proof/v2".to_vec();
            m.extend_from_slice(&32u32.to_be_bytes());
            m.extend_from_slice(&EXPORTER);
            URL_SAFE_NO_PAD.encode(key.pair.sign(&m).as_ref())
        };
        assert!(verify_proof(&key.id(), &EXPORTER, &wrong_tag).is_err());
    }

    #[test]
    fn the_proof_message_is_tag_and_length_prefixed_exporter() {
        let m = proof_message(&EXPORTER);
        assert_eq!(&m[..23], b"cocoon/account-proof/v1");
        assert_eq!(&m[23..27], &[0, 0, 0, 32]);
        assert_eq!(&m[27..], &EXPORTER);
    }

    #[test]
    fn account_ids_have_one_text_form() {
        // RFC 8032 section 7.1, test 1: secret key 9d61b19d…, public key d75a9801….
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                   -----END PRIVATE KEY-----\n";
        let key = AccountKey::from_pem(pem).unwrap();
        let id = "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert_eq!(key.id().to_string(), id);
        // The seed read from the file is RFC 8032's secret key, and makes the same key.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(key.seed(), &seed);
        assert_eq!(AccountKey::from_seed(&seed).unwrap().id(), key.id());
        // A generated (PKCS#8 v2) key keeps its seed too.
        let (fresh, pem) = AccountKey::generate().unwrap();
        assert_eq!(
            AccountKey::from_seed(fresh.seed()).unwrap().id(),
            fresh.id()
        );
        assert_eq!(AccountKey::from_pem(&pem).unwrap().seed(), fresh.seed());

        assert_eq!(AccountId::parse(id).unwrap(), key.id());
        assert_eq!(id.parse::<AccountId>().unwrap(), key.id());
        for bad in [
            "",
            "alice",
            "victim-account",
            "ed25519:",
            "ED25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "ed25519:D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A",
            "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511",
            "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a00",
            "ed25519:z75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            " ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_header_values_are_refused_with_a_reason() {
        let (key, _) = AccountKey::generate().unwrap();
        let id = key.id().to_string();
        let proof = key.prove(&EXPORTER);
        assert_eq!(verify_claim(None, None, &EXPORTER).unwrap(), None);
        // (x-cocoon-account, x-cocoon-account-proof, what the refusal says)
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a str);
        let cases: Vec<Case> = vec![
            (
                Some(b"victim-account"),
                None,
                "carries no x-cocoon-account-proof",
            ),
            (
                Some(id.as_bytes()),
                None,
                "carries no x-cocoon-account-proof",
            ),
            (None, Some(proof.as_bytes()), "without x-cocoon-account"),
            (
                Some(b"victim-account"),
                Some(proof.as_bytes()),
                "not an account id",
            ),
            (Some(id.as_bytes()), Some(b""), "has 0 characters"),
            (
                Some(id.as_bytes()),
                Some(&proof.as_bytes()[1..]),
                "85 characters",
            ),
            (Some(b"\xff\xfe"), Some(proof.as_bytes()), "not ASCII"),
        ];
        for (account, proof_value, reason) in cases {
            let err = verify_claim(account, proof_value, &EXPORTER).unwrap_err();
            assert!(err.to_string().contains(reason), "{reason}: {err}");
        }
        // Standard (not URL-safe) base64, or padding, is not the encoding.
        let standard = proof.replace('-', "+").replace('_', "/");
        if standard != proof {
            assert!(verify_proof(&key.id(), &EXPORTER, &standard).is_err());
        }
        let mut padded = proof[..84].to_string();
        padded.push_str("==");
        assert!(verify_proof(&key.id(), &EXPORTER, &padded).is_err());
        let not_b64 = "!".repeat(PROOF_CHARS);
        let err = verify_proof(&key.id(), &EXPORTER, &not_b64).unwrap_err();
        assert!(err.to_string().contains("not base64url"), "{err}");
    }
}
