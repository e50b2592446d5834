//! SEV-SNP attestation reports as typed structs with explicit byte layouts.
//!
//! Layout: AMD SEV Secure Nested Paging Firmware ABI Specification, "ATTESTATION_REPORT
//! Structure" (all integers little-endian). The report is 0x4A0 bytes; the signature at
//! 0x2A0 covers bytes 0x000..0x2A0.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 4 | VERSION (2, 3, 5 …) |
//! | 0x004 | 4 | GUEST_SVN |
//! | 0x008 | 8 | POLICY |
//! | 0x010 | 16 | FAMILY_ID |
//! | 0x020 | 16 | IMAGE_ID |
//! | 0x030 | 4 | VMPL |
//! | 0x034 | 4 | SIGNATURE_ALGO (1 = ECDSA P-384 with SHA-384) |
//! | 0x038 | 8 | CURRENT_TCB |
//! | 0x040 | 8 | PLATFORM_INFO |
//! | 0x048 | 4 | AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 2–4) |
//! | 0x050 | 64 | REPORT_DATA |
//! | 0x090 | 48 | MEASUREMENT |
//! | 0x0C0 | 32 | HOST_DATA |
//! | 0x0E0 | 48 | ID_KEY_DIGEST |
//! | 0x110 | 48 | AUTHOR_KEY_DIGEST |
//! | 0x140 | 32 | REPORT_ID |
//! | 0x160 | 32 | REPORT_ID_MA |
//! | 0x180 | 8 | REPORTED_TCB |
//! | 0x188 | 3 | CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version ≥ 3) |
//! | 0x1A0 | 64 | CHIP_ID |
//! | 0x1E0 | 8 | COMMITTED_TCB |
//! | 0x1E8 | 4 | CURRENT build, minor, major |
//! | 0x1EC | 4 | COMMITTED build, minor, major |
//! | 0x1F0 | 8 | LAUNCH_TCB |
//! | 0x1F8 | 16 | LAUNCH_MIT_VECTOR, CURRENT_MIT_VECTOR (version ≥ 5) |
//! | 0x2A0 | 512 | SIGNATURE: R (72 bytes LE), S (72 bytes LE), reserved |

use crate::{Error, Result};

/// Size of an attestation report.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes covered by the signature.
pub const SIGNED_LEN: usize = 0x2A0;
/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// CPUID family of Turin (and later) processors, whose TCB_VERSION layout differs.
const FAMILY_TURIN: u8 = 0x1A;

/// PLATFORM_INFO.SMT_EN (bit 0): SMT is enabled on the platform (all report versions).
pub const PLATFORM_SMT_EN: u64 = 1 << 0;
/// PLATFORM_INFO.TSME_EN (bit 1): transparent SME is enabled (all report versions).
pub const PLATFORM_TSME_EN: u64 = 1 << 1;
/// PLATFORM_INFO.ALIAS_CHECK_COMPLETE (bit 5): the firmware checked the memory
/// configuration for aliased addresses (BadRAM, CVE-2024-21944) since the last reset and
/// found none. Firmware without the mitigation leaves it zero; version 2 reports predate it.
pub const PLATFORM_ALIAS_CHECK_COMPLETE: u64 = 1 << 5;

/// Guest policy bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    pub fn abi_minor(self) -> u8 {
        self.0 as u8
    }
    pub fn abi_major(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// SMT allowed (bit 16).
    pub fn smt_allowed(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Association with a migration agent allowed (bit 18).
    pub fn migrate_ma_allowed(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Debugging allowed (bit 19): the hypervisor can read and write guest memory.
    pub fn debug_allowed(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Single socket only (bit 20).
    pub fn single_socket(self) -> bool {
        self.0 & (1 << 20) != 0
    }
}

/// A TCB_VERSION: security patch levels of each firmware component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TcbVersion {
    /// FMC SPL (Turin and later only).
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes the 8 bytes; `turin` selects the Turin layout (FMC, BL, TEE, SNP, …, UCODE).
    pub fn decode(raw: [u8; 8], turin: bool) -> Self {
        if turin {
            Self {
                fmc: Some(raw[0]),
                bootloader: raw[1],
                tee: raw[2],
                snp: raw[3],
                microcode: raw[7],
            }
        } else {
            Self {
                fmc: None,
                bootloader: raw[0],
                tee: raw[1],
                snp: raw[6],
                microcode: raw[7],
            }
        }
    }

    /// The 8 bytes, in the Turin layout when `turin`, else Milan/Genoa's ([`Self::decode`]).
    pub fn encode(&self, turin: bool) -> [u8; 8] {
        if turin {
            [
                self.fmc.unwrap_or(0),
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ]
        } else {
            [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ]
        }
    }

    /// True when every component is at least `min`'s.
    pub fn at_least(&self, min: &TcbVersion) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
            && self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
    }
}

impl std::fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc} ")?;
        }
        write!(
            f,
            "bootloader={} tee={} snp={} microcode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// A parsed SEV-SNP attestation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: GuestPolicy,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: TcbVersion,
    pub platform_info: u64,
    /// AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY (0 = VCEK, 1 = VLEK).
    pub key_info: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: TcbVersion,
    /// CPUID family, model, stepping (version ≥ 3).
    pub cpuid: Option<(u8, u8, u8)>,
    pub chip_id: [u8; 64],
    pub committed_tcb: TcbVersion,
    pub launch_tcb: TcbVersion,
    /// Big-endian r and s of the ECDSA P-384 signature.
    pub signature_r: [u8; 48],
    pub signature_s: [u8; 48],
    /// The bytes the signature covers.
    pub signed_bytes: Vec<u8>,
}

fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array(bytes, offset))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array(bytes, offset))
}

/// A little-endian 72-byte scalar as 48 big-endian bytes (the upper 24 must be zero).
fn scalar_be(le: &[u8]) -> Result<[u8; 48]> {
    if le[48..72].iter().any(|b| *b != 0) {
        return Err(Error::Malformed {
            what: "SNP report signature",
            detail: "scalar wider than 384 bits".into(),
        });
    }
    let mut be = [0u8; 48];
    for (i, b) in le[..48].iter().enumerate() {
        be[47 - i] = *b;
    }
    Ok(be)
}

impl SnpReport {
    /// Parses a report from untrusted bytes (exactly [`REPORT_LEN`] bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != REPORT_LEN {
            return Err(Error::Unsupported {
                what: "SNP report length (expected 1184 bytes)",
                value: bytes.len().to_string(),
            });
        }
        let version = u32_at(bytes, 0x000);
        if version < 2 {
            return Err(Error::Unsupported {
                what: "SNP report version (expected 2 or later)",
                value: version.to_string(),
            });
        }
        let cpuid = (version >= 3).then(|| (bytes[0x188], bytes[0x189], bytes[0x18A]));
        let turin = cpuid.is_some_and(|(family, _, _)| family >= FAMILY_TURIN);
        let tcb = |offset| TcbVersion::decode(array(bytes, offset), turin);
        Ok(Self {
            version,
            guest_svn: u32_at(bytes, 0x004),
            policy: GuestPolicy(u64_at(bytes, 0x008)),
            family_id: array(bytes, 0x010),
            image_id: array(bytes, 0x020),
            vmpl: u32_at(bytes, 0x030),
            signature_algo: u32_at(bytes, 0x034),
            current_tcb: tcb(0x038),
            platform_info: u64_at(bytes, 0x040),
            key_info: u32_at(bytes, 0x048),
            report_data: array(bytes, 0x050),
            measurement: array(bytes, 0x090),
            host_data: array(bytes, 0x0C0),
            id_key_digest: array(bytes, 0x0E0),
            author_key_digest: array(bytes, 0x110),
            report_id: array(bytes, 0x140),
            report_id_ma: array(bytes, 0x160),
            reported_tcb: tcb(0x180),
            cpuid,
            chip_id: array(bytes, 0x1A0),
            committed_tcb: tcb(0x1E0),
            launch_tcb: tcb(0x1F0),
            signature_r: scalar_be(&bytes[0x2A0..0x2A0 + 72])?,
            signature_s: scalar_be(&bytes[0x2A0 + 72..0x2A0 + 144])?,
            signed_bytes: bytes[..SIGNED_LEN].to_vec(),
        })
    }

    /// True when the report was signed with a VLEK rather than a VCEK.
    pub fn signed_by_vlek(&self) -> bool {
        (self.key_info >> 2) & 0b111 == 1
    }

    /// True when the guest asked the firmware to zero CHIP_ID in the report.
    pub fn chip_id_masked(&self) -> bool {
        self.key_info & 0b10 != 0
    }

    /// The processor line, from CPUID (version ≥ 3); `None` for version 2 reports.
    pub fn product(&self) -> Option<&'static str> {
        match self.cpuid? {
            (0x19, model, _) if model < 0x10 => Some("Milan"),
            (0x19, model, _) if (0x10..0x20).contains(&model) || (0xA0..0xB0).contains(&model) => {
                Some("Genoa")
            }
            (0x1A, model, _) if model < 0x20 || (0x90..0xB0).contains(&model) => Some("Turin"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILAN: &[u8] = include_bytes!("../../tests/fixtures/snp/gosev_milan_attestation.bin");

    #[test]
    fn milan_fields_match_spec_offsets_and_known_facts() {
        let r = SnpReport::parse(MILAN).unwrap();
        // Facts recorded in shared/testvectors/README.md, read with go-sev-guest.
        assert_eq!(r.version, 2);
        assert_eq!(r.policy.0, 0x00000000000b0000);
        assert!(
            r.policy.debug_allowed(),
            "this sample report has POLICY.DEBUG set"
        );
        assert!(r.policy.smt_allowed());
        assert_eq!(&r.measurement[..], &MILAN[0x90..0xC0]);
        assert_eq!(&r.report_data[..], &MILAN[0x50..0x90]);
        assert_eq!(&r.chip_id[..], &MILAN[0x1A0..0x1E0]);
        assert_eq!(r.signature_algo, SIG_ALGO_ECDSA_P384_SHA384);
        // Recorded with the `sev` crate 8.0.0 on the same bytes.
        assert_eq!(
            hex::encode(r.measurement),
            "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
        );
        assert_eq!(
            r.reported_tcb,
            TcbVersion {
                fmc: None,
                bootloader: 2,
                tee: 0,
                snp: 5,
                microcode: 68
            }
        );
        assert_eq!(r.cpuid, None);
        assert!(!r.signed_by_vlek());
    }

    /// Every field compared with the `sev` crate's independent parser of the same bytes.
    #[test]
    fn every_field_agrees_with_the_sev_crate() {
        use sev::parser::ByteParser;
        let ours = SnpReport::parse(MILAN).unwrap();
        let theirs = sev::firmware::guest::AttestationReport::from_bytes(MILAN).unwrap();
        let tcb = |t: &sev::firmware::host::TcbVersion| TcbVersion {
            fmc: t.fmc,
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        };
        assert_eq!(ours.version, theirs.version);
        assert_eq!(ours.guest_svn, theirs.guest_svn);
        assert_eq!(ours.policy.0, u64::from(theirs.policy));
        assert_eq!(ours.policy.debug_allowed(), theirs.policy.debug_allowed());
        assert_eq!(ours.policy.smt_allowed(), theirs.policy.smt_allowed());
        assert_eq!(ours.family_id, theirs.family_id);
        assert_eq!(ours.image_id, theirs.image_id);
        assert_eq!(ours.vmpl, theirs.vmpl);
        assert_eq!(ours.signature_algo, theirs.sig_algo);
        assert_eq!(ours.current_tcb, tcb(&theirs.current_tcb));
        assert_eq!(ours.platform_info, u64::from(theirs.plat_info));
        assert_eq!(ours.key_info, u32::from(theirs.key_info));
        assert_eq!(ours.report_data, theirs.report_data);
        assert_eq!(ours.measurement, theirs.measurement);
        assert_eq!(ours.host_data, theirs.host_data);
        assert_eq!(ours.id_key_digest, theirs.id_key_digest);
        assert_eq!(ours.author_key_digest, theirs.author_key_digest);
        assert_eq!(ours.report_id, theirs.report_id);
        assert_eq!(ours.report_id_ma, theirs.report_id_ma);
        assert_eq!(ours.reported_tcb, tcb(&theirs.reported_tcb));
        assert_eq!(ours.chip_id, theirs.chip_id);
        assert_eq!(ours.committed_tcb, tcb(&theirs.committed_tcb));
        assert_eq!(ours.launch_tcb, tcb(&theirs.launch_tcb));
    }

    #[test]
    fn wrong_length_and_version_are_errors() {
        assert!(SnpReport::parse(&MILAN[..REPORT_LEN - 1]).is_err());
        let mut long = MILAN.to_vec();
        long.push(0);
        assert!(SnpReport::parse(&long).is_err());
        let mut v1 = MILAN.to_vec();
        v1[0] = 1;
        let err = SnpReport::parse(&v1).unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn turin_tcb_layout_differs() {
        let raw = [1, 2, 3, 4, 0, 0, 0, 9];
        assert_eq!(
            TcbVersion::decode(raw, true),
            TcbVersion {
                fmc: Some(1),
                bootloader: 2,
                tee: 3,
                snp: 4,
                microcode: 9
            }
        );
        assert_eq!(
            TcbVersion::decode(raw, false),
            TcbVersion {
                fmc: None,
                bootloader: 1,
                tee: 2,
                snp: 0,
                microcode: 9
            }
        );
    }
}
