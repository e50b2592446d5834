//! Google Compute Engine's vTPM: quotes by an attestation key that Google certifies.
//!
//! GCE Shielded and Confidential VMs have a vTPM run by Google's host; its AK comes with
//! an X.509 certificate issued by Google's EK/AK CA (the `tpm_ek_v1_cloud_host` hierarchy,
//! and since 2022 the "EK/AK CA" one), which names the VM (project, zone, instance) in a
//! Google extension. Attesters write what they read as go-tpm-tools' `Attestation`
//! protobuf: the AK's `TPMT_PUBLIC`, one quote per PCR bank, the event log, the AK
//! certificate and, when the VM has one, its intermediates.
//!
//! What this proves: the quote was made by a vTPM that Google's CA vouches for. The vTPM
//! is Google's hypervisor's, outside any TEE, so without a TDX or SEV-SNP report bound to
//! it this is *not* evidence of confidentiality; `cocoon-verify tpm-quote` refuses such
//! evidence unless told to check the vTPM part alone. The recorded attestations this is
//! tested on (GCE, COS 85) carry no TEE report.

use prost::Message;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{verify_quote, AkPublic, AttestationKey, PcrValue, QuoteSignature, VerifiedQuote};
use crate::{Error, Result};

/// Largest attestation accepted (the recorded ones are 30 KB, mostly event log).
pub const MAX_ATTESTATION_LEN: usize = 1024 * 1024;

/// Google's EK/AK roots, pinned: the `tpm_ek_v1_cloud_host_root` CA (2018, valid to 2118)
/// and the "EK/AK CA Root" (2022, valid to 2122). From google/go-tpm-tools
/// `server/ca-certs/` @ 67670e5.
pub const GOOGLE_ROOTS: [&str; 2] = [
    include_str!("google_ca/tpm_ek_root_1.pem"),
    include_str!("google_ca/gcp_ek_ak_ca_root.pem"),
];

/// Google's published intermediates (GCE AK certificates do not always carry theirs);
/// they count only when they chain to a pinned root.
pub const GOOGLE_INTERMEDIATES: [&str; 3] = [
    include_str!("google_ca/tpm_ek_intermediate_2.pem"),
    include_str!("google_ca/tpm_ek_intermediate_3.pem"),
    include_str!("google_ca/gcp_ek_ak_ca_intermediate_v3.pem"),
];

/// go-tpm-tools `attest.Attestation` (the fields a verifier reads).
#[derive(Clone, PartialEq, Message)]
pub struct GceAttestation {
    /// The AK's `TPMT_PUBLIC`.
    #[prost(bytes = "vec", tag = "1")]
    pub ak_pub: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub quotes: Vec<GceQuote>,
    /// The AK certificate, DER.
    #[prost(bytes = "vec", tag = "6")]
    pub ak_cert: Vec<u8>,
    /// Intermediate certificates, DER.
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub intermediate_certs: Vec<Vec<u8>>,
}

/// go-tpm-tools `tpm.Quote`.
#[derive(Clone, PartialEq, Message)]
pub struct GceQuote {
    /// The signed `TPMS_ATTEST`.
    #[prost(bytes = "vec", tag = "1")]
    pub quote: Vec<u8>,
    /// Its `TPMT_SIGNATURE`.
    #[prost(bytes = "vec", tag = "2")]
    pub raw_sig: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub pcrs: Option<GcePcrs>,
}

/// go-tpm-tools `tpm.PCRs`: a bank's hash (a `TPM_ALG_ID`) and index → value.
#[derive(Clone, PartialEq, Message)]
pub struct GcePcrs {
    #[prost(int32, tag = "1")]
    pub hash: i32,
    #[prost(map = "uint32, bytes", tag = "2")]
    pub pcrs: std::collections::HashMap<u32, Vec<u8>>,
}

/// What a verified GCE attestation established.
#[derive(Debug, Clone)]
pub struct CheckedGceAttestation {
    pub ak: AttestationKey,
    /// Subject and issuer of each certificate from the AK's to the pinned root.
    pub chain: Vec<(String, String)>,
    /// One verified quote per bank.
    pub quotes: Vec<VerifiedQuote>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "GCE vTPM attestation",
        detail: detail.into(),
    }
}

impl GceAttestation {
    /// Decodes the protobuf.
    pub fn from_protobuf(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_ATTESTATION_LEN {
            return Err(Error::LimitExceeded {
                what: "GCE vTPM attestation length",
                actual: bytes.len(),
                limit: MAX_ATTESTATION_LEN,
            });
        }
        let attestation = Self::decode(bytes).map_err(|e| bad(e.to_string()))?;
        if attestation.ak_pub.is_empty() || attestation.quotes.is_empty() {
            return Err(bad("no AK public area or no quote"));
        }
        Ok(attestation)
    }

