//! Azure's HCL report, made for development: the layout Azure's paravisor writes to the
//! vTPM's NV index `0x01400001` (see `cocoon_attestation::vtpm::hcl`), around a hardware
//! report from the development PKI and runtime data that names a vTPM attestation key.
//! The parser reads these exactly as it reads the reports recorded on Azure.

use base64::Engine;

/// HCL report type of an SEV-SNP hardware report.
pub const REPORT_TYPE_SNP: u32 = 2;

/// The runtime data JSON Azure's paravisor writes: the AK as a JWK (`HCLAkPub`), the VM
/// configuration, and 64 bytes of user data.
pub fn runtime_data(ak_modulus: &[u8], ak_exponent: &[u8]) -> Vec<u8> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    serde_json::json!({
        "keys": [{
            "kid": "HCLAkPub",
            "key_ops": ["sign"],
            "kty": "RSA",
            "e": b64(ak_exponent),
            "n": b64(ak_modulus),
        }],
        "vm-configuration": {
            "console-enabled": false,
            "secure-boot": true,
            "tpm-enabled": true,
            "vmUniqueId": "00000000-0000-0000-0000-000000000000",
        },
        "user-data": "00".repeat(64).to_uppercase(),
    })
    .to_string()
    .into_bytes()
}

/// An HCL report (version 2, SHA-256 runtime-data hash) around `hardware_report`
/// (1184 bytes for SEV-SNP) and `runtime_data`. Azure's NV index is 2600 bytes, zero
/// padded; this one ends with the runtime data, as a TPM's default 2048-byte NV index
/// limit (swtpm's) needs.
pub fn hcl_report(hardware_report: &[u8], report_type: u32, runtime_data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2600);
    out.extend_from_slice(b"HCLA");
    out.extend_from_slice(&2u32.to_le_bytes());
    let used = 0x4D4 + runtime_data.len();
    out.extend_from_slice(&(used as u32).to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes()); // request type
    out.extend_from_slice(&0u32.to_le_bytes()); // status
    out.extend_from_slice(&[0u8; 12]);
    let mut slot = hardware_report.to_vec();
    slot.resize(1184, 0);
    out.extend_from_slice(&slot);
    out.extend_from_slice(&(20 + runtime_data.len() as u32).to_le_bytes()); // data size
    out.extend_from_slice(&1u32.to_le_bytes()); // version
    out.extend_from_slice(&report_type.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // SHA-256
    out.extend_from_slice(&(runtime_data.len() as u32).to_le_bytes());
    out.extend_from_slice(runtime_data);
    out
}
