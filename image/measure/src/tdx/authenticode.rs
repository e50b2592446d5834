//! The PE/COFF Authenticode digest: what UEFI firmware extends for an image it loads.
//!
//! TDVF measures the kernel it starts (EV_EFI_BOOT_SERVICES_APPLICATION, RTMR1) with
//! the Authenticode hash, not a hash of the file: the header without its CheckSum and
//! certificate-table entry, the sections in file order, then any trailing bytes that
//! are not the certificate table. This follows edk2's `MeasurePeImageAndExtend`
//! (including its handling of images with fewer than five data directories), so a
//! signed and an unsigned copy of the same kernel measure the same.

use sha2::{Digest, Sha384};

use crate::bytes;
use crate::error::{Error, Result};

const PE32: u16 = 0x10b;
const PE32_PLUS: u16 = 0x20b;
/// Index of the certificate table in the data directories.
const SECURITY_DIR: u32 = 4;
const SECTION_HEADER: usize = 40;

fn pe(detail: impl Into<String>) -> Error {
    Error::Pe(detail.into())
}

/// Where the hashed ranges of an image lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeLayout {
    /// Offset of the optional header's CheckSum field (4 bytes, skipped).
    pub checksum: usize,
    /// Offset of the certificate-table directory entry (8 bytes, skipped), if present.
    pub cert_dir: Option<usize>,
    /// Size of the certificate table (excluded from the trailing bytes).
    pub cert_size: usize,
    pub size_of_headers: usize,
    /// `(PointerToRawData, SizeOfRawData)` of every section with data, in file order.
    pub sections: Vec<(usize, usize)>,
}

impl PeLayout {
    /// Reads the layout of `image`, checking that every range lies inside it.
    pub fn parse(image: &[u8]) -> Result<Self> {
        let short = |what: &str| pe(format!("truncated before the {what}"));
        let pe_offset = if bytes::slice(image, 0, 2) == Some(b"MZ") {
            bytes::u32_le(image, 0x3c).ok_or_else(|| short("DOS header"))? as usize
        } else {
            0
        };
        if bytes::slice(image, pe_offset, 4) != Some(b"PE\0\0") {
            return Err(pe(format!("no 'PE\\0\\0' signature at byte {pe_offset}")));
        }
        let coff = pe_offset + 4;
        let sections = bytes::u16_le(image, coff + 2).ok_or_else(|| short("COFF header"))?;
        let opt_size = bytes::u16_le(image, coff + 16).ok_or_else(|| short("COFF header"))?;
        let opt = coff + 20;
        let magic = bytes::u16_le(image, opt).ok_or_else(|| short("optional header"))?;
        let (rva_count_at, dirs_at) = match magic {
            PE32 => (opt + 92, opt + 96),
            PE32_PLUS => (opt + 108, opt + 112),
            other => {
                return Err(pe(format!(
                    "optional header magic {other:#x} is neither PE32 nor PE32+"
                )))
            }
        };
        let checksum = opt + 64;
        let size_of_headers =
            bytes::u32_le(image, opt + 60).ok_or_else(|| short("SizeOfHeaders"))? as usize;
        let rva_count =
            bytes::u32_le(image, rva_count_at).ok_or_else(|| short("NumberOfRvaAndSizes"))?;
        let (cert_dir, cert_size) = if rva_count > SECURITY_DIR {
            let at = dirs_at + 8 * SECURITY_DIR as usize;
            let size =
                bytes::u32_le(image, at + 4).ok_or_else(|| short("certificate directory"))?;
            (Some(at), size as usize)
        } else {
            (None, 0)
        };
        let header_end = cert_dir.map_or(checksum + 4, |at| at + 8);
        if size_of_headers < header_end || size_of_headers > image.len() {
            return Err(pe(format!(
                "SizeOfHeaders {size_of_headers} does not cover the headers (up to byte {header_end}) \
                 or exceeds the {}-byte file",
                image.len()
            )));
        }
        let table = opt + usize::from(opt_size);
        let mut list = Vec::new();
        for i in 0..usize::from(sections) {
            let at = table + i * SECTION_HEADER;
            let raw_size =
                bytes::u32_le(image, at + 16).ok_or_else(|| short("section table"))? as usize;
            let raw_ptr =
                bytes::u32_le(image, at + 20).ok_or_else(|| short("section table"))? as usize;
            if raw_size == 0 {
                continue;
            }
            if bytes::slice(image, raw_ptr, raw_size).is_none() {
                return Err(pe(format!(
                    "section {i} ({raw_size} bytes at {raw_ptr}) lies past the {}-byte file",
                    image.len()
                )));
            }
            list.push((raw_ptr, raw_size));
        }
        // edk2 sorts with a stable insertion sort on PointerToRawData.
        list.sort_by_key(|(ptr, _)| *ptr);
        Ok(Self {
            checksum,
            cert_dir,
            cert_size,
            size_of_headers,
            sections: list,
        })
    }
}

