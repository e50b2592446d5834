//! The OVMF GUIDed footer table: how firmware tells the hypervisor where things are.
//!
//! Both SEV-SNP and TDX firmware publish their launch metadata (SEV metadata, the
//! SEV-ES reset block, the kernel-hashes table, the TDVF descriptor) as entries of a
//! table that ends 32 bytes before the end of the image. Each entry is
//! `data ‖ u16 length ‖ GUID`, read backwards from the footer entry, whose length
//! covers the whole table. The image is untrusted input, so every length is checked.

use std::path::Path;

use crate::bytes;
use crate::error::{Error, Result};

/// Bytes between the end of the footer table and the end of the image (the reset vector).
const BYTES_AFTER_TABLE: usize = 32;
/// `u16 length ‖ 16-byte GUID`.
const ENTRY_HEADER: usize = 18;

/// A GUID in its on-disk (mixed-endian, as EFI stores it) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the textual form `aabbccdd-eeff-gghh-iijj-kkllmmnnoopp` at compile time.
    pub const fn parse(text: &str) -> Guid {
        const fn nibble(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("not a hex digit in a GUID constant"),
            }
        }
        let t = text.as_bytes();
        assert!(t.len() == 36, "a GUID constant has 36 characters");
        let mut be = [0u8; 16];
        let (mut i, mut j) = (0, 0);
        while i < 36 {
            if t[i] == b'-' {
                i += 1;
                continue;
            }
            be[j] = nibble(t[i]) << 4 | nibble(t[i + 1]);
            i += 2;
            j += 1;
        }
        // The first three groups are stored little-endian.
        Guid([
            be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
            be[12], be[13], be[14], be[15],
        ])
    }
}

