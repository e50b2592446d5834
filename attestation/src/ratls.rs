//! RA-TLS certificates: a self-signed X.509 certificate whose extension carries evidence
//! that binds the certificate's own key.
//!
//! Layout: X.509 v3, ECDSA P-256 / SHA-256, subject = issuer = `CN=<common name>`,
//! subjectAltName with the DNS names and IP addresses clients connect to, extKeyUsage
//! serverAuth + clientAuth, and the non-critical evidence extension
//! ([`crate::oid::EVIDENCE_EXTENSION`]) whose `extnValue` octets are the CBOR
//! [`EvidencePayload`]. Non-critical so that ordinary TLS stacks (OpenSSL in Python's
//! `ssl`, for an SDK that pins the certificate) accept the certificate as is.
//!
//! The DER is written here with `yasna` rather than `rcgen` because our OID arc is a
//! 128-bit integer, which `rcgen`'s `u64` arcs cannot express.

use std::net::IpAddr;

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use yasna::models::ObjectIdentifier;
use yasna::{DERWriter, Tag};

use crate::evidence::EvidencePayload;
use crate::oid::evidence_extension_oid_content;
use crate::{Error, Result};

const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_KP_SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
const OID_KP_CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

/// A name a client may use to reach the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Ip(IpAddr),
}

impl SubjectAltName {
    /// Parses `127.0.0.1`, `::1` or a DNS name.
    pub fn parse(s: &str) -> Self {
        match s.parse::<IpAddr>() {
            Ok(ip) => SubjectAltName::Ip(ip),
            Err(_) => SubjectAltName::Dns(s.to_string()),
        }
    }
}

/// A TLS key pair made inside the TEE. The private half never leaves the process.
pub struct TlsKey {
    pkcs8: Vec<u8>,
    key_pair: EcdsaKeyPair,
    spki_der: Vec<u8>,
}

impl TlsKey {
    /// Generates a fresh ECDSA P-256 key from the operating system's RNG.
    pub fn generate() -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| Error::Crypto("P-256 key generation failed".into()))?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
    }

    /// Loads a PKCS#8 ECDSA P-256 key.
    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self> {
        let rng = SystemRandom::new();
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
            .map_err(|e| Error::Crypto(format!("bad PKCS#8 P-256 key: {e}")))?;
        let point = key_pair.public_key().as_ref().to_vec();
        let spki_der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(OID_EC_PUBLIC_KEY));
                    w.next().write_oid(&ObjectIdentifier::from_slice(OID_P256));
                });
                w.next().write_bitvec_bytes(&point, point.len() * 8);
            })
        });
        Ok(Self {
            pkcs8,
            key_pair,
            spki_der,
        })
    }

    /// The DER SubjectPublicKeyInfo: what REPORTDATA binds.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The PKCS#8 private key, for handing to rustls.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig = self
            .key_pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| Error::Crypto("ECDSA signing failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// What goes into an RA-TLS certificate besides the key.
pub struct CertificateParams<'a> {
    pub common_name: &'a str,
    pub subject_alt_names: &'a [SubjectAltName],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub evidence: &'a EvidencePayload,
}

fn write_time(w: DERWriter<'_>, t: OffsetDateTime) {
    // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
    let t = t.to_offset(time::UtcOffset::UTC);
    let (tag, text) = if t.year() < 2050 {
        (
            0x17u8,
            format!(
                "{:02}{:02}{:02}{:02}{:02}{:02}Z",
                t.year() % 100,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
        )
    } else {
        (
            0x18u8,
            format!(
                "{:04}{:02}{:02}{:02}{:02}{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
        )
    };
    let mut der = vec![tag, text.len() as u8];
    der.extend_from_slice(text.as_bytes());
    w.write_der(&der);
}

fn write_name(w: DERWriter<'_>, common_name: &str) {
    w.write_sequence(|w| {
        w.next().write_set(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&ObjectIdentifier::from_slice(OID_COMMON_NAME));
                w.next().write_utf8_string(common_name);
            })
        })
    })
}

fn write_extension(w: DERWriter<'_>, oid_der: &[u8], value: &[u8]) {
    w.write_sequence(|w| {
        w.next().write_der(oid_der);
        w.next().write_bytes(value);
    })
}

fn oid_der(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x06];
    write_der_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

fn write_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Builds and self-signs an RA-TLS certificate for `key`.
pub fn build_certificate(key: &TlsKey, params: &CertificateParams<'_>) -> Result<Vec<u8>> {
    let payload = params.evidence.to_cbor()?;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut serial)
        .map_err(|_| Error::Crypto("RNG failure".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive and minimal
    let alg = |w: DERWriter<'_>| {
        w.write_sequence(|w| {
            w.next()
                .write_oid(&ObjectIdentifier::from_slice(OID_ECDSA_SHA256));
        })
    };
    let san = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            for name in params.subject_alt_names {
                match name {
                    SubjectAltName::Dns(dns) => w
                        .next()
                        .write_tagged_implicit(Tag::context(2), |w| w.write_ia5_string(dns)),
                    SubjectAltName::Ip(IpAddr::V4(ip)) => w
                        .next()
                        .write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&ip.octets())),
                    SubjectAltName::Ip(IpAddr::V6(ip)) => w
                        .next()
                        .write_tagged_implicit(Tag::context(7), |w| w.write_bytes(&ip.octets())),
                }
            }
        })
    });
    let eku = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_oid(&ObjectIdentifier::from_slice(OID_KP_SERVER_AUTH));
            w.next()
                .write_oid(&ObjectIdentifier::from_slice(OID_KP_CLIENT_AUTH));
        })
    });
    let san_oid =
        yasna::construct_der(|w| w.write_oid(&ObjectIdentifier::from_slice(OID_SUBJECT_ALT_NAME)));
    let eku_oid =
        yasna::construct_der(|w| w.write_oid(&ObjectIdentifier::from_slice(OID_EXT_KEY_USAGE)));
    let evidence_oid = oid_der(&evidence_extension_oid_content());
    let tbs = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
            w.next().write_bigint_bytes(&serial, true);
            alg(w.next());
            write_name(w.next(), params.common_name);
            w.next().write_sequence(|w| {
                write_time(w.next(), params.not_before);
                write_time(w.next(), params.not_after);
            });
            write_name(w.next(), params.common_name);
            w.next().write_der(key.spki_der());
            w.next().write_tagged(Tag::context(3), |w| {
                w.write_sequence(|w| {
                    if !params.subject_alt_names.is_empty() {
                        write_extension(w.next(), &san_oid, &san);
                    }
                    write_extension(w.next(), &eku_oid, &eku);
                    write_extension(w.next(), &evidence_oid, &payload);
                })
            });
        })
    });
    let signature = key.sign(&tbs)?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(&tbs);
            alg(w.next());
            w.next().write_bitvec_bytes(&signature, signature.len() * 8);
        })
    }))
}

