//! The TDVF descriptor: the firmware's list of memory the host must set up.
//!
//! Found through the footer-table entry `e47a6535-…` (a `u32` offset from the image
//! end), it is `"TDVF" ‖ length ‖ version 1 ‖ section count` followed by 32-byte
//! sections. Which sections are page-added and which are also extended into MRTD is
//! decided by their attributes, so MRTD follows from this table and the image bytes.

use std::path::Path;

use crate::bytes;
use crate::error::{Error, Result};
use crate::ovmf::{self, FooterTable};

/// Attribute: the section's content is extended into MRTD (TDH.MR.EXTEND).
pub const ATTR_MR_EXTEND: u32 = 0x1;
/// Attribute: the section is added after launch (TDH.MEM.PAGE.AUG), so it is not in MRTD.
pub const ATTR_PAGE_AUG: u32 = 0x2;

const DESCRIPTOR_HEADER: usize = 16;
const SECTION_LEN: usize = 32;
const PAGE: u64 = 4096;

/// What a section holds (TDVF specification, section type field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionType {
    Bfv,
    Cfv,
    TdHob,
    TempMem,
    PermMem,
    Payload,
    PayloadParam,
    TdInfo,
}

impl SectionType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Bfv,
            1 => Self::Cfv,
            2 => Self::TdHob,
            3 => Self::TempMem,
            4 => Self::PermMem,
            5 => Self::Payload,
            6 => Self::PayloadParam,
            7 => Self::TdInfo,
            _ => return None,
        })
    }
}

/// One TDVF section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Offset of the section's bytes in the firmware image.
    pub data_offset: u32,
    pub raw_data_size: u32,
    /// Guest-physical address, page aligned.
    pub memory_address: u64,
    /// Size in guest memory, whole pages.
    pub memory_data_size: u64,
    pub kind: SectionType,
    pub attributes: u32,
}

impl Section {
    /// Whether the host page-adds it before launch (everything not PAGE.AUG).
    pub fn page_added(&self) -> bool {
        self.attributes & ATTR_PAGE_AUG == 0
    }

    /// Whether its content is extended into MRTD.
    pub fn extended(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }

    /// Number of 4 KiB pages.
    pub fn pages(&self) -> u64 {
        self.memory_data_size / PAGE
    }
}

/// The parsed TDVF descriptor.
#[derive(Debug, Clone)]
pub struct Tdvf {
    pub sections: Vec<Section>,
}

