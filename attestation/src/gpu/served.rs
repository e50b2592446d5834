//! GPU evidence as a guest serves it (`GET /v1/attestation/gpu`), and its check against
//! the RA-TLS evidence that binds it.
//!
//! Why the digest goes in REPORTDATA and the evidence beside it: one device's report and
//! chain are several kilobytes, a machine may have eight GPUs, and the certificate is
//! sent in every handshake. So the CPU TEE's evidence binds
//! [`gpu_evidence_set_digest`] (through the payload's `gpu_evidence_digest`), and a client
//! fetches the evidence over the attested session and checks that it hashes to it.
//!
//! Freshness: every device's SPDM request nonce is [`gpu_nonce_for_key`] of the guest's
//! TLS key, which is made fresh at each start inside the TEE. A GPU report carrying that
//! nonce was made after the key existed, for this key; a report recorded earlier (from
//! another boot, another machine, or a GPU since taken out of CC mode) cannot carry it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

use super::spdm::NONCE_LEN;
use super::verdict::{gpu_verdict, gpu_verdict_with_rims, GpuVerdict};
use super::verify::{gpu_evidence_digest, GpuEvidence, GpuRoot};
use crate::{Error, Result};

/// Domain tag of [`gpu_nonce_for_key`].
pub const GPU_NONCE_TAG: &[u8] = b"cocoon/gpu-nonce/v1";
/// Domain tag of [`gpu_evidence_set_digest`].
pub const GPU_EVIDENCE_SET_TAG: &[u8] = b"cocoon/gpu-evidence-set/v1";
/// Layout version of [`GpuEvidenceDocument`].
pub const GPU_DOCUMENT_VERSION: u32 = 1;
/// Most GPUs one document may carry (an HGX board has 8).
pub const MAX_GPU_DEVICES: usize = 16;
/// Largest document a client reads.
pub const MAX_GPU_DOCUMENT_BYTES: usize = 1 << 20;

/// The SPDM requester nonce a guest asks its GPUs to sign:
/// `SHA-256("cocoon/gpu-nonce/v1" || u32be(len(SPKI)) || SPKI)` of its TLS key's DER
/// SubjectPublicKeyInfo.
pub fn gpu_nonce_for_key(spki_der: &[u8]) -> [u8; NONCE_LEN] {
    let mut h = Sha256::new();
    h.update(GPU_NONCE_TAG);
    h.update((spki_der.len() as u32).to_be_bytes());
    h.update(spki_der);
    h.finalize().into()
}

/// What the RA-TLS evidence binds for the guest's GPUs, in device order:
/// `SHA-384("cocoon/gpu-evidence-set/v1" || u32be(n) || d_1 || … || d_n)` with `d_i` the
/// [`gpu_evidence_digest`] of device `i`.
pub fn gpu_evidence_set_digest<'a, I>(devices: I) -> [u8; 48]
where
    I: IntoIterator<Item = &'a GpuEvidence>,
    I::IntoIter: ExactSizeIterator,
{
    let devices = devices.into_iter();
    let mut h = Sha384::new();
    h.update(GPU_EVIDENCE_SET_TAG);
    h.update((devices.len() as u32).to_be_bytes());
    for device in devices {
        h.update(gpu_evidence_digest(device));
    }
    h.finalize().into()
}

/// One device's evidence as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServedGpuDevice {
    /// The NVML device index.
    pub index: u32,
    /// Hex of the SPDM GET_MEASUREMENTS request followed by the response (the form
    /// NVIDIA's tools store).
    pub report: String,
    /// The device certificate chain, PEM, leaf first.
    pub certificate_chain: String,
}

/// The body of `GET /v1/attestation/gpu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvidenceDocument {
    pub version: u32,
    /// The requester nonce every report carries (hex), [`gpu_nonce_for_key`].
    pub nonce: String,
    pub devices: Vec<ServedGpuDevice>,
    /// [`gpu_evidence_set_digest`] of the devices (hex): what the RA-TLS evidence binds.
    pub evidence_digest: String,
}