    /// Checks the AK certificate chain to a pinned Google root at `at`, that the
    /// certificate's key is the AK, and every quote (signature, `nonce` as qualifying
    /// data, PCR digest over the given values).
    pub fn check(&self, nonce: &[u8], at: i64) -> Result<CheckedGceAttestation> {
        let ak = AttestationKey::parse(&self.ak_pub)?;
        if self.ak_cert.is_empty() {
            return Err(Error::Policy {
                rule: "a GCE AK must come with Google's certificate",
                observed: "no ak_cert".into(),
                expected: "an AK certificate chaining to Google's EK/AK root".into(),
            });
        }
        let chain = verify_ak_certificate(&self.ak_cert, &self.intermediate_certs, &ak.key, at)?;
        let mut quotes = Vec::new();
        for (i, quote) in self.quotes.iter().enumerate() {
            let signature = QuoteSignature::parse(&quote.raw_sig)?;
            let parsed = super::TpmQuote::parse(&quote.quote)?;
            let pcrs = quote
                .pcrs
                .as_ref()
                .ok_or_else(|| bad(format!("quote {i} carries no PCR values")))?;
            let values = parsed
                .selected()
                .map(|(bank, index)| {
                    if i32::from(bank) != pcrs.hash {
                        return Err(bad(format!(
                            "quote {i} selects bank 0x{bank:04x}, its values are of 0x{:04x}",
                            pcrs.hash
                        )));
                    }
                    let value = pcrs
                        .pcrs
                        .get(&u32::from(index))
                        .ok_or_else(|| bad(format!("quote {i}: no value for PCR {index}")))?;
                    Ok(PcrValue {
                        bank,
                        index,
                        value: value.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            quotes.push(verify_quote(
                &ak.key,
                &quote.quote,
                &signature,
                &values,
                nonce,
            )?);
        }
        Ok(CheckedGceAttestation { ak, chain, quotes })
    }
}

fn parse_pem(pem: &str) -> Result<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| bad(format!("pinned certificate: {e}")))?;
    Ok(block.contents)
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| bad(format!("certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after a certificate"));
    }
    Ok(cert)
}

/// Verifies `ak_cert` up to a pinned Google root through the given and the published
/// intermediates (signatures, validity at `at`, CA flags), and that it certifies `ak`.
/// Returns (subject, issuer) from the AK certificate up.
pub fn verify_ak_certificate(
    ak_cert: &[u8],
    given: &[Vec<u8>],
    ak: &AkPublic,
    at: i64,
) -> Result<Vec<(String, String)>> {
    let roots: Vec<Vec<u8>> = GOOGLE_ROOTS
        .iter()
        .map(|p| parse_pem(p))
        .collect::<Result<_>>()?;
    let mut intermediates: Vec<Vec<u8>> = given.to_vec();
    for p in GOOGLE_INTERMEDIATES {
        intermediates.push(parse_pem(p)?);
    }
    let leaf = parse_der(ak_cert)?;
    check_certified_key(&leaf, ak)?;
    let mut chain = Vec::new();
    let mut current_der = ak_cert.to_vec();
    for depth in 0..4 {
        let current = parse_der(&current_der)?;
        check_validity(&current, at, depth)?;
        chain.push((current.subject().to_string(), current.issuer().to_string()));
        // A pinned root that issued it ends the chain.
        for root in &roots {
            let root_cert = parse_der(root)?;
            if root_cert.subject() == current.issuer()
                && current
                    .verify_signature(Some(root_cert.public_key()))
                    .is_ok()
            {
                check_validity(&root_cert, at, depth + 1)?;
                chain.push((
                    root_cert.subject().to_string(),
                    root_cert.issuer().to_string(),
                ));
                return Ok(chain);
            }
        }
        let next = intermediates.iter().find(|candidate| {
            parse_der(candidate).is_ok_and(|c| {
                c.subject() == current.issuer()
                    && c.is_ca()
                    && current.verify_signature(Some(c.public_key())).is_ok()
            })
        });
        match next {
            Some(der) => current_der = der.clone(),
            None => {
                return Err(Error::CertificateChain {
                    index: depth,
                    subject: current.subject().to_string(),
                    detail: format!(
                        "no pinned Google root or intermediate issued it (issuer {})",
                        current.issuer()
                    ),
                })
            }
        }
    }
    Err(bad("the AK certificate chain is longer than 4"))
}

fn check_validity(cert: &X509Certificate<'_>, at: i64, index: usize) -> Result<()> {
    crate::unix_time::check_certificate_window(cert, "Google EK/AK certificate", at).map_err(|e| {
        Error::CertificateChain {
            index,
            subject: cert.subject().to_string(),
            detail: e.to_string(),
        }
    })
}

/// The certificate's key must be the AK (RSA compared on modulus and exponent).
fn check_certified_key(cert: &X509Certificate<'_>, ak: &AkPublic) -> Result<()> {
    use x509_parser::public_key::PublicKey;
    let certified = match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => AkPublic::Rsa {
            modulus: rsa.modulus.to_vec(),
            exponent: rsa.exponent.to_vec(),
        },
        Ok(PublicKey::EC(point)) => {
            let curve = match point.key_size() {
                256 => super::tpm::EccCurve::P256,
                384 => super::tpm::EccCurve::P384,
                other => {
                    return Err(Error::Unsupported {
                        what: "AK certificate curve",
                        value: format!("{other} bits"),
                    })
                }
            };
            AkPublic::Ecc {
                curve,
                point: point.data().to_vec(),
            }
        }
        _ => {
            return Err(Error::Unsupported {
                what: "AK certificate key type",
                value: cert.public_key().algorithm.algorithm.to_string(),
            })
        }
    };
    if !super::same_key(&certified, ak) {
        return Err(Error::Policy {
            rule: "the AK certificate must certify the quote's AK",
            observed: "a certificate for another key".into(),
            expected: "the AK's own key".into(),
        });
    }
    Ok(())
}