/// The Authenticode SHA-384 of a PE/COFF image, as edk2 measures it.
pub fn sha384(image: &[u8]) -> Result<[u8; 48]> {
    let layout = PeLayout::parse(image)?;
    let mut h = Sha384::new();
    let range = |from: usize, to: usize| {
        image
            .get(from..to)
            .ok_or_else(|| pe(format!("bytes {from}..{to} out of range")))
    };
    h.update(range(0, layout.checksum)?);
    match layout.cert_dir {
        Some(dir) => {
            h.update(range(layout.checksum + 4, dir)?);
            h.update(range(dir + 8, layout.size_of_headers)?);
        }
        None => h.update(range(layout.checksum + 4, layout.size_of_headers)?),
    }
    let mut hashed = layout.size_of_headers;
    for (ptr, size) in &layout.sections {
        h.update(range(*ptr, ptr + size)?);
        hashed = hashed.saturating_add(*size);
    }
    let signed_end = hashed.saturating_add(layout.cert_size);
    if image.len() > signed_end {
        h.update(range(hashed, image.len() - layout.cert_size)?);
    } else if image.len() > hashed && image.len() < signed_end {
        return Err(pe(format!(
            "the {}-byte certificate table does not fit after the {hashed} hashed bytes of the {}-byte file",
            layout.cert_size,
            image.len()
        )));
    }
    Ok(h.finalize().into())
}

/// Builds small PE images for tests (also used by the integration tests' fixture).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PE32+ image: DOS stub, 3 sections listed out of file order (one empty), trailing
    /// data, and a certificate table of `cert` bytes at the end.
    pub(crate) fn sample_pe(cert: usize) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0..2].copy_from_slice(b"MZ");
        img[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        img[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        img[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        img[coff + 2..coff + 4].copy_from_slice(&3u16.to_le_bytes());
        img[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        img[opt..opt + 2].copy_from_slice(&PE32_PLUS.to_le_bytes());
        img[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        img[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        img[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let table = opt + 240;
        for (i, (ptr, size)) in [(0x300u32, 0x100u32), (0x200, 0x100), (0, 0)]
            .iter()
            .enumerate()
        {
            let at = table + i * 40;
            img[at..at + 8]
                .copy_from_slice(format!(".s{i}\0\0\0\0\0").as_bytes().get(..8).unwrap());
            img[at + 16..at + 20].copy_from_slice(&size.to_le_bytes());
            img[at + 20..at + 24].copy_from_slice(&ptr.to_le_bytes());
        }
        for (i, b) in img.iter_mut().enumerate().skip(0x200) {
            *b = (i * 7 % 251) as u8;
        }
        img.extend_from_slice(b"trailing data after the last section");
        if cert > 0 {
            let cert_at = img.len() as u32;
            let dir = opt + 112 + 8 * 4;
            img[dir..dir + 4].copy_from_slice(&cert_at.to_le_bytes());
            img[dir + 4..dir + 8].copy_from_slice(&(cert as u32).to_le_bytes());
            img.extend(std::iter::repeat_n(0xc5, cert));
        }
        img
    }

    #[test]
    fn hash_skips_checksum_and_certificates_and_sorts_sections() {
        let plain = sample_pe(0);
        let signed = sample_pe(64);
        assert_eq!(
            sha384(&plain).unwrap(),
            sha384(&signed).unwrap(),
            "the signature is not measured"
        );

        // Written out by hand from the PE/COFF specification.
        let opt = 0x84 + 20;
        let mut want = Sha384::new();
        want.update(&plain[..opt + 64]);
        want.update(&plain[opt + 68..opt + 112 + 32]);
        want.update(&plain[opt + 112 + 40..0x200]);
        want.update(&plain[0x200..0x300]);
        want.update(&plain[0x300..0x400]);
        want.update(&plain[0x400..]);
        let want: [u8; 48] = want.finalize().into();
        assert_eq!(sha384(&plain).unwrap(), want);

        let mut other_checksum = plain.clone();
        other_checksum[opt + 64] ^= 0xff;
        assert_eq!(
            sha384(&other_checksum).unwrap(),
            want,
            "CheckSum is not measured"
        );
        let mut other_code = plain.clone();
        other_code[0x250] ^= 0xff;
        assert_ne!(sha384(&other_code).unwrap(), want);
    }

    #[test]
    fn malformed_images_are_errors() {
        let good = sample_pe(0);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "no 'PE"),
            (b"MZ".to_vec(), "DOS header"),
            (good[..0x90].to_vec(), "truncated"),
            (
                {
                    let mut b = good.clone();
                    b[0x84 + 20] = 0x07;
                    b
                },
                "magic",
            ),
            (
                {
                    let mut b = good.clone();
                    b[0x84 + 20 + 60..0x84 + 20 + 64].copy_from_slice(&0x10u32.to_le_bytes());
                    b
                },
                "SizeOfHeaders",
            ),
            (
                {
                    let mut b = good.clone();
                    let s = 0x84 + 20 + 240;
                    b[s + 16..s + 20].copy_from_slice(&0xffff_0000u32.to_le_bytes());
                    b
                },
                "past the",
            ),
            (
                {
                    let mut b = good.clone();
                    b[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
                    b
                },
                "no 'PE",
            ),
        ];
        for (image, want) in cases {
            let err = sha384(&image).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // A certificate table larger than what follows the sections.
        let mut lying = sample_pe(64);
        let dir = 0x84 + 20 + 112 + 32;
        lying[dir + 4..dir + 8].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(sha384(&lying)
            .unwrap_err()
            .to_string()
            .contains("certificate table"));
    }
}