impl Tdvf {
    /// Finds and checks the descriptor of `image` (from `path`, named in errors).
    pub fn parse(image: &[u8], path: &Path) -> Result<Self> {
        let bad = |detail: String| Error::Tdvf {
            path: path.to_path_buf(),
            detail,
        };
        let table = FooterTable::parse(image, path)?;
        let start = table
            .offset_from_end(image, ovmf::TDX_METADATA_GUID)
            .ok_or_else(|| Error::NoTdvfMetadata {
                path: path.to_path_buf(),
            })?;
        if bytes::slice(image, start, 4) != Some(b"TDVF") {
            return Err(bad(format!("no 'TDVF' signature at byte {start}")));
        }
        let length = bytes::u32_le(image, start + 4).unwrap_or(0) as usize;
        let version = bytes::u32_le(image, start + 8).unwrap_or(0);
        let count = bytes::u32_le(image, start + 12).unwrap_or(0) as usize;
        if version != 1 {
            return Err(bad(format!("descriptor version {version}, expected 1")));
        }
        let needed = count
            .checked_mul(SECTION_LEN)
            .and_then(|n| n.checked_add(DESCRIPTOR_HEADER));
        if needed.is_none_or(|n| n > length) || bytes::slice(image, start, length).is_none() {
            return Err(bad(format!(
                "{count} sections do not fit in the {length}-byte descriptor at byte {start}"
            )));
        }
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let at = start + DESCRIPTOR_HEADER + i * SECTION_LEN;
            let section =
                Self::section(image, at).ok_or_else(|| bad(format!("section {i} is truncated")))?;
            let section =
                section.map_err(|kind| bad(format!("section {i} has unknown type {kind}")))?;
            Self::check(&section, image.len()).map_err(|d| bad(format!("section {i}: {d}")))?;
            sections.push(section);
        }
        Ok(Self { sections })
    }

    fn section(image: &[u8], at: usize) -> Option<Result<Section, u32>> {
        let kind = bytes::u32_le(image, at + 24)?;
        let Some(kind_enum) = SectionType::from_u32(kind) else {
            return Some(Err(kind));
        };
        Some(Ok(Section {
            data_offset: bytes::u32_le(image, at)?,
            raw_data_size: bytes::u32_le(image, at + 4)?,
            memory_address: bytes::u64_le(image, at + 8)?,
            memory_data_size: bytes::u64_le(image, at + 16)?,
            kind: kind_enum,
            attributes: bytes::u32_le(image, at + 28)?,
        }))
    }

    fn check(s: &Section, image_len: usize) -> Result<(), String> {
        if !s.memory_address.is_multiple_of(PAGE) || !s.memory_data_size.is_multiple_of(PAGE) {
            return Err(format!(
                "address {:#x} / size {:#x} not page aligned",
                s.memory_address, s.memory_data_size
            ));
        }
        if u64::from(s.raw_data_size) > s.memory_data_size {
            return Err(format!(
                "{} bytes of data do not fit in {:#x} bytes of memory",
                s.raw_data_size, s.memory_data_size
            ));
        }
        if s.memory_address.checked_add(s.memory_data_size).is_none() {
            return Err("memory range overflows".into());
        }
        let data_end = u64::from(s.data_offset) + u64::from(s.raw_data_size);
        if data_end > image_len as u64 {
            return Err(format!(
                "data ends at byte {data_end}, past the {image_len}-byte image"
            ));
        }
        if s.attributes & !(ATTR_MR_EXTEND | ATTR_PAGE_AUG) != 0 {
            return Err(format!("unknown attributes {:#x}", s.attributes));
        }
        if s.extended() && u64::from(s.raw_data_size) != s.memory_data_size {
            return Err(format!(
                "extended into MRTD but its {} data bytes do not fill its {:#x} bytes of memory",
                s.raw_data_size, s.memory_data_size
            ));
        }
        if s.extended() && !s.page_added() {
            return Err("both MR.EXTEND and PAGE.AUG".into());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ovmf::tests::image_with_table;

    /// A 64 KiB image whose descriptor (at byte 0x1000) lists `sections`.
    pub(crate) fn image_with_sections(sections: &[[u32; 8]]) -> Vec<u8> {
        let mut image = image_with_table(
            0x10000,
            &[(
                ovmf::TDX_METADATA_GUID,
                (0x10000u32 - 0x1000).to_le_bytes().to_vec(),
            )],
        );
        let mut desc = Vec::new();
        desc.extend_from_slice(b"TDVF");
        desc.extend_from_slice(&(16 + 32 * sections.len() as u32).to_le_bytes());
        desc.extend_from_slice(&1u32.to_le_bytes());
        desc.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for s in sections {
            for w in s {
                desc.extend_from_slice(&w.to_le_bytes());
            }
        }
        image[0x1000..0x1000 + desc.len()].copy_from_slice(&desc);
        image
    }

    /// `[data_offset, raw, addr_lo, addr_hi, size_lo, size_hi, type, attributes]`.
    pub(crate) const BFV: [u32; 8] = [0x8000, 0x2000, 0xffff_8000, 0, 0x2000, 0, 0, 1];
    pub(crate) const HOB: [u32; 8] = [0, 0, 0x80_9000, 0, 0x2000, 0, 2, 0];
    pub(crate) const PERM: [u32; 8] = [0, 0, 0x100_0000, 0, 0x1000, 0, 4, 2];

    #[test]
    fn descriptor_parses_and_bad_sections_are_named() {
        let path = Path::new("tdvf.fd");
        let tdvf = Tdvf::parse(&image_with_sections(&[BFV, HOB, PERM]), path).unwrap();
        assert_eq!(tdvf.sections.len(), 3);
        assert_eq!(tdvf.sections[0].kind, SectionType::Bfv);
        assert!(tdvf.sections[0].extended() && tdvf.sections[0].page_added());
        assert!(!tdvf.sections[1].extended() && tdvf.sections[1].page_added());
        assert!(!tdvf.sections[2].page_added());

        let cases: &[([u32; 8], &str)] = &[
            ([0, 0, 0x123, 0, 0x1000, 0, 2, 0], "not page aligned"),
            ([0, 0x3000, 0x1000, 0, 0x1000, 0, 0, 0], "do not fit"),
            ([0xfff0, 0x1000, 0x1000, 0, 0x1000, 0, 0, 1], "past the"),
            ([0, 0, 0x1000, 0, 0x1000, 0, 9, 0], "unknown type 9"),
            ([0, 0, 0x1000, 0, 0x1000, 0, 2, 8], "unknown attributes"),
            ([0, 0x800, 0x1000, 0, 0x1000, 0, 0, 1], "do not fill"),
        ];
        for (section, want) in cases {
            let err = Tdvf::parse(&image_with_sections(&[*section]), path)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        let mut lying = image_with_sections(&[BFV]);
        lying[0x100c..0x1010].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = Tdvf::parse(&lying, path).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        let err = Tdvf::parse(&image_with_table(0x2000, &[]), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no TDVF metadata"), "{err}");
    }
}
