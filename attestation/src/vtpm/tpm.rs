//! The TPM 2.0 structures a quote is made of, read from untrusted bytes.
//!
//! A TPM quote is three things: the attestation key's public area (`TPMT_PUBLIC`), the
//! signed attestation structure (`TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`, which
//! carries the caller's qualifying data, the PCR selection and the digest of the selected
//! PCR values) and the signature over it (`TPMT_SIGNATURE`). The wire format is the TCG's
//! (big-endian, TPM2B length prefixes, tagged unions); `tpm2-protocol` unmarshals it with
//! bounds checks and no panics, and this module turns the result into the few typed facts
//! a verifier needs, refusing every variant it does not verify (so an unusual key or
//! scheme is an error with its name, never a silent pass).

use ring::signature::{self, UnparsedPublicKey};
use sha2::{Digest, Sha256, Sha384};
use tpm2_protocol::data::{
    TpmAlgId, TpmEccCurve, TpmSt, TpmaObject, TpmsAttest, TpmtPublic, TpmtSignature, TpmuAttest,
    TpmuPublicId, TpmuPublicParms, TpmuSignature,
};
use tpm2_protocol::TpmUnmarshal;

use crate::{Error, Result};

/// `TPM_GENERATED_VALUE`: the first four bytes of everything a TPM signs itself.
pub const TPM_GENERATED: u32 = 0xff54_4347;

/// Largest structure accepted from untrusted input (a TPM's own limit is 4 KiB).
pub const MAX_STRUCTURE_LEN: usize = 4096;

fn malformed(what: &'static str, e: impl std::fmt::Debug) -> Error {
    Error::Malformed {
        what,
        detail: format!("{e:?}"),
    }
}

/// Unmarshals exactly one `T` from `bytes`: no trailing bytes, bounded length.
fn exactly<T: TpmUnmarshal>(what: &'static str, bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_STRUCTURE_LEN {
        return Err(Error::LimitExceeded {
            what,
            actual: bytes.len(),
            limit: MAX_STRUCTURE_LEN,
        });
    }
    let (value, rest) = T::unmarshal(bytes).map_err(|e| malformed(what, e))?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what,
            detail: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

/// A PCR bank's hash and the PCR indices it selects, in the TPM's order (ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// `TPM_ALG_ID` of the bank (0x000B SHA-256, 0x000C SHA-384, 0x0004 SHA-1).
    pub hash: u16,
    pub pcrs: Vec<u8>,
}

impl PcrSelection {
    /// The digest length of the bank's hash, or `None` for a hash this crate does not know.
    pub fn digest_len(&self) -> Option<usize> {
        digest_len(self.hash)
    }
}

fn digest_len(alg: u16) -> Option<usize> {
    match alg {
        0x0004 => Some(20),
        0x000B => Some(32),
        0x000C => Some(48),
        0x000D => Some(64),
        _ => None,
    }
}

/// The name of a hash algorithm ID, for messages and JSON.
pub fn hash_name(alg: u16) -> String {
    match alg {
        0x0004 => "sha1".into(),
        0x000B => "sha256".into(),
        0x000C => "sha384".into(),
        0x000D => "sha512".into(),
        other => format!("alg 0x{other:04x}"),
    }
}

/// A `TPMS_ATTEST` of type quote: what the TPM signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmQuote {
    /// The qualified name of the signing key (`TPM2B_NAME` contents).
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (`extraData`): the nonce or binding the quote is for.
    pub extra_data: Vec<u8>,
    /// TPM clock in milliseconds, and its reset and restart counters.
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    /// Whether the clock value is known never to have been reported lower (`safe`).
    pub clock_safe: bool,
    /// Vendor-specific firmware version.
    pub firmware_version: u64,
    /// The PCRs the digest covers, bank by bank.
    pub selections: Vec<PcrSelection>,
    /// Hash (with the signing scheme's algorithm) of the selected PCR values, concatenated
    /// in selection order.
    pub pcr_digest: Vec<u8>,
}

