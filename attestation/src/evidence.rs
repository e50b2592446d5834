//! The evidence payload carried inside an RA-TLS certificate.
//!
//! It is CBOR (RFC 8949) so that verifiers in any language can read it with a stock
//! library; byte strings are CBOR byte strings, not arrays. The payload says what kind of
//! evidence it holds rather than leaving the verifier to guess from the bytes, and carries
//! the measured-config digest that REPORTDATA commits to.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Version of the payload layout written by this crate.
pub const PAYLOAD_VERSION: u32 = 1;

/// Largest payload a verifier will decode (quotes with certificate chains are ~10 KiB).
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024;

/// Which TEE produced the evidence. Development evidence has the same kinds: only the
/// root its chain ends at tells it apart, and verifiers trust that root only on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// An Intel TDX quote (v4 or v5) from real hardware.
    #[serde(rename = "tdx")]
    Tdx,
    /// An AMD SEV-SNP attestation report from real hardware.
    #[serde(rename = "sev-snp")]
    SevSnp,
}

impl EvidenceKind {
    /// The name used in CLI output and JSON (`tdx`, `sev-snp`).
    pub fn tee_name(self) -> &'static str {
        match self {
            EvidenceKind::Tdx => "tdx",
            EvidenceKind::SevSnp => "sev-snp",
        }
    }
}

/// Everything a verifier needs besides the certificate itself. Unknown keys are errors
/// (RA-TLS.md), so this verifier and one written from the spec accept the same payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidencePayload {
    /// Layout version ([`PAYLOAD_VERSION`]).
    pub version: u32,
    /// What produced `evidence`.
    pub kind: EvidenceKind,
    /// The raw quote or report, exactly as the TEE returned it.
    #[serde(with = "serde_bytes")]
    pub evidence: Vec<u8>,
    /// The measured event log (RTMR3 extensions), empty when there is none.
    #[serde(with = "serde_bytes")]
    pub event_log: Vec<u8>,
    /// SHA-384 of the guest's canonical measured configuration.
    #[serde(with = "serde_bytes")]
    pub config_digest: Vec<u8>,
    /// SHA-384 of the GPU's attestation evidence, when a GPU is attached.
    #[serde(with = "serde_bytes", default, skip_serializing_if = "Option::is_none")]
    pub gpu_evidence_digest: Option<Vec<u8>>,
    /// Ed25519 public key (32 bytes) that signs this guest's usage receipts.
    #[serde(with = "serde_bytes", default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<Vec<u8>>,
    /// SEV-SNP: the certificate table the host attached to the report (VCEK or VLEK,
    /// ASK, ARK; AMD's GUID table format), so a verifier need not ask AMD KDS. Not bound
    /// in REPORTDATA: the certificates prove themselves by chaining to a pinned ARK.
    #[serde(with = "serde_bytes", default, skip_serializing_if = "Option::is_none")]
    pub snp_certificates: Option<Vec<u8>>,
    /// A vTPM quote over the same binding, with its attestation key's binding to the
    /// hardware report ([`crate::vtpm`]), when the guest has a vTPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtpm: Option<crate::vtpm::VtpmEvidence>,
}

impl EvidencePayload {
    /// The optional fields REPORTDATA binds besides the key and config digest.
    pub fn bound_extras(&self) -> crate::report_data::BoundExtras<'_> {
        crate::report_data::BoundExtras {
            receipt_key: self.receipt_key.as_deref(),
            gpu_evidence_digest: self.gpu_evidence_digest.as_deref(),
            vtpm_ak: self
                .vtpm
                .as_ref()
                .filter(|v| v.binding == crate::vtpm::AkBinding::ReportData)
                .map(|v| v.ak_public.as_slice()),
        }
    }

    /// CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| Error::Malformed {
            what: "evidence payload",
            detail: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decodes and sanity-checks a CBOR payload from untrusted bytes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_PAYLOAD_LEN {
            return Err(Error::Unsupported {
                what: "evidence payload length",
                value: format!("{} bytes (max {MAX_PAYLOAD_LEN})", bytes.len()),
            });
        }
        let mut reader = std::io::Cursor::new(bytes);
        let payload: Self = ciborium::from_reader(&mut reader).map_err(|e| Error::Malformed {
            what: "evidence payload (CBOR)",
            detail: e.to_string(),
        })?;
        if reader.position() != bytes.len() as u64 {
            return Err(Error::Malformed {
                what: "evidence payload (CBOR)",
                detail: format!(
                    "{} trailing bytes after the payload",
                    bytes.len() as u64 - reader.position()
                ),
            });
        }
        if payload.version != PAYLOAD_VERSION {
            return Err(Error::Unsupported {
                what: "evidence payload version",
                value: payload.version.to_string(),
            });
        }
        if payload.config_digest.len() != 48 {
            return Err(Error::Unsupported {
                what: "config digest length",
                value: payload.config_digest.len().to_string(),
            });
        }
        if let Some(key) = &payload.receipt_key {
            if key.len() != 32 {
                return Err(Error::Unsupported {
                    what: "receipt key length (Ed25519 public keys are 32 bytes)",
                    value: key.len().to_string(),
                });
            }
        }
        if let Some(table) = &payload.snp_certificates {
            crate::snp::ext_report::CertTable::parse(table)?;
        }
        if let Some(vtpm) = &payload.vtpm {
            vtpm.check_shape()?;
        }
        if let Some(gpu) = &payload.gpu_evidence_digest {
            if gpu.len() != 48 {
                return Err(Error::Unsupported {
                    what: "GPU evidence digest length (SHA-384)",
                    value: gpu.len().to_string(),
                });
            }
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EvidencePayload {
        EvidencePayload {
            version: PAYLOAD_VERSION,
            kind: EvidenceKind::Tdx,
            evidence: vec![1, 2, 3],
            event_log: vec![],
            config_digest: vec![7; 48],
            gpu_evidence_digest: None,
            receipt_key: None,
            snp_certificates: None,
            vtpm: None,
        }
    }

    #[test]
    fn round_trips_through_cbor() {
        let p = sample();
        assert_eq!(
            EvidencePayload::from_cbor(&p.to_cbor().unwrap()).unwrap(),
            p
        );
        let mut with_gpu = sample();
        with_gpu.gpu_evidence_digest = Some(vec![9; 48]);
        let back = EvidencePayload::from_cbor(&with_gpu.to_cbor().unwrap()).unwrap();
        assert_eq!(back, with_gpu);
    }

    #[test]
    fn rejects_garbage_wrong_version_and_bad_digest() {
        assert!(EvidencePayload::from_cbor(b"\xff\x00garbage").is_err());
        let mut p = sample();
        p.version = 99;
        let err = EvidencePayload::from_cbor(&p.to_cbor().unwrap()).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        let mut p = sample();
        p.config_digest = vec![1; 10];
        assert!(EvidencePayload::from_cbor(&p.to_cbor().unwrap()).is_err());
    }

    /// RA-TLS.md: unknown keys are errors (review finding 17), so a verifier written from
    /// the spec and this one accept the same payloads.
    #[test]
    fn rejects_unknown_keys() {
        let mut value: ciborium::Value =
            ciborium::from_reader(sample().to_cbor().unwrap().as_slice()).unwrap();
        if let ciborium::Value::Map(entries) = &mut value {
            entries.push(("x".into(), 1.into()));
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&value, &mut bytes).unwrap();
        let err = EvidencePayload::from_cbor(&bytes).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