impl GpuEvidenceDocument {
    /// The document for `devices` (index, evidence) reported for `nonce`.
    pub fn new(nonce: &[u8; NONCE_LEN], devices: &[(u32, GpuEvidence)]) -> Self {
        Self {
            version: GPU_DOCUMENT_VERSION,
            nonce: hex::encode(nonce),
            devices: devices
                .iter()
                .map(|(index, e)| ServedGpuDevice {
                    index: *index,
                    report: hex::encode(&e.report),
                    certificate_chain: e
                        .chain
                        .iter()
                        .map(|der| crate::ratls::certificate_pem(der))
                        .collect(),
                })
                .collect(),
            evidence_digest: hex::encode(gpu_evidence_set_digest(devices.iter().map(|(_, e)| e))),
        }
    }

    /// Parses a served document (at most [`MAX_GPU_DOCUMENT_BYTES`], [`MAX_GPU_DEVICES`]).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let malformed = |detail: String| Error::Malformed {
            what: "GPU evidence document",
            detail,
        };
        if bytes.len() > MAX_GPU_DOCUMENT_BYTES {
            return Err(malformed(format!(
                "{} bytes, more than {MAX_GPU_DOCUMENT_BYTES}",
                bytes.len()
            )));
        }
        let doc: Self = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if doc.version != GPU_DOCUMENT_VERSION {
            return Err(Error::Unsupported {
                what: "GPU evidence document version",
                value: doc.version.to_string(),
            });
        }
        if doc.devices.is_empty() || doc.devices.len() > MAX_GPU_DEVICES {
            return Err(malformed(format!(
                "{} devices (1..={MAX_GPU_DEVICES} expected)",
                doc.devices.len()
            )));
        }
        Ok(doc)
    }

    /// The devices' evidence, in document order.
    pub fn evidence(&self) -> Result<Vec<GpuEvidence>> {
        self.devices
            .iter()
            .map(|d| {
                GpuEvidence::from_nvidia_files(d.report.as_bytes(), d.certificate_chain.as_bytes())
            })
            .collect()
    }

    /// The canonical JSON a guest serves.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The result of checking served GPU evidence.
#[derive(Debug, Clone, Serialize)]
pub struct ServedGpuCheck {
    /// True when the evidence hashes to the bound digest and every device verified.
    pub verified: bool,
    /// The bound digest (hex).
    pub evidence_digest: String,
    /// Per device: its NVML index and verdict.
    pub devices: Vec<(u32, GpuVerdict)>,
    /// Why the set is refused (empty when verified).
    pub errors: Vec<String>,
}

impl ServedGpuCheck {
    /// One line naming every refusal, for an error message.
    pub fn refusal(&self) -> Option<String> {
        (!self.verified).then(|| self.errors.join("; "))
    }
}

