//! Verification of an H100 attestation report: the device certificate chain to NVIDIA's
//! pinned "NVIDIA Device Identity CA", the report's SPDM signature with the leaf key, and
//! the requester nonce; then the facts a policy reads (measurements, driver and VBIOS
//! versions).
//!
//! Why here and not NVIDIA's verifier: a client checks GPU evidence offline, in the same
//! process and with the same rules as the CPU TEE's (pinned roots are inputs, time is an
//! input, never the wall clock). OCSP, which NVIDIA's own verifier also asks, cannot be
//! checked offline and is not checked here.
//!
//! Also defines [`gpu_evidence_digest`], the SHA-384 the RA-TLS evidence binds.

use std::collections::BTreeMap;

use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha384};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::spdm::{GpuReport, ALL_MEASUREMENTS, NONCE_LEN, P384_SIGNATURE_LEN};
use crate::{Error, Result};

/// ecdsa-with-SHA384 (RFC 5758).
const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";

/// Most certificates accepted in a device chain (the H100's has 5).
pub const MAX_CHAIN_LEN: usize = 8;

/// Domain tag of [`gpu_evidence_digest`].
pub const GPU_EVIDENCE_TAG: &[u8] = b"cocoon/gpu-evidence/v1";

/// NVIDIA's "NVIDIA Device Identity CA" (P-384, self-signed, valid 2021..9999), pinned as
/// a data file next to this module. Provenance: NVIDIA/nvtrust
/// `guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/certs/verifier_device_root.pem`
/// @ 0281730 (Apache-2.0), byte-identical to the last certificate of the H100 chains in
/// `tests/fixtures/gpu/`.
const NVIDIA_DEVICE_ROOT_PEM: &[u8] = include_bytes!("nvidia_device_identity_ca.pem");

/// A root a GPU device chain may end at.
#[derive(Debug, Clone)]
pub struct GpuRoot {
    pub name: &'static str,
    pub der: Vec<u8>,
    /// A development root (not NVIDIA's): evidence it verifies proves nothing.
    pub simulated: bool,
}

/// The pinned NVIDIA device identity root(s).
pub fn nvidia_device_roots() -> Vec<GpuRoot> {
    let der = crate::pem::der_or_pem(NVIDIA_DEVICE_ROOT_PEM.to_vec());
    vec![GpuRoot {
        name: "NVIDIA Device Identity CA",
        der,
        simulated: false,
    }]
}

/// GPU evidence as a guest serves it: the binary report (request ‖ response) and the
/// device certificate chain (DER, leaf first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvidence {
    pub report: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

impl GpuEvidence {
    /// From NVIDIA's stored form: the report as hex text and the chain as PEM.
    pub fn from_nvidia_files(report_hex: &[u8], chain_pem: &[u8]) -> Result<Self> {
        Ok(Self {
            report: super::spdm::decode_report_hex(report_hex)?,
            chain: pem_chain(chain_pem)?,
        })
    }
}

/// SHA-384 over the canonical encoding of GPU evidence, the value bound in the RA-TLS
/// evidence payload's `gpu_evidence_digest`:
///
/// `SHA-384( "cocoon/gpu-evidence/v1" || lp(report) || u32be(n) || lp(cert_1) || … || lp(cert_n) )`
///
/// with `lp(x) = u32be(len(x)) || x`, `report` the binary SPDM request ‖ response (not hex)
/// and `cert_1..cert_n` the chain's DER certificates, leaf first, exactly as served.
pub fn gpu_evidence_digest(evidence: &GpuEvidence) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(GPU_EVIDENCE_TAG);
    h.update((evidence.report.len() as u32).to_be_bytes());
    h.update(&evidence.report);
    h.update((evidence.chain.len() as u32).to_be_bytes());
    for cert in &evidence.chain {
        h.update((cert.len() as u32).to_be_bytes());
        h.update(cert);
    }
    h.finalize().into()
}