impl TpmQuote {
    /// Parses the signed `TPMS_ATTEST` bytes; anything but a quote is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "TPM quote (TPMS_ATTEST)";
        if bytes.len() < 4 || bytes[..4] != TPM_GENERATED.to_be_bytes() {
            return Err(Error::Malformed {
                what: WHAT,
                detail: format!(
                    "does not start with TPM_GENERATED_VALUE (0x{TPM_GENERATED:08x}): a TPM \
                     did not make it"
                ),
            });
        }
        let attest: TpmsAttest = exactly(WHAT, bytes)?;
        if attest.attest_type != TpmSt::AttestQuote {
            return Err(Error::Unsupported {
                what: "TPM attestation type (only TPM_ST_ATTEST_QUOTE is a quote)",
                value: format!("{:?}", attest.attest_type),
            });
        }
        let TpmuAttest::Quote(info) = &attest.attested else {
            return Err(Error::Malformed {
                what: WHAT,
                detail: "type quote without quote information".into(),
            });
        };
        let mut selections = Vec::new();
        for selection in info.pcr_select.iter() {
            let mut pcrs = Vec::new();
            for (byte_index, byte) in selection.pcr_select.iter().enumerate() {
                for bit in 0..8u8 {
                    if byte & (1 << bit) != 0 {
                        let index = byte_index * 8 + usize::from(bit);
                        pcrs.push(u8::try_from(index).map_err(|_| Error::Malformed {
                            what: WHAT,
                            detail: format!("PCR index {index} out of range"),
                        })?);
                    }
                }
            }
            selections.push(PcrSelection {
                hash: selection.hash.value(),
                pcrs,
            });
        }
        Ok(Self {
            qualified_signer: attest.qualified_signer.to_vec(),
            extra_data: attest.extra_data.to_vec(),
            clock: u64::from(attest.clock_info.clock),
            reset_count: u32::from(attest.clock_info.reset_count),
            restart_count: u32::from(attest.clock_info.restart_count),
            clock_safe: bool::from(attest.clock_info.safe),
            firmware_version: u64::from(attest.firmware_version),
            selections,
            pcr_digest: info.pcr_digest.to_vec(),
        })
    }

    /// Every selected (bank, PCR) pair, in the order the digest covers them.
    pub fn selected(&self) -> impl Iterator<Item = (u16, u8)> + '_ {
        self.selections
            .iter()
            .flat_map(|s| s.pcrs.iter().map(move |p| (s.hash, *p)))
    }
}

/// The attestation key's public part, as far as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AkPublic {
    /// RSA (RSASSA-PKCS1-v1_5 quotes): modulus and public exponent, big-endian.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// ECDSA over NIST P-256 or P-384: the uncompressed point `04 || X || Y`.
    Ecc { curve: EccCurve, point: Vec<u8> },
}

/// The curves quotes are verified over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    P256,
    P384,
}

impl EccCurve {
    fn coordinate_len(self) -> usize {
        match self {
            EccCurve::P256 => 32,
            EccCurve::P384 => 48,
        }
    }
}

/// A parsed `TPMT_PUBLIC` of an attestation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationKey {
    pub key: AkPublic,
    /// The marshalled `TPMT_PUBLIC`, as it was given.
    pub public_area: Vec<u8>,
}