/// Checks a served document against the RA-TLS evidence: it must hash to `bound_digest`,
/// every report must carry [`gpu_nonce_for_key`]`(spki_der)` and verify to one of `roots`
/// at `now`; with `rims` (`(name, XML)`), each device's measurements are compared with
/// them (see [`gpu_verdict_with_rims`]); without, the measurements are reported
/// uncompared.
pub fn verify_served_gpu(
    document: &[u8],
    spki_der: &[u8],
    bound_digest: &[u8],
    now: i64,
    roots: &[GpuRoot],
    rims: &[(String, Vec<u8>)],
) -> ServedGpuCheck {
    let mut check = ServedGpuCheck {
        verified: false,
        evidence_digest: hex::encode(bound_digest),
        devices: Vec::new(),
        errors: Vec::new(),
    };
    let parsed = GpuEvidenceDocument::parse(document).and_then(|doc| {
        let evidence = doc.evidence()?;
        Ok((doc, evidence))
    });
    let (doc, evidence) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            check.errors.push(e.to_string());
            return check;
        }
    };
    let served = gpu_evidence_set_digest(&evidence);
    if served[..] != *bound_digest {
        check.errors.push(
            Error::Policy {
                rule: "the served GPU evidence must be the evidence the TEE bound",
                observed: hex::encode(served),
                expected: hex::encode(bound_digest),
            }
            .to_string(),
        );
        return check;
    }
    let nonce = gpu_nonce_for_key(spki_der);
    for (device, evidence) in doc.devices.iter().zip(&evidence) {
        let verdict = if rims.is_empty() {
            gpu_verdict(evidence, &nonce, now, roots, None)
        } else {
            gpu_verdict_with_rims(evidence, &nonce, now, roots, rims)
        };
        for e in &verdict.errors {
            check.errors.push(format!("GPU {}: {e}", device.index));
        }
        check.devices.push((device.index, verdict));
    }
    check.verified = check.errors.is_empty();
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fixtures::{AT, C2023, R2023};
    use crate::gpu::nvidia_device_roots;

    fn real() -> GpuEvidence {
        GpuEvidence::from_nvidia_files(R2023, C2023).unwrap()
    }

    #[test]
    fn gpu_document_round_trips_and_binds_every_device_in_order() {
        let ev = real();
        let nonce = [7u8; 32];
        let doc = GpuEvidenceDocument::new(&nonce, &[(0, ev.clone()), (1, ev.clone())]);
        let parsed = GpuEvidenceDocument::parse(&doc.to_json()).unwrap();
        assert_eq!(parsed, doc);
        assert_eq!(parsed.evidence().unwrap(), vec![ev.clone(), ev.clone()]);
        let one = gpu_evidence_set_digest(std::slice::from_ref(&ev));
        let two = gpu_evidence_set_digest(&[ev.clone(), ev.clone()]);
        assert_ne!(one, two);
        assert_eq!(doc.evidence_digest, hex::encode(two));
        assert_ne!(
            one[..],
            gpu_evidence_digest(&ev)[..],
            "the set digest has its own tag"
        );
    }

    #[test]
    fn gpu_document_parser_refuses_what_it_cannot_bound() {
        let doc = GpuEvidenceDocument::new(&[0; 32], &[(0, real())]);
        let mut v: serde_json::Value = serde_json::from_slice(&doc.to_json()).unwrap();
        v["version"] = 2.into();
        let err = GpuEvidenceDocument::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        v["version"] = 1.into();
        v["devices"] = serde_json::json!([]);
        assert!(GpuEvidenceDocument::parse(v.to_string().as_bytes()).is_err());
        v["extra"] = 1.into();
        assert!(GpuEvidenceDocument::parse(v.to_string().as_bytes()).is_err());
        assert!(GpuEvidenceDocument::parse(&vec![b' '; MAX_GPU_DOCUMENT_BYTES + 1]).is_err());
        assert!(GpuEvidenceDocument::parse(b"{").is_err());
    }

    #[test]
    fn gpu_served_evidence_is_refused_unless_bound_and_fresh_for_the_key() {
        let ev = real();
        let doc = GpuEvidenceDocument::new(&[0; 32], &[(0, ev.clone())]).to_json();
        let bound = gpu_evidence_set_digest(std::slice::from_ref(&ev));
        let roots = nvidia_device_roots();
        // The real report was made for NVIDIA's sample nonce, not for any key of ours:
        // it is bound, but not fresh for this key.
        let check = verify_served_gpu(&doc, b"spki", &bound, AT, &roots, &[]);
        assert!(!check.verified);
        let why = check.refusal().unwrap();
        assert!(why.contains("GPU 0") && why.contains("nonce"), "{why}");
        // Evidence other than what the TEE bound: refused before any device is checked.
        let check = verify_served_gpu(&doc, b"spki", &[0; 48], AT, &roots, &[]);
        assert!(check.devices.is_empty());
        assert!(check.refusal().unwrap().contains("the TEE bound"));
        // Garbage.
        let check = verify_served_gpu(b"[]", b"spki", &bound, AT, &roots, &[]);
        assert!(!check.verified && check.refusal().unwrap().contains("GPU evidence document"));
    }

    #[test]
    fn gpu_nonce_depends_on_the_whole_key() {
        assert_ne!(gpu_nonce_for_key(b"a"), gpu_nonce_for_key(b"b"));
        assert_ne!(gpu_nonce_for_key(b""), gpu_nonce_for_key(b"\0"));
    }
}
