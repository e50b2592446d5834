//! SEV-SNP launch digest: what the AMD secure processor will report as MEASUREMENT.
//!
//! The digest chains every page QEMU hands to SNP_LAUNCH_UPDATE: the OVMF image, the
//! metadata pages OVMF declares (secrets, CPUID, zeroed pages, the kernel-hashes page),
//! and one VMSA per vCPU, whose contents depend on the vCPU type (CPUID signature) and
//! the guest features. The arithmetic is the `sev` crate's (virtee); this module checks
//! the inputs first with our own bounds-checked parser, so a wrong or damaged file gives
//! a precise error here instead of a panic or a vague one inside the library.

use std::path::{Path, PathBuf};

use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType};

use crate::bytes;
use crate::error::{read_file, Error, Result};
use crate::ovmf::{self, FooterTable};

/// The vCPU types the measurement knows (QEMU `-cpu` model names).
pub const VCPU_TYPES: &[&str] = &[
    "EPYC",
    "EPYC-v1",
    "EPYC-v2",
    "EPYC-IBPB",
    "EPYC-v3",
    "EPYC-v4",
    "EPYC-Rome",
    "EPYC-Rome-v1",
    "EPYC-Rome-v2",
    "EPYC-Rome-v3",
    "EPYC-Milan",
    "EPYC-Milan-v1",
    "EPYC-Milan-v2",
    "EPYC-Genoa",
    "EPYC-Genoa-v1",
    "EPYC-Turin",
    "EPYC-Turin-v1",
    "EPYC-Turin-v2",
];

/// Guest features QEMU sets by default for SNP (SNPActive only), as `sev-snp-measure`.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// SEV metadata section type of the kernel-hashes page.
const SECTION_KERNEL_HASHES: u32 = 0x10;
/// `ASEV` header: signature, size, version, item count.
const SEV_METADATA_HEADER: usize = 16;
/// Each item: GPA, size, type (`u32` each).
const SEV_METADATA_ITEM: usize = 12;

/// The inputs of one launch.
#[derive(Debug, Clone)]
pub struct SnpInputs {
    pub ovmf: PathBuf,
    pub vcpus: u32,
    /// QEMU `-cpu` model, one of [`VCPU_TYPES`] (case-insensitive).
    pub vcpu_type: String,
    pub guest_features: u64,
    /// Direct boot (`-kernel`, with QEMU's `kernel-hashes=on`).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
}

/// Parses a vCPU type name, listing the known ones on failure.
pub fn vcpu_type(name: &str) -> Result<CpuType> {
    CpuType::try_from(name).map_err(|_| Error::UnknownVcpuType {
        given: name.to_string(),
        known: VCPU_TYPES.join(", "),
    })
}