/// The parts of an RA-TLS certificate a verifier needs.
#[derive(Debug, Clone)]
pub struct ParsedRaTlsCertificate {
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The decoded evidence extension.
    pub evidence: EvidencePayload,
    /// Validity window, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the whole certificate (the pin an SDK can trust).
    pub sha256: [u8; 32],
}

/// Parses a certificate from untrusted DER and extracts its evidence.
pub fn parse_certificate(der: &[u8]) -> Result<ParsedRaTlsCertificate> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::Malformed {
        what: "X.509 certificate",
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what: "X.509 certificate",
            detail: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    let wanted = evidence_extension_oid_content();
    let mut found = cert
        .tbs_certificate
        .extensions()
        .iter()
        .filter(|ext| ext.oid.as_bytes() == wanted.as_slice());
    let ext = found.next().ok_or_else(|| Error::NoEvidenceExtension {
        oid: crate::oid::EVIDENCE_EXTENSION.to_string(),
    })?;
    if found.next().is_some() {
        return Err(Error::Malformed {
            what: "X.509 certificate",
            detail: "more than one evidence extension".into(),
        });
    }
    let evidence = EvidencePayload::from_cbor(ext.value)?;
    let validity = cert.validity();
    Ok(ParsedRaTlsCertificate {
        spki_der: cert.tbs_certificate.subject_pki.raw.to_vec(),
        evidence,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        sha256: Sha256::digest(der).into(),
    })
}

/// The DNS names in a certificate's subjectAltName (empty when it has none).
pub fn dns_names(der: &[u8]) -> Result<Vec<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::Malformed {
        what: "certificate",
        detail: e.to_string(),
    })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Malformed {
            what: "certificate subjectAltName",
            detail: e.to_string(),
        })?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

pub use crate::pem::certificate_pem;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{EvidenceKind, PAYLOAD_VERSION};

    fn payload() -> EvidencePayload {
        EvidencePayload {
            version: PAYLOAD_VERSION,
            kind: EvidenceKind::Tdx,
            evidence: vec![0xaa; 700],
            event_log: vec![],
            config_digest: vec![1; 48],
            gpu_evidence_digest: None,
            receipt_key: None,
            snp_certificates: None,
            vtpm: None,
        }
    }

    fn cert(key: &TlsKey) -> Vec<u8> {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        build_certificate(
            key,
            &CertificateParams {
                common_name: "cocoon-guest",
                subject_alt_names: &[
                    SubjectAltName::parse("localhost"),
                    SubjectAltName::parse("127.0.0.1"),
                    SubjectAltName::parse("::1"),
                ],
                not_before: now,
                not_after: now + time::Duration::days(3),
                evidence: &payload(),
            },
        )
        .unwrap()
    }

    #[test]
    fn certificate_round_trips_through_x509_parser() {
        let key = TlsKey::generate().unwrap();
        let der = cert(&key);
        let parsed = parse_certificate(&der).unwrap();
        assert_eq!(parsed.spki_der, key.spki_der());
        assert_eq!(parsed.evidence, payload());
        assert_eq!(parsed.not_before, 1_800_000_000);
        assert_eq!(parsed.not_after, 1_800_000_000 + 3 * 86_400);
        let (_, x509) = X509Certificate::from_der(&der).unwrap();
        // The self-signature verifies with the certificate's own key.
        x509.verify_signature(None).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 3);
    }

    #[test]
    fn webpki_accepts_it_as_an_end_entity_certificate() {
        let key = TlsKey::generate().unwrap();
        let der = cert(&key);
        let cert_der = rustls::pki_types::CertificateDer::from(der);
        assert!(
            webpki_parse(&cert_der),
            "rustls/webpki must parse the certificate"
        );
    }

    fn webpki_parse(cert: &rustls::pki_types::CertificateDer<'_>) -> bool {
        webpki::EndEntityCert::try_from(cert).is_ok()
    }

    #[test]
    fn certificate_without_extension_or_garbage_is_rejected() {
        assert!(matches!(
            parse_certificate(b"\x30\x03\x02\x01\x01"),
            Err(Error::Malformed { .. })
        ));
        let key = TlsKey::generate().unwrap();
        let mut der = cert(&key);
        der.push(0);
        assert!(parse_certificate(&der).is_err());
    }

    #[test]
    fn pem_is_base64_of_der() {
        let pem = certificate_pem(&[1, 2, 3]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nAQID\n"));
    }
}