impl AttestationKey {
    /// Parses a `TPMT_PUBLIC` and checks it is what a TPM attestation key must be: a
    /// restricted signing key that never leaves its TPM (`fixedTPM`, `restricted`,
    /// `sign`, not `decrypt`). Without `restricted` the TPM signs any digest the caller
    /// hands it, so a "quote" could be forged by anyone holding the key's authorization.
    pub fn parse(public_area: &[u8]) -> Result<Self> {
        const WHAT: &str = "attestation key (TPMT_PUBLIC)";
        let public: TpmtPublic = exactly(WHAT, public_area)?;
        let attributes = public.object_attributes;
        let required = [
            (TpmaObject::FIXED_TPM, "fixedTPM"),
            (TpmaObject::RESTRICTED, "restricted"),
            (TpmaObject::SIGN_ENCRYPT, "sign"),
        ];
        for (flag, name) in required {
            if !attributes.contains(flag) {
                return Err(Error::Policy {
                    rule: "the attestation key must be a restricted signing key of its TPM",
                    observed: format!("attributes 0x{:08x} lack {name}", attributes.bits()),
                    expected: "fixedTPM, restricted and sign set".into(),
                });
            }
        }
        if attributes.contains(TpmaObject::DECRYPT) {
            return Err(Error::Policy {
                rule: "the attestation key must be a restricted signing key of its TPM",
                observed: format!("attributes 0x{:08x} include decrypt", attributes.bits()),
                expected: "a signing-only key".into(),
            });
        }
        let key = match (&public.parameters, &public.unique) {
            (TpmuPublicParms::Rsa(params), TpmuPublicId::Rsa(modulus)) => {
                let exponent = match u32::from(params.exponent) {
                    0 => 65_537,
                    e => e,
                };
                if modulus.len() < 256 {
                    return Err(Error::Unsupported {
                        what: "RSA attestation key size",
                        value: format!("{} bits (at least 2048)", modulus.len() * 8),
                    });
                }
                AkPublic::Rsa {
                    modulus: modulus.to_vec(),
                    exponent: strip_leading_zeros(&exponent.to_be_bytes()).to_vec(),
                }
            }
            (TpmuPublicParms::Ecc(params), TpmuPublicId::Ecc(point)) => {
                let curve = match params.curve_id {
                    TpmEccCurve::NistP256 => EccCurve::P256,
                    TpmEccCurve::NistP384 => EccCurve::P384,
                    other => {
                        return Err(Error::Unsupported {
                            what: "attestation key curve",
                            value: format!("{other:?}"),
                        })
                    }
                };
                let n = curve.coordinate_len();
                if point.x.len() > n || point.y.len() > n {
                    return Err(Error::Malformed {
                        what: WHAT,
                        detail: "ECC point coordinate longer than the curve".into(),
                    });
                }
                let mut uncompressed = vec![0x04];
                for coordinate in [&point.x[..], &point.y[..]] {
                    uncompressed.extend(std::iter::repeat_n(0, n - coordinate.len()));
                    uncompressed.extend_from_slice(coordinate);
                }
                AkPublic::Ecc {
                    curve,
                    point: uncompressed,
                }
            }
            _ => {
                return Err(Error::Unsupported {
                    what: "attestation key type (RSA or ECC)",
                    value: format!("{:?}", public.object_type),
                })
            }
        };
        Ok(Self {
            key,
            public_area: public_area.to_vec(),
        })
    }
}

/// `bytes` without its leading zero bytes (big-endian integers compared by value).
pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A quote's signature, as far as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteSignature {
    /// RSASSA-PKCS1-v1_5 with `hash`.
    RsaSsa { hash: u16, signature: Vec<u8> },
    /// ECDSA with `hash`: the two scalars, big-endian.
    Ecdsa { hash: u16, r: Vec<u8>, s: Vec<u8> },
}