/// What a verified report establishes.
#[derive(Debug, Clone)]
pub struct GpuFacts {
    /// The requester nonce (equal to the expected one).
    pub nonce: [u8; NONCE_LEN],
    /// SPDM version byte (0x11 for 1.1).
    pub spdm_version: u8,
    /// Measurement blocks: index → value.
    pub measurements: BTreeMap<u8, Vec<u8>>,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    /// Subjects of the chain, leaf first (the root last).
    pub chain_subjects: Vec<String>,
    /// Name of the pinned root the chain ends at.
    pub root: &'static str,
    /// The parsed report.
    pub report: GpuReport,
}

/// Splits a PEM chain into DER certificates (in file order).
pub fn pem_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| Error::Malformed {
            what: "GPU certificate chain (PEM)",
            detail: e.to_string(),
        })?;
        if out.len() == MAX_CHAIN_LEN {
            return Err(Error::Unsupported {
                what: "GPU certificate chain length",
                value: format!("more than {MAX_CHAIN_LEN} certificates"),
            });
        }
        out.push(item.contents);
    }
    Ok(out)
}

fn subject_cn(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| cert.subject().to_string())
}

fn p384_key(cert: &X509Certificate<'_>, index: usize) -> Result<VerifyingKey> {
    VerifyingKey::from_sec1_bytes(cert.public_key().subject_public_key.data.as_ref()).map_err(
        |_| Error::CertificateChain {
            index,
            subject: subject_cn(cert),
            detail: "the public key is not a P-384 point".into(),
        },
    )
}

/// Checks `chain` (DER, leaf first) at `now`: each certificate signed (ECDSA P-384 /
/// SHA-384) by the next, every issuer a CA, every certificate valid at `now`, the last one
/// self-signed with the key of a pinned root. Returns the leaf's key, the subjects and the root's name.
pub fn verify_gpu_chain(
    chain: &[Vec<u8>],
    now: i64,
    roots: &[GpuRoot],
) -> Result<(VerifyingKey, Vec<String>, &'static str)> {
    if chain.len() < 2 || chain.len() > MAX_CHAIN_LEN {
        return Err(Error::Unsupported {
            what: "GPU certificate chain length (2..=8, leaf first, root last)",
            value: chain.len().to_string(),
        });
    }
    let mut certs = Vec::with_capacity(chain.len());
    for (index, der) in chain.iter().enumerate() {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::Malformed {
            what: "GPU certificate",
            detail: format!("certificate {index} of the chain: {e}"),
        })?;
        if !rest.is_empty() {
            return Err(Error::Malformed {
                what: "GPU certificate",
                detail: format!("certificate {index}: {} bytes after it", rest.len()),
            });
        }
        certs.push(cert);
    }
    let last = chain.len() - 1;
    // Compared by key (as the TDX path compares its root): a root re-issued with the same
    // key (a new signature, new dates) is the same anchor; the chain's last certificate
    // must still sign itself with that key (checked below).
    let last_spki = certs[last].public_key().raw;
    let root = roots
        .iter()
        .find(|r| {
            r.der == chain[last]
                || X509Certificate::from_der(&r.der)
                    .is_ok_and(|(_, root)| root.public_key().raw == last_spki)
        })
        .ok_or_else(|| Error::UntrustedAnchor {
            tee: "GPU",
            detail: format!(
                "the chain ends at '{}', not at a pinned root ({})",
                certs[last].subject(),
                roots.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
            ),
        })?;
    for (index, cert) in certs.iter().enumerate() {
        let what = format!("GPU certificate {index}, {}", subject_cn(cert));
        crate::unix_time::check_certificate_window(cert, &what, now)?;
        // The root signs itself; everyone else is signed by the next certificate.
        let issuer = &certs[(index + 1).min(last)];
        let broken = |detail: String| Error::CertificateChain {
            index,
            subject: subject_cn(cert),
            detail,
        };
        if cert.issuer() != issuer.subject() {
            return Err(broken(format!(
                "issuer '{}' is not the next certificate's subject '{}'",
                cert.issuer(),
                issuer.subject()
            )));
        }
        if index > 0 {
            let is_ca = cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|bc| bc.value.ca);
            if !is_ca {
                return Err(broken(
                    "issues the previous certificate but is not a CA (basicConstraints)".into(),
                ));
            }
        }
        let algorithm = cert.signature_algorithm.algorithm.to_id_string();
        if algorithm != ECDSA_WITH_SHA384 {
            return Err(broken(format!(
                "signature algorithm {algorithm}, expected ecdsa-with-SHA384"
            )));
        }
        let key = p384_key(issuer, (index + 1).min(last))?;
        let signature = Signature::from_der(cert.signature_value.data.as_ref())
            .map_err(|_| broken("the signature is not a DER ECDSA P-384 signature".into()))?;
        key.verify(cert.tbs_certificate.as_ref(), &signature)
            .map_err(|_| {
                broken(format!(
                    "not signed by certificate {} ({})",
                    (index + 1).min(last),
                    subject_cn(issuer)
                ))
            })?;
    }
    let leaf = p384_key(&certs[0], 0)?;
    let subjects = certs.iter().map(|c| c.subject().to_string()).collect();
    Ok((leaf, subjects, root.name))
}

