//! Azure's HCL report: how an Azure confidential VM binds its vTPM to the hardware.
//!
//! On Azure SEV-SNP and TDX CVMs the guest does not ask the hardware for a report itself:
//! the paravisor (Microsoft's HCL, running at VMPL0 / as the TD's L1) does, at boot, and
//! stores the result in the vTPM's NV index `0x01400001`. The hardware report's
//! REPORTDATA is not the guest's choice: its first bytes are a hash of the paravisor's
//! *runtime data*, a JSON document that carries the vTPM's attestation key (`HCLAkPub`,
//! a JWK). A verifier therefore goes hardware report → runtime data → AK → TPM quote,
//! and the guest's own binding (TLS key, config, session) rides in the quote's
//! qualifying data.
//!
//! Layout (little-endian; Microsoft's `IGVM_ATTEST` request format as the HCL writes it):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 4 | signature `HCLA` |
//! | 0x004 | 4 | version (1, 2) |
//! | 0x008 | 4 | report size (bytes used) |
//! | 0x00C | 4 | request type (2: key release / attestation) |
//! | 0x010 | 4 | status |
//! | 0x014 | 12 | reserved |
//! | 0x020 | 1184 | the hardware report: an SEV-SNP report, or a 1024-byte TDREPORT |
//! | 0x4C0 | 4 | request data size |
//! | 0x4C4 | 4 | request data version (1) |
//! | 0x4C8 | 4 | report type (2: SEV-SNP, 4: TDX) |
//! | 0x4CC | 4 | runtime data hash type (1: SHA-256, 2: SHA-384, 3: SHA-512) |
//! | 0x4D0 | 4 | runtime data size |
//! | 0x4D4 | n | runtime data (JSON) |

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::tpm::AkPublic;
use crate::{Error, Result};

const SIGNATURE: &[u8; 4] = b"HCLA";
const HARDWARE_REPORT_OFFSET: usize = 0x20;
const HARDWARE_REPORT_SLOT: usize = 1184;
const REQUEST_DATA_OFFSET: usize = 0x4C0;
const RUNTIME_DATA_OFFSET: usize = 0x4D4;
/// The NV index Azure's paravisor keeps the HCL report in.
pub const AZURE_HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// The NV index a guest writes 64 bytes of its own data to before reading a fresh report.
pub const AZURE_REPORT_DATA_NV_INDEX: u32 = 0x0140_0002;
/// The persistent handle of Azure's vTPM attestation key.
pub const AZURE_AK_HANDLE: u32 = 0x8100_0003;
/// The largest HCL report accepted (Azure's NV index holds 2600 bytes).
pub const MAX_HCL_REPORT_LEN: usize = 16 * 1024;

/// Which hardware report the HCL report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HclReportType {
    SevSnp,
    Tdx,
}

/// A parsed HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport {
    pub version: u32,
    pub report_type: HclReportType,
    /// The hardware report: 1184 bytes of SEV-SNP report, or 1024 bytes of TDREPORT.
    pub hardware_report: Vec<u8>,
    /// Hash type of the runtime data binding (1 SHA-256, 2 SHA-384, 3 SHA-512).
    pub hash_type: u32,
    /// The runtime data, exactly as hashed.
    pub runtime_data: Vec<u8>,
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "Azure HCL report",
        detail: detail.into(),
    }
}