impl QuoteSignature {
    /// Parses a `TPMT_SIGNATURE`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let signature: TpmtSignature = exactly("quote signature (TPMT_SIGNATURE)", bytes)?;
        Ok(match signature.signature {
            TpmuSignature::Rsassa(s) => QuoteSignature::RsaSsa {
                hash: s.hash.value(),
                signature: s.sig.to_vec(),
            },
            TpmuSignature::Ecdsa(s) => QuoteSignature::Ecdsa {
                hash: s.hash.value(),
                r: s.signature_r.to_vec(),
                s: s.signature_s.to_vec(),
            },
            _ => {
                return Err(Error::Unsupported {
                    what: "quote signature scheme (RSASSA or ECDSA)",
                    value: format!("{:?}", signature.sig_alg),
                })
            }
        })
    }

    /// The raw RSASSA signature bytes as some clouds ship them (Azure: the bare 256-byte
    /// signature, SHA-256).
    pub fn rsassa_sha256(signature: &[u8]) -> Self {
        QuoteSignature::RsaSsa {
            hash: TpmAlgId::Sha256.value(),
            signature: signature.to_vec(),
        }
    }

    /// The hash algorithm the signature (and so the PCR digest) uses.
    pub fn hash(&self) -> u16 {
        match self {
            QuoteSignature::RsaSsa { hash, .. } | QuoteSignature::Ecdsa { hash, .. } => *hash,
        }
    }

    /// Checks this is `key`'s signature over `message` (the `TPMS_ATTEST` bytes).
    pub fn verify(&self, key: &AkPublic, message: &[u8]) -> Result<()> {
        let bad = |detail: String| Error::BadSignature(format!("TPM quote: {detail}"));
        match (self, key) {
            (QuoteSignature::RsaSsa { hash, signature }, AkPublic::Rsa { modulus, exponent }) => {
                let algorithm: &signature::RsaParameters = match *hash {
                    0x000B => &signature::RSA_PKCS1_2048_8192_SHA256,
                    0x000C => &signature::RSA_PKCS1_2048_8192_SHA384,
                    other => return Err(bad(format!("unsupported hash {}", hash_name(other)))),
                };
                signature::RsaPublicKeyComponents {
                    n: modulus,
                    e: exponent,
                }
                .verify(algorithm, message, signature)
                .map_err(|_| bad("the RSA signature does not verify with the AK".into()))
            }
            (QuoteSignature::Ecdsa { hash, r, s }, AkPublic::Ecc { curve, point }) => {
                let n = curve.coordinate_len();
                if r.len() > n || s.len() > n {
                    return Err(bad("ECDSA scalar longer than the curve".into()));
                }
                let mut fixed = Vec::with_capacity(2 * n);
                for scalar in [r, s] {
                    fixed.extend(std::iter::repeat_n(0, n - scalar.len()));
                    fixed.extend_from_slice(scalar);
                }
                let algorithm: &dyn signature::VerificationAlgorithm = match (curve, *hash) {
                    (EccCurve::P256, 0x000B) => &signature::ECDSA_P256_SHA256_FIXED,
                    (EccCurve::P384, 0x000C) => &signature::ECDSA_P384_SHA384_FIXED,
                    (_, other) => {
                        return Err(bad(format!("unsupported hash {}", hash_name(other))))
                    }
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(message, &fixed)
                    .map_err(|_| bad("the ECDSA signature does not verify with the AK".into()))
            }
            _ => Err(bad(
                "the signature scheme does not match the AK's key type".into()
            )),
        }
    }
}

/// The PCR digest a quote carries over `values` (in selection order), computed with the
/// signing scheme's `hash`.
pub fn pcr_digest(hash: u16, values: &[&[u8]]) -> Result<Vec<u8>> {
    Ok(match hash {
        0x000B => {
            let mut h = Sha256::new();
            values.iter().for_each(|v| h.update(v));
            h.finalize().to_vec()
        }
        0x000C => {
            let mut h = Sha384::new();
            values.iter().for_each(|v| h.update(v));
            h.finalize().to_vec()
        }
        other => {
            return Err(Error::Unsupported {
                what: "PCR digest hash",
                value: hash_name(other),
            })
        }
    })
}

/// The digest length of a bank, or an error naming it.
pub fn bank_digest_len(hash: u16) -> Result<usize> {
    digest_len(hash).ok_or_else(|| Error::Unsupported {
        what: "PCR bank hash",
        value: hash_name(hash),
    })
}