/// Verifies GPU evidence at `now` (unix seconds): chain to a pinned root, the report's
/// signature with the leaf key over request ‖ response-without-signature, and the request
/// nonce equal to `expected_nonce`.
pub fn verify_gpu_evidence(
    evidence: &GpuEvidence,
    expected_nonce: &[u8; NONCE_LEN],
    now: i64,
    roots: &[GpuRoot],
) -> Result<GpuFacts> {
    let report = GpuReport::parse(&evidence.report)?;
    // A report for one block would leave every other block unreported, and uncovered
    // blocks are not failures by themselves: only the whole record is accepted.
    if report.request.param2 != ALL_MEASUREMENTS {
        return Err(Error::Unsupported {
            what: "GPU report measurement operation (SPDM request Param2, offset 3): every \
                   block (0xFF) is required",
            value: format!("{:#04x} (one block)", report.request.param2),
        });
    }
    let (leaf, chain_subjects, root) = verify_gpu_chain(&evidence.chain, now, roots)?;
    // The signature covers the bytes exactly as received (parse checked they re-encode).
    let signed = &evidence.report[..evidence.report.len() - P384_SIGNATURE_LEN];
    let signature = Signature::from_slice(&report.response.signature).map_err(|_| {
        Error::BadSignature("the GPU report signature is not a valid P-384 (r, s)".into())
    })?;
    leaf.verify(signed, &signature).map_err(|_| {
        Error::BadSignature(
            "the GPU report's SPDM signature does not verify with the leaf certificate's key \
             (SHA-384 over request and response without the signature)"
                .into(),
        )
    })?;
    if report.request.nonce != *expected_nonce {
        return Err(Error::NonceMismatch {
            what: "GPU report (SPDM GET_MEASUREMENTS request nonce, offset 4)",
            observed: hex::encode(report.request.nonce),
            expected: hex::encode(expected_nonce),
        });
    }
    let opaque = &report.response.opaque;
    Ok(GpuFacts {
        nonce: report.request.nonce,
        spdm_version: report.request.version,
        measurements: report
            .response
            .blocks
            .iter()
            .map(|b| (b.index, b.value.clone()))
            .collect(),
        driver_version: opaque.driver_version(),
        vbios_version: opaque.vbios_version(),
        chain_subjects,
        root,
        report,
    })
}

