//! MRTD: the SHA-384 the TDX module accumulates while the host builds the TD.
//!
//! Each TDH.MEM.PAGE.ADD feeds a 128-byte record `"MEM.PAGE.ADD" ‖ GPA` into the hash,
//! and each TDH.MR.EXTEND a 128-byte record `"MR.EXTEND" ‖ GPA` followed by the 256
//! bytes it measures; TDH.MR.FINALIZE closes the hash. The records are typed here with
//! their exact byte layout so the layout is tested, not implied by index arithmetic.

use sha2::{Digest, Sha384};

use crate::error::{Error, Result};
use crate::tdx::tdvf::Tdvf;

/// Bytes measured by one TDH.MR.EXTEND.
pub const EXTEND_CHUNK: usize = 256;
const PAGE: usize = 4096;
const RECORD: usize = 128;
const TAG: usize = 16;

/// A record the TDX module hashes into MRTD: a 16-byte ASCII tag (NUL padded), the
/// GPA as little-endian `u64` at bytes 16..24, and zeros to 128 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrtdRecord {
    /// TDH.MEM.PAGE.ADD of the page at `gpa`.
    MemPageAdd { gpa: u64 },
    /// TDH.MR.EXTEND of the 256 bytes at `gpa` (followed in the hash by those bytes).
    MrExtend { gpa: u64 },
}

impl MrtdRecord {
    const PAGE_ADD_TAG: &'static [u8] = b"MEM.PAGE.ADD";
    const EXTEND_TAG: &'static [u8] = b"MR.EXTEND";

    fn tag(&self) -> &'static [u8] {
        match self {
            Self::MemPageAdd { .. } => Self::PAGE_ADD_TAG,
            Self::MrExtend { .. } => Self::EXTEND_TAG,
        }
    }

    fn gpa(&self) -> u64 {
        match self {
            Self::MemPageAdd { gpa } | Self::MrExtend { gpa } => *gpa,
        }
    }

    /// The 128 bytes the TDX module hashes.
    pub fn to_bytes(&self) -> [u8; RECORD] {
        let mut out = [0u8; RECORD];
        let tag = self.tag();
        out[..tag.len()].copy_from_slice(tag);
        out[TAG..TAG + 8].copy_from_slice(&self.gpa().to_le_bytes());
        out
    }

    /// Parses a record, refusing unknown tags and non-zero padding.
    pub fn from_bytes(bytes: &[u8; RECORD]) -> Option<Self> {
        let (tag, rest) = bytes.split_at(TAG);
        let (gpa, reserved) = rest.split_at(8);
        if reserved.iter().any(|b| *b != 0) {
            return None;
        }
        let gpa = u64::from_le_bytes(gpa.try_into().ok()?);
        let name_len = tag.iter().position(|b| *b == 0).unwrap_or(TAG);
        let (name, pad) = tag.split_at(name_len);
        if pad.iter().any(|b| *b != 0) {
            return None;
        }
        match name {
            n if n == Self::PAGE_ADD_TAG => Some(Self::MemPageAdd { gpa }),
            n if n == Self::EXTEND_TAG => Some(Self::MrExtend { gpa }),
            _ => None,
        }
    }
}

/// In which order the host issues PAGE.ADD and MR.EXTEND for a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PageAddOrder {
    /// Per page: PAGE.ADD, then its 16 MR.EXTENDs (upstream KVM, Linux 6.16+, with
    /// QEMU 10.1+: `KVM_TDX_INIT_MEM_REGION`).
    #[default]
    SinglePass,
    /// Per section: every PAGE.ADD first, then every MR.EXTEND (the older out-of-tree
    /// TDX KVM/QEMU stacks).
    TwoPass,
}