impl HclReport {
    /// Parses an HCL report from untrusted bytes (trailing zero padding allowed).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_HCL_REPORT_LEN {
            return Err(Error::LimitExceeded {
                what: "Azure HCL report length",
                actual: bytes.len(),
                limit: MAX_HCL_REPORT_LEN,
            });
        }
        if bytes.len() < RUNTIME_DATA_OFFSET {
            return Err(Error::Truncated {
                what: "Azure HCL report",
                needed: RUNTIME_DATA_OFFSET,
                offset: 0,
                available: bytes.len(),
            });
        }
        if &bytes[..4] != SIGNATURE {
            return Err(malformed(format!(
                "signature {:02x?} is not \"HCLA\"",
                &bytes[..4]
            )));
        }
        let version = u32_at(bytes, 4);
        let report_type = match u32_at(bytes, REQUEST_DATA_OFFSET + 8) {
            2 => HclReportType::SevSnp,
            4 => HclReportType::Tdx,
            other => {
                return Err(Error::Unsupported {
                    what: "HCL report type (2 SEV-SNP, 4 TDX)",
                    value: other.to_string(),
                })
            }
        };
        let hash_type = u32_at(bytes, REQUEST_DATA_OFFSET + 12);
        if !(1..=3).contains(&hash_type) {
            return Err(Error::Unsupported {
                what: "HCL runtime data hash type (1 SHA-256, 2 SHA-384, 3 SHA-512)",
                value: hash_type.to_string(),
            });
        }
        let runtime_len = u32_at(bytes, REQUEST_DATA_OFFSET + 16) as usize;
        let end = RUNTIME_DATA_OFFSET
            .checked_add(runtime_len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| Error::Truncated {
                what: "Azure HCL runtime data",
                needed: runtime_len,
                offset: RUNTIME_DATA_OFFSET,
                available: bytes.len() - RUNTIME_DATA_OFFSET,
            })?;
        let hardware_len = match report_type {
            HclReportType::SevSnp => HARDWARE_REPORT_SLOT,
            HclReportType::Tdx => crate::tdx::td_report::TD_REPORT_LEN,
        };
        Ok(Self {
            version,
            report_type,
            hardware_report: bytes[HARDWARE_REPORT_OFFSET..HARDWARE_REPORT_OFFSET + hardware_len]
                .to_vec(),
            hash_type,
            runtime_data: bytes[RUNTIME_DATA_OFFSET..end].to_vec(),
        })
    }

    /// What the hardware report's REPORTDATA must start with: the runtime data's hash.
    pub fn runtime_data_digest(&self) -> Vec<u8> {
        match self.hash_type {
            2 => Sha384::digest(&self.runtime_data).to_vec(),
            3 => Sha512::digest(&self.runtime_data).to_vec(),
            _ => Sha256::digest(&self.runtime_data).to_vec(),
        }
    }

    /// Checks that `report_data` (the hardware report's, verified by the caller) commits
    /// to this runtime data: its first bytes are the runtime data's hash.
    pub fn check_report_data(&self, report_data: &[u8; 64]) -> Result<()> {
        let digest = self.runtime_data_digest();
        if report_data[..digest.len()] != digest[..] {
            return Err(Error::Policy {
                rule: "the hardware REPORTDATA must commit to the HCL runtime data (its hash)",
                observed: hex::encode(&report_data[..digest.len()]),
                expected: hex::encode(&digest),
            });
        }
        Ok(())
    }

    /// The SEV-SNP report the HCL report holds, parsed, after checking that its REPORTDATA
    /// commits to the runtime data (its signature is the caller's to verify).
    pub fn snp_report(&self) -> Result<crate::snp::SnpReport> {
        if self.report_type != HclReportType::SevSnp {
            return Err(Error::Unsupported {
                what: "HCL report hardware report (expected SEV-SNP)",
                value: format!("{:?}", self.report_type),
            });
        }
        let report = crate::snp::SnpReport::parse(&self.hardware_report)?;
        self.check_report_data(&report.report_data)?;
        Ok(report)
    }

    /// The runtime data, parsed.
    pub fn runtime(&self) -> Result<RuntimeData> {
        serde_json::from_slice(&self.runtime_data).map_err(|e| Error::Malformed {
            what: "Azure HCL runtime data (JSON)",
            detail: e.to_string(),
        })
    }
}

/// The paravisor's runtime data (only the parts a verifier uses).
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeData {
    #[serde(default)]
    pub keys: Vec<Jwk>,
    /// 64 bytes the guest wrote to NV index `0x01400002` before the report was made, hex.
    #[serde(rename = "user-data", default)]
    pub user_data: Option<String>,
}

/// A JSON Web Key as the runtime data lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
}

impl RuntimeData {
    /// The vTPM attestation key the paravisor vouches for (`kid` `HCLAkPub`, RSA).
    pub fn attestation_key(&self) -> Result<AkPublic> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid == "HCLAkPub")
            .ok_or_else(|| malformed("the runtime data names no HCLAkPub key"))?;
        if jwk.kty != "RSA" {
            return Err(Error::Unsupported {
                what: "HCLAkPub key type",
                value: jwk.kty.clone(),
            });
        }
        let decode = |field: &Option<String>, name: &str| -> Result<Vec<u8>> {
            let text = field
                .as_deref()
                .ok_or_else(|| malformed(format!("HCLAkPub has no '{name}'")))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|e| malformed(format!("HCLAkPub '{name}': {e}")))
        };
        let strip = |v: Vec<u8>| super::tpm::strip_leading_zeros(&v).to_vec();
        Ok(AkPublic::Rsa {
            modulus: strip(decode(&jwk.n, "n")?),
            exponent: strip(decode(&jwk.e, "e")?),
        })
    }
}