/// [`verify_gpu_evidence`] with NVIDIA's pinned device root.
pub fn verify_gpu_report(
    evidence: &GpuEvidence,
    expected_nonce: &[u8; NONCE_LEN],
    now: i64,
) -> Result<GpuFacts> {
    verify_gpu_evidence(evidence, expected_nonce, now, &nvidia_device_roots())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fixtures::{AT, C2023, C2025, R2023, R2025};

    const NONCE_2023: &str = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
    const NONCE_2025: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

    fn nonce(hex_text: &str) -> [u8; 32] {
        hex::decode(hex_text).unwrap().try_into().unwrap()
    }

    fn ev2023() -> GpuEvidence {
        GpuEvidence::from_nvidia_files(R2023, C2023).unwrap()
    }

    #[test]
    fn gpu_report_for_one_block_is_refused() {
        let mut ev = ev2023();
        ev.report[3] = 0x01;
        let err = verify_gpu_report(&ev, &nonce(NONCE_2023), AT).unwrap_err();
        assert!(err.to_string().contains("every block (0xFF)"), "{err}");
    }

    #[test]
    fn gpu_real_reports_verify_with_their_facts() {
        let facts = verify_gpu_report(&ev2023(), &nonce(NONCE_2023), AT).unwrap();
        assert_eq!(hex::encode(facts.nonce), NONCE_2023);
        assert_eq!(facts.spdm_version, 0x11);
        assert_eq!(facts.measurements.len(), 64);
        assert!(facts.measurements.iter().all(|(_, v)| v.len() == 48));
        assert_eq!(facts.driver_version.as_deref(), Some("545.00"));
        assert_eq!(facts.vbios_version.as_deref(), Some("96.00.5E.00.01"));
        assert_eq!(facts.root, "NVIDIA Device Identity CA");
        let cns: Vec<_> = facts
            .chain_subjects
            .iter()
            .map(|s| s.rsplit("CN=").next().unwrap().split(',').next().unwrap())
            .collect();
        assert_eq!(
            cns,
            [
                "GH100 A01 GSP FMC LF",
                "GH100 A01 GSP BROM",
                "NVIDIA GH100 Provisioner ICA 1",
                "NVIDIA GH100 Identity",
                "NVIDIA Device Identity CA"
            ]
        );

        let ev = GpuEvidence::from_nvidia_files(R2025, C2025).unwrap();
        let facts = verify_gpu_report(&ev, &nonce(NONCE_2025), AT).unwrap();
        assert_eq!(facts.driver_version.as_deref(), Some("550.90.07"));
        assert_eq!(facts.vbios_version.as_deref(), Some("96.00.9F.00.01"));
        assert_eq!(facts.measurements.len(), 64);
    }

    #[test]
    fn gpu_pinned_root_is_the_chains_last_certificate() {
        let ev = ev2023();
        assert_eq!(ev.chain.len(), 5);
        assert_eq!(nvidia_device_roots()[0].der, ev.chain[4]);
    }

    #[test]
    fn gpu_tampered_reports_fail() {
        let ev = ev2023();
        let n = nonce(NONCE_2023);
        let tamper = |offset: usize| {
            let mut bad = ev.clone();
            bad.report[offset] ^= 0x01;
            verify_gpu_report(&bad, &n, AT).unwrap_err()
        };
        // A measurement value (block 1's value starts at 37 + 8 + 7), the request nonce, the
        // responder nonce, the opaque data (the VBIOS version, first TLV), the signature.
        let len = ev.report.len();
        let opaque = 37 + 8 + 3520 + 32 + 2;
        for offset in [
            37 + 8 + 7,
            37 + 8 + 7 + 51 * 10,
            10,
            37 + 8 + 3520 + 5,
            opaque + 5,
        ] {
            let err = tamper(offset);
            assert!(matches!(err, Error::BadSignature(_)), "{offset}: {err}");
        }
        for offset in [len - 1, len - 50, len - 96] {
            let err = tamper(offset);
            assert!(matches!(err, Error::BadSignature(_)), "{offset}: {err}");
        }
        // The wrong expected nonce.
        let mut other = n;
        other[31] ^= 1;
        let err = verify_gpu_report(&ev, &other, AT).unwrap_err();
        assert!(matches!(err, Error::NonceMismatch { .. }), "{err}");
        assert!(err.to_string().contains(NONCE_2023), "{err}");
        // Truncated at several offsets: header, record, nonce, opaque, signature.
        for cut in [
            0,
            20,
            37,
            40,
            37 + 8 + 100,
            37 + 8 + 3520 + 10,
            len - 97,
            len - 1,
        ] {
            let mut bad = ev.clone();
            bad.report.truncate(cut);
            let err = verify_gpu_report(&bad, &n, AT).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. } | Error::Malformed { .. }),
                "{cut}: {err}"
            );
        }
    }

    #[test]
    fn gpu_bad_chains_fail() {
        let ev = ev2023();
        let n = nonce(NONCE_2023);
        let other = GpuEvidence::from_nvidia_files(R2025, C2025).unwrap();
        // The 2025 GPU's leaf in the 2023 chain: not signed by the 2023 BROM certificate.
        let mut bad = ev.clone();
        bad.chain[0] = other.chain[0].clone();
        let err = verify_gpu_report(&bad, &n, AT).unwrap_err();
        assert!(
            matches!(err, Error::CertificateChain { index: 0, .. }),
            "{err}"
        );
        // The 2025 chain with the 2023 report: the chain verifies, the signature does not.
        let mut bad = ev.clone();
        bad.chain = other.chain.clone();
        let err = verify_gpu_report(&bad, &n, AT).unwrap_err();
        assert!(matches!(err, Error::BadSignature(_)), "{err}");
        // Two certificates swapped.
        let mut bad = ev.clone();
        bad.chain.swap(1, 2);
        let err = verify_gpu_report(&bad, &n, AT).unwrap_err();
        assert!(matches!(err, Error::CertificateChain { .. }), "{err}");
        // A chain not ending at the pinned root: root dropped, or a foreign root last.
        let mut bad = ev.clone();
        bad.chain.pop();
        let err = verify_gpu_report(&bad, &n, AT).unwrap_err();
        assert!(matches!(err, Error::UntrustedAnchor { .. }), "{err}");
        let foreign = crate::pem::der_or_pem(
            include_bytes!("../../tests/fixtures/tdx/intel_sgx_root_ca.pem").to_vec(),
        );
        let mut bad = ev.clone();
        bad.chain[4] = foreign.clone();
        let err = verify_gpu_report(&bad, &n, AT).unwrap_err();
        assert!(matches!(err, Error::UntrustedAnchor { .. }), "{err}");
        // ...and a verifier that pins only that foreign root refuses the real chain.
        let roots = [GpuRoot {
            name: "Intel SGX Root CA",
            der: foreign,
            simulated: true,
        }];
        let err = verify_gpu_evidence(&ev, &n, AT, &roots).unwrap_err();
        assert!(err.to_string().contains("not at a pinned root"), "{err}");
        // Only one certificate, and garbage.
        let mut bad = ev.clone();
        bad.chain.truncate(1);
        assert!(verify_gpu_report(&bad, &n, AT).is_err());
        let mut bad = ev.clone();
        bad.chain[2] = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        assert!(verify_gpu_report(&bad, &n, AT).is_err());
    }

    #[test]
    fn gpu_outside_validity_fails() {
        // 2022-01-01: before the BROM and FMC certificates' notBefore (2022-01-12, 2022-03-01).
        let err = verify_gpu_report(&ev2023(), &nonce(NONCE_2023), 1_640_995_200).unwrap_err();
        assert!(matches!(err, Error::CertificateExpired { .. }), "{err}");
        assert!(err.to_string().contains("GPU certificate"), "{err}");
        // Before every certificate, and past year 9999.
        for t in [0, 253_402_300_800] {
            let err = verify_gpu_report(&ev2023(), &nonce(NONCE_2023), t).unwrap_err();
            assert!(
                matches!(err, Error::CertificateExpired { .. }),
                "{t}: {err}"
            );
        }
    }

    #[test]
    fn gpu_evidence_digest_is_canonical() {
        let ev = ev2023();
        let d = gpu_evidence_digest(&ev);
        // Independent computation of the documented encoding.
        let mut enc = GPU_EVIDENCE_TAG.to_vec();
        enc.extend_from_slice(&(ev.report.len() as u32).to_be_bytes());
        enc.extend_from_slice(&ev.report);
        enc.extend_from_slice(&5u32.to_be_bytes());
        for c in &ev.chain {
            enc.extend_from_slice(&(c.len() as u32).to_be_bytes());
            enc.extend_from_slice(c);
        }
        assert_eq!(d.to_vec(), Sha384::digest(&enc).to_vec());
        // Any change to the report or the chain changes it.
        let mut other = ev.clone();
        other.report[100] ^= 1;
        assert_ne!(gpu_evidence_digest(&other), d);
        let mut other = ev.clone();
        other.chain.pop();
        assert_ne!(gpu_evidence_digest(&other), d);
        let mut other = ev.clone();
        other.chain.swap(2, 3);
        assert_ne!(gpu_evidence_digest(&other), d);
    }
}