/// MRTD of a TD built from `image` with the descriptor `tdvf`.
pub fn compute(tdvf: &Tdvf, image: &[u8], order: PageAddOrder) -> Result<[u8; 48]> {
    let mut h = Sha384::new();
    for (i, s) in tdvf.sections.iter().enumerate() {
        let extend_page = |h: &mut Sha384, page: u64| -> Result<()> {
            if !s.extended() {
                return Ok(());
            }
            let page_gpa = s.memory_address + page * PAGE as u64;
            let offset = s.data_offset as usize + page as usize * PAGE;
            for chunk in 0..PAGE / EXTEND_CHUNK {
                let at = offset + chunk * EXTEND_CHUNK;
                let data = crate::bytes::slice(image, at, EXTEND_CHUNK).ok_or_else(|| {
                    Error::Usage(format!("TDVF section {i}: byte {at} is past the image"))
                })?;
                let gpa = page_gpa + (chunk * EXTEND_CHUNK) as u64;
                h.update(MrtdRecord::MrExtend { gpa }.to_bytes());
                h.update(data);
            }
            Ok(())
        };
        let add_page = |h: &mut Sha384, page: u64| {
            if s.page_added() {
                let gpa = s.memory_address + page * PAGE as u64;
                h.update(MrtdRecord::MemPageAdd { gpa }.to_bytes());
            }
        };
        match order {
            PageAddOrder::SinglePass => {
                for page in 0..s.pages() {
                    add_page(&mut h, page);
                    extend_page(&mut h, page)?;
                }
            }
            PageAddOrder::TwoPass => {
                for page in 0..s.pages() {
                    add_page(&mut h, page);
                }
                for page in 0..s.pages() {
                    extend_page(&mut h, page)?;
                }
            }
        }
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::tdvf::tests::{image_with_sections, BFV, HOB, PERM};

    #[test]
    fn record_layouts_are_exact_and_round_trip() {
        let add = MrtdRecord::MemPageAdd {
            gpa: 0x0102_0304_0506_0708,
        };
        let bytes = add.to_bytes();
        assert_eq!(&bytes[..16], b"MEM.PAGE.ADD\0\0\0\0");
        assert_eq!(&bytes[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert!(bytes[24..].iter().all(|b| *b == 0));
        assert_eq!(MrtdRecord::from_bytes(&bytes), Some(add));

        let ext = MrtdRecord::MrExtend { gpa: 0xffff_ff00 };
        let bytes = ext.to_bytes();
        assert_eq!(&bytes[..16], b"MR.EXTEND\0\0\0\0\0\0\0");
        assert_eq!(&bytes[16..24], &0xffff_ff00u64.to_le_bytes());
        assert_eq!(MrtdRecord::from_bytes(&bytes), Some(ext));

        let mut bad = bytes;
        bad[100] = 1;
        assert_eq!(
            MrtdRecord::from_bytes(&bad),
            None,
            "non-zero reserved bytes"
        );
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(MrtdRecord::from_bytes(&bad), None, "unknown tag");
        let mut bad = bytes;
        bad[12] = b'Z';
        assert_eq!(
            MrtdRecord::from_bytes(&bad),
            None,
            "garbage after the tag's NUL"
        );
    }

    /// The hash is exactly the concatenation the TDX module sees, written out by hand.
    #[test]
    fn mrtd_is_the_hash_of_the_records_in_order() {
        let image = image_with_sections(&[BFV, HOB, PERM]);
        let path = std::path::Path::new("t.fd");
        let tdvf = Tdvf::parse(&image, path).unwrap();

        let bfv = |page: u64| -> Vec<u8> {
            let mut out = Vec::new();
            for c in 0..16u64 {
                let gpa = 0xffff_8000 + page * 4096 + c * 256;
                let mut rec = vec![0u8; 128];
                rec[..9].copy_from_slice(b"MR.EXTEND");
                rec[16..24].copy_from_slice(&gpa.to_le_bytes());
                out.extend(rec);
                let at = 0x8000 + (page * 4096 + c * 256) as usize;
                out.extend_from_slice(&image[at..at + 256]);
            }
            out
        };
        let add = |gpa: u64| -> Vec<u8> {
            let mut rec = vec![0u8; 128];
            rec[..12].copy_from_slice(b"MEM.PAGE.ADD");
            rec[16..24].copy_from_slice(&gpa.to_le_bytes());
            rec
        };
        let single: Vec<u8> = [
            add(0xffff_8000),
            bfv(0),
            add(0xffff_9000),
            bfv(1),
            add(0x80_9000),
            add(0x80_a000),
        ]
        .concat();
        let two: Vec<u8> = [
            add(0xffff_8000),
            add(0xffff_9000),
            bfv(0),
            bfv(1),
            add(0x80_9000),
            add(0x80_a000),
        ]
        .concat();
        let want_single: [u8; 48] = Sha384::digest(&single).into();
        let want_two: [u8; 48] = Sha384::digest(&two).into();
        assert_eq!(
            compute(&tdvf, &image, PageAddOrder::SinglePass).unwrap(),
            want_single
        );
        assert_eq!(
            compute(&tdvf, &image, PageAddOrder::TwoPass).unwrap(),
            want_two
        );
        assert_ne!(want_single, want_two);
    }
}