/// The SEV metadata section types the firmware declares.
fn sev_metadata_sections(image: &[u8], table: &FooterTable, path: &Path) -> Result<Vec<u32>> {
    let bad = |detail: String| Error::FirmwareTable {
        path: path.to_path_buf(),
        detail: format!("SEV metadata: {detail}"),
    };
    let start = table
        .offset_from_end(image, ovmf::SEV_METADATA_GUID)
        .ok_or_else(|| Error::NoSevMetadata {
            path: path.to_path_buf(),
        })?;
    if bytes::slice(image, start, 4) != Some(b"ASEV") {
        return Err(bad(format!("no 'ASEV' signature at byte {start}")));
    }
    let size = bytes::u32_le(image, start + 4).unwrap_or(0) as usize;
    let version = bytes::u32_le(image, start + 8).unwrap_or(0);
    let count = bytes::u32_le(image, start + 12).unwrap_or(0) as usize;
    if version != 1 {
        return Err(bad(format!("version {version}, expected 1")));
    }
    let items_len = count
        .checked_mul(SEV_METADATA_ITEM)
        .and_then(|n| n.checked_add(SEV_METADATA_HEADER))
        .filter(|n| *n <= size);
    if items_len.is_none() || bytes::slice(image, start, size).is_none() {
        return Err(bad(format!(
            "{count} sections of {SEV_METADATA_ITEM} bytes do not fit in {size} bytes at byte {start}"
        )));
    }
    let mut kinds = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + SEV_METADATA_HEADER + i * SEV_METADATA_ITEM;
        let kind = bytes::u32_le(image, at + 8).unwrap_or(0);
        let len = bytes::u32_le(image, at + 4).unwrap_or(0);
        if !matches!(kind, 1..=4 | SECTION_KERNEL_HASHES) {
            return Err(bad(format!("section {i} has unknown type {kind:#x}")));
        }
        if kind == SECTION_KERNEL_HASHES && len != 4096 {
            return Err(bad(format!(
                "the kernel-hashes section is {len} bytes, not one page"
            )));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// Checks everything the `sev` crate will rely on, with errors that name the problem.
fn check_inputs(inputs: &SnpInputs) -> Result<()> {
    let image = read_file("OVMF", &inputs.ovmf)?;
    let path = inputs.ovmf.as_path();
    if image.is_empty() || !image.len().is_multiple_of(4096) || image.len() > 1 << 32 {
        return Err(Error::FirmwareTable {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes is not a whole number of pages below 4 GiB",
                image.len()
            ),
        });
    }
    let table = FooterTable::parse(&image, path)?;
    let sections = sev_metadata_sections(&image, &table, path)?;
    if table
        .find(&image, ovmf::SEV_ES_RESET_BLOCK_GUID)
        .is_none_or(|d| d.len() < 4)
    {
        return Err(Error::FirmwareTable {
            path: path.to_path_buf(),
            detail: "no SEV-ES reset block (GUID 00f771de-1a7e-4fcb-890e-68c77e2fb44e)".into(),
        });
    }
    if inputs.kernel.is_none() {
        if inputs.initrd.is_some() || inputs.append.is_some() {
            return Err(Error::Usage(
                "--initrd and --append need --kernel (they are measured only with it)".into(),
            ));
        }
        return Ok(());
    }
    if !sections.contains(&SECTION_KERNEL_HASHES) {
        return Err(Error::NoSnpKernelHashes {
            path: path.to_path_buf(),
            missing: "SNP kernel-hashes metadata section (type 0x10)",
        });
    }
    let gpa = table
        .find(&image, ovmf::SEV_HASH_TABLE_GUID)
        .and_then(|d| bytes::u32_le(d, 0))
        .filter(|gpa| *gpa != 0);
    if gpa.is_none() {
        return Err(Error::NoSnpKernelHashes {
            path: path.to_path_buf(),
            missing: "SEV hash table entry (GUID 7255371f-3a3b-4b04-927b-1da6efa8d454)",
        });
    }
    for (what, file) in [("kernel", &inputs.kernel), ("initrd", &inputs.initrd)] {
        if let Some(file) = file {
            std::fs::metadata(file).map_err(|source| Error::Read {
                what,
                path: file.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The 48-byte SEV-SNP launch digest of `inputs`.
pub fn launch_digest(inputs: &SnpInputs) -> Result<[u8; 48]> {
    if inputs.vcpus == 0 {
        return Err(Error::Usage("--vcpus must be at least 1".into()));
    }
    let vcpu_type = vcpu_type(&inputs.vcpu_type)?;
    check_inputs(inputs)?;
    let args = SnpMeasurementArgs {
        vcpus: inputs.vcpus,
        vcpu_type,
        ovmf_file: inputs.ovmf.clone(),
        guest_features: GuestFeatures(inputs.guest_features),
        kernel_file: inputs.kernel.clone(),
        initrd_file: inputs.initrd.clone(),
        append: inputs.append.as_deref(),
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::QEMU),
    };
    let digest = snp_calc_launch_digest(args).map_err(|e| Error::Snp(e.to_string()))?;
    let bytes: Vec<u8> = digest_bytes(&digest);
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| Error::Snp(format!("launch digest has {} bytes, not 48", b.len())))
}

/// The digest's bytes, read through its hex form (the type exposes no byte accessor).
fn digest_bytes(digest: &sev::measurement::snp::SnpLaunchDigest) -> Vec<u8> {
    hex::decode(digest.get_hex_ld()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovmf::tests::image_with_table;

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cocoon-measure-snp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn inputs(ovmf: PathBuf) -> SnpInputs {
        SnpInputs {
            ovmf,
            vcpus: 1,
            vcpu_type: "EPYC-v4".into(),
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel: None,
            initrd: None,
            append: None,
        }
    }

    #[test]
    fn unknown_vcpu_type_lists_the_known_ones() {
        let err = vcpu_type("EPYC-Zen9").unwrap_err().to_string();
        assert!(
            err.contains("EPYC-Zen9") && err.contains("EPYC-Milan, "),
            "{err}"
        );
        for name in VCPU_TYPES {
            vcpu_type(name).unwrap();
        }
    }

    #[test]
    fn missing_file_and_non_sev_firmware_are_named() {
        let err = launch_digest(&inputs("/nonexistent/OVMF.fd".into())).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read OVMF /nonexistent/OVMF.fd"),
            "{err}"
        );

        let plain = write("plain.fd", &image_with_table(8192, &[]));
        let err = launch_digest(&inputs(plain)).unwrap_err().to_string();
        assert!(err.contains("no SEV metadata"), "{err}");

        // SEV metadata without a kernel-hashes section, and a kernel asked for.
        let mut meta = Vec::new();
        meta.extend_from_slice(b"ASEV");
        meta.extend_from_slice(&(16u32 + 12).to_le_bytes());
        meta.extend_from_slice(&1u32.to_le_bytes());
        meta.extend_from_slice(&1u32.to_le_bytes());
        meta.extend_from_slice(&0x80_0000u32.to_le_bytes());
        meta.extend_from_slice(&4096u32.to_le_bytes());
        meta.extend_from_slice(&2u32.to_le_bytes());
        let mut image = image_with_table(
            8192,
            &[
                (ovmf::SEV_METADATA_GUID, 4096u32.to_le_bytes().to_vec()),
                (
                    ovmf::SEV_ES_RESET_BLOCK_GUID,
                    0xffff_f000u32.to_le_bytes().to_vec(),
                ),
            ],
        );
        image[4096..4096 + meta.len()].copy_from_slice(&meta);
        let fw = write("sev.fd", &image);
        let kernel = write("vmlinuz", b"MZ");
        let mut with_kernel = inputs(fw.clone());
        with_kernel.kernel = Some(kernel);
        let err = launch_digest(&with_kernel).unwrap_err().to_string();
        assert!(
            err.contains("no SNP kernel-hashes metadata section"),
            "{err}"
        );

        // Lying item count.
        image[4096 + 12..4096 + 16].copy_from_slice(&1000u32.to_le_bytes());
        let fw = write("lying.fd", &image);
        let err = launch_digest(&inputs(fw)).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }
}