/// The footer entry's GUID.
pub const FOOTER_GUID: Guid = Guid::parse("96b582de-1fb2-45f7-baea-a366c55a082d");
/// SEV metadata: `u32` offset from the image end to the `ASEV` descriptor.
pub const SEV_METADATA_GUID: Guid = Guid::parse("dc886566-984a-4798-a75e-5585a7bf67cc");
/// SEV-ES reset block: the AP reset vector the VMSAs start at.
pub const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::parse("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// SEV hash table: GPA and size of the page QEMU fills with kernel/initrd/cmdline hashes.
pub const SEV_HASH_TABLE_GUID: Guid = Guid::parse("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// TDX metadata: `u32` offset from the image end to the `TDVF` descriptor.
pub const TDX_METADATA_GUID: Guid = Guid::parse("e47a6535-984a-4798-865e-4685a7bf8ec2");

/// One entry of the footer table: its GUID and where its data lies in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub guid: Guid,
    pub data: std::ops::Range<usize>,
}

/// The parsed footer table of a firmware image.
#[derive(Debug, Clone)]
pub struct FooterTable {
    pub entries: Vec<Entry>,
}

impl FooterTable {
    /// Parses the table of `image` (read from `path`, named in errors).
    pub fn parse(image: &[u8], path: &Path) -> Result<Self> {
        let bad = |detail: String| Error::FirmwareTable {
            path: path.to_path_buf(),
            detail,
        };
        let footer_end = image
            .len()
            .checked_sub(BYTES_AFTER_TABLE)
            .filter(|end| *end >= ENTRY_HEADER)
            .ok_or_else(|| {
                bad(format!(
                    "{} bytes is too small for a firmware image",
                    image.len()
                ))
            })?;
        let header = footer_end - ENTRY_HEADER;
        let guid = bytes::array::<16>(image, header + 2).map(Guid);
        if guid != Some(FOOTER_GUID) {
            return Err(bad(
                "no OVMF footer table (GUID 96b582de-1fb2-45f7-baea-a366c55a082d 48 bytes \
                 before the end); not an OVMF/TDVF image"
                    .into(),
            ));
        }
        let total = usize::from(bytes::u16_le(image, header).unwrap_or(0));
        let table_start = footer_end
            .checked_sub(total)
            .filter(|_| total >= ENTRY_HEADER)
            .ok_or_else(|| bad(format!("footer table length {total} is out of range")))?;
        let mut entries = Vec::new();
        let mut pos = header;
        while pos > table_start {
            let too_short = || bad(format!("table entry ending at byte {pos} is truncated"));
            let entry_header = pos.checked_sub(ENTRY_HEADER).filter(|h| *h >= table_start);
            let entry_header = entry_header.ok_or_else(too_short)?;
            let len = usize::from(bytes::u16_le(image, entry_header).ok_or_else(too_short)?);
            let guid = bytes::array::<16>(image, entry_header + 2).ok_or_else(too_short)?;
            let start = pos
                .checked_sub(len)
                .filter(|s| len >= ENTRY_HEADER && *s >= table_start)
                .ok_or_else(|| {
                    bad(format!(
                        "table entry ending at byte {pos} has length {len}, outside the table"
                    ))
                })?;
            entries.push(Entry {
                guid: Guid(guid),
                data: start..entry_header,
            });
            pos = start;
        }
        Ok(Self { entries })
    }

    /// The data of the entry with `guid`, if the table has one.
    pub fn find<'a>(&self, image: &'a [u8], guid: Guid) -> Option<&'a [u8]> {
        let entry = self.entries.iter().find(|e| e.guid == guid)?;
        image.get(entry.data.clone())
    }

    /// The image offset named by an entry holding a `u32` "offset from the end of the
    /// image" (how both the SEV and the TDX metadata are located).
    pub fn offset_from_end(&self, image: &[u8], guid: Guid) -> Option<usize> {
        let data = self.find(image, guid)?;
        let back = usize::try_from(bytes::u32_le(data, 0)?).ok()?;
        image.len().checked_sub(back)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal image with a footer table holding `entries` (GUID, data).
    pub(crate) fn image_with_table(size: usize, entries: &[(Guid, Vec<u8>)]) -> Vec<u8> {
        let mut table = Vec::new();
        for (guid, data) in entries {
            table.extend_from_slice(data);
            table.extend_from_slice(
                &u16::try_from(data.len() + ENTRY_HEADER)
                    .unwrap()
                    .to_le_bytes(),
            );
            table.extend_from_slice(&guid.0);
        }
        table.extend_from_slice(
            &u16::try_from(table.len() + ENTRY_HEADER)
                .unwrap()
                .to_le_bytes(),
        );
        table.extend_from_slice(&FOOTER_GUID.0);
        let mut image = vec![0u8; size];
        let end = size - BYTES_AFTER_TABLE;
        image[end - table.len()..end].copy_from_slice(&table);
        image
    }

    #[test]
    fn guid_constants_use_efi_byte_order() {
        assert_eq!(
            FOOTER_GUID.0,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn table_round_trips_and_lies_are_refused() {
        let image = image_with_table(
            4096,
            &[
                (SEV_METADATA_GUID, 100u32.to_le_bytes().to_vec()),
                (TDX_METADATA_GUID, 200u32.to_le_bytes().to_vec()),
            ],
        );
        let path = Path::new("fw.fd");
        let table = FooterTable::parse(&image, path).unwrap();
        assert_eq!(table.entries.len(), 2);
        assert_eq!(table.offset_from_end(&image, SEV_METADATA_GUID), Some(3996));
        assert_eq!(table.offset_from_end(&image, TDX_METADATA_GUID), Some(3896));
        assert_eq!(table.find(&image, SEV_HASH_TABLE_GUID), None);

        // A table length that reaches before the start of the image.
        let mut bad = image.clone();
        let header = 4096 - 32 - 18;
        bad[header..header + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        let err = FooterTable::parse(&bad[..200], path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("footer table"), "{err}");
        // An entry whose length runs past the table.
        let mut bad = image.clone();
        let entry = header - 18;
        bad[entry..entry + 2].copy_from_slice(&60_000u16.to_le_bytes());
        let err = FooterTable::parse(&bad, path).unwrap_err().to_string();
        assert!(err.contains("outside the table"), "{err}");
        // Tiny and table-less images.
        for junk in [&[][..], &[0u8; 40][..], &[0u8; 4096][..]] {
            assert!(FooterTable::parse(junk, path).is_err());
        }
    }
}
