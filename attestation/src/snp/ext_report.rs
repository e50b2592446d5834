//! What an SEV-SNP guest gets back besides the report itself: the `MSG_REPORT_RSP`
//! wrapper the firmware puts around it, and the certificate table the host attaches to
//! an extended report (`SNP_GET_EXT_REPORT`, or configfs-tsm's `auxblob`).
//!
//! Both arrive through the hypervisor, so both are parsed as untrusted bytes: the table
//! is written by the host, and a host that lies in it can at worst make verification
//! fail (the certificates are checked against AMD's root by the verifier), but it must
//! never make the guest read out of bounds or pick the wrong certificate silently.
//!
//! `MSG_REPORT_RSP` (SEV-SNP Firmware ABI, "MSG_REPORT_RSP Message Structure"), all
//! little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 4 | STATUS (0 = success) |
//! | 0x04 | 4 | REPORT_SIZE |
//! | 0x08 | 24 | reserved |
//! | 0x20 | REPORT_SIZE | REPORT |
//!
//! Certificate table (GHCB specification 2.03, §4.1.8.1 "MSG_REPORT_REQ"): entries of
//! 24 bytes `{ GUID [16], OFFSET u32, LENGTH u32 }`, ended by an all-zero entry; OFFSET
//! counts from the start of the table, and the certificates (DER) follow the entries.
//! GUIDs are stored in RFC 4122 byte order (the order of the text form), as the AMD
//! guest tools, go-sev-guest and the `sev` crate write and read them.

use crate::{Error, Result};

/// Size of the `MSG_REPORT_RSP` header before the report.
pub const REPORT_RSP_HEADER_LEN: usize = 0x20;
/// Size of one certificate-table entry.
pub const CERT_ENTRY_LEN: usize = 24;
/// Most entries a table may have (a real one has three or four).
pub const MAX_CERT_ENTRIES: usize = 64;

/// VCEK: the chip's versioned endorsement key certificate.
pub const GUID_VCEK: [u8; 16] = guid("63da758d-e664-4564-adc5-f4b93be8accd");
/// VLEK: a cloud provider's versioned loaded endorsement key certificate.
pub const GUID_VLEK: [u8; 16] = guid("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
/// ASK: AMD SEV signing key certificate.
pub const GUID_ASK: [u8; 16] = guid("4ab7b379-bbac-4fe4-a02f-05aef327c782");
/// ARK: AMD root key certificate.
pub const GUID_ARK: [u8; 16] = guid("c0b406a4-a803-4952-9743-3fb6014cd0ae");

/// The 16 bytes of a GUID in its text form, RFC 4122 order (evaluated at compile time,
/// so a malformed constant does not build).
const fn guid(text: &str) -> [u8; 16] {
    let s = text.as_bytes();
    assert!(s.len() == 36, "a GUID is 36 characters");
    let mut out = [0u8; 16];
    let (mut i, mut o) = (0, 0);
    while i < s.len() {
        if s[i] == b'-' {
            i += 1;
            continue;
        }
        out[o] = (hex_digit(s[i]) << 4) | hex_digit(s[i + 1]);
        o += 1;
        i += 2;
    }
    assert!(o == 16, "a GUID has 32 hex digits");
    out
}

const fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("GUID constants are lower-case hex"),
    }
}

/// Which certificate an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Vcek,
    Vlek,
    Ask,
    Ark,
    /// A GUID this crate does not know; kept, not dropped, so nothing is hidden.
    Other([u8; 16]),
}

impl CertKind {
    pub fn from_guid(guid: [u8; 16]) -> Self {
        match guid {
            GUID_VCEK => Self::Vcek,
            GUID_VLEK => Self::Vlek,
            GUID_ASK => Self::Ask,
            GUID_ARK => Self::Ark,
            other => Self::Other(other),
        }
    }

    pub fn guid(self) -> [u8; 16] {
        match self {
            Self::Vcek => GUID_VCEK,
            Self::Vlek => GUID_VLEK,
            Self::Ask => GUID_ASK,
            Self::Ark => GUID_ARK,
            Self::Other(guid) => guid,
        }
    }

    /// `VCEK`, `VLEK`, `ASK`, `ARK`, or the GUID in text form.
    pub fn name(self) -> String {
        match self {
            Self::Vcek => "VCEK".into(),
            Self::Vlek => "VLEK".into(),
            Self::Ask => "ASK".into(),
            Self::Ark => "ARK".into(),
            Self::Other(g) => format!(
                "{}-{}-{}-{}-{}",
                hex::encode(&g[0..4]),
                hex::encode(&g[4..6]),
                hex::encode(&g[6..8]),
                hex::encode(&g[8..10]),
                hex::encode(&g[10..16])
            ),
        }
    }
}

/// One certificate from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    pub kind: CertKind,
    /// The certificate as the host supplied it (DER for the AMD kinds).
    pub der: Vec<u8>,
}

/// The host-supplied certificate table, split into typed certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertTable {
    pub entries: Vec<CertEntry>,
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        what: "SNP certificate table",
        detail,
    }
}

fn u32_le(bytes: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(b)
}

impl CertTable {
    /// Parses a table from untrusted bytes. Empty input, or input whose first entry is
    /// the terminator (the kernel zero-fills the buffer when the host supplies no
    /// certificates), is an empty table. Trailing bytes after the last certificate are
    /// allowed: the ioctl buffer is whole pages.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.iter().all(|b| *b == 0) {
            return Ok(Self::default());
        }
        let mut headers = Vec::new();
        let mut offset = 0;
        loop {
            let Some(entry) = bytes.get(offset..offset + CERT_ENTRY_LEN) else {
                return Err(Error::Truncated {
                    what: "SNP certificate table (no all-zero terminating entry)",
                    offset,
                    needed: CERT_ENTRY_LEN,
                    available: bytes.len().saturating_sub(offset),
                });
            };
            offset += CERT_ENTRY_LEN;
            if entry.iter().all(|b| *b == 0) {
                break;
            }
            if headers.len() == MAX_CERT_ENTRIES {
                return Err(Error::Unsupported {
                    what: "SNP certificate table entries (at most 64)",
                    value: format!("more than {MAX_CERT_ENTRIES}"),
                });
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&entry[..16]);
            headers.push((guid, u32_le(entry, 16), u32_le(entry, 20)));
        }
        let table_end = offset;
        let mut entries: Vec<CertEntry> = Vec::with_capacity(headers.len());
        for (index, (guid, cert_offset, length)) in headers.into_iter().enumerate() {
            let kind = CertKind::from_guid(guid);
            if guid == [0; 16] {
                return Err(malformed(format!(
                    "entry {index} has a zero GUID but offset {cert_offset} and length {length}"
                )));
            }
            if entries.iter().any(|e| e.kind == kind) {
                return Err(malformed(format!(
                    "entry {index} repeats {}: which one is meant is ambiguous",
                    kind.name()
                )));
            }
            let start = cert_offset as usize;
            let end = start.saturating_add(length as usize);
            if length == 0 || start < table_end || end > bytes.len() {
                return Err(malformed(format!(
                    "entry {index} ({}) points at bytes {start}..{end}, outside the \
                     certificates area {table_end}..{}",
                    kind.name(),
                    bytes.len()
                )));
            }
            entries.push(CertEntry {
                kind,
                der: bytes[start..end].to_vec(),
            });
        }
        Ok(Self { entries })
    }

    /// The table's byte form: entries, the terminator, then the certificates in order.
    pub fn encode(&self) -> Vec<u8> {
        let header_len = (self.entries.len() + 1) * CERT_ENTRY_LEN;
        let mut out = Vec::with_capacity(
            header_len + self.entries.iter().map(|e| e.der.len()).sum::<usize>(),
        );
        let mut next = header_len;
        for entry in &self.entries {
            out.extend_from_slice(&entry.kind.guid());
            out.extend_from_slice(&(next as u32).to_le_bytes());
            out.extend_from_slice(&(entry.der.len() as u32).to_le_bytes());
            next += entry.der.len();
        }
        out.extend_from_slice(&[0u8; CERT_ENTRY_LEN]);
        for entry in &self.entries {
            out.extend_from_slice(&entry.der);
        }
        out
    }

    /// The certificate of one kind, if the host supplied it.
    pub fn get(&self, kind: CertKind) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.der.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The signing certificate (VCEK, else VLEK) as DER and the ASK/ASVK + ARK chain as
    /// PEM, or which one the table lacks. (For a VLEK the host puts the ASVK in the ASK slot.)
    pub fn vcek_and_chain(&self) -> Result<(Vec<u8>, String)> {
        let missing = |what: &str| malformed(format!("has no {what} certificate"));
        let vcek = self
            .get(CertKind::Vcek)
            .or_else(|| self.get(CertKind::Vlek))
            .ok_or_else(|| missing("VCEK or VLEK"))?;
        let ask = self.get(CertKind::Ask).ok_or_else(|| missing("ASK"))?;
        let ark = self.get(CertKind::Ark).ok_or_else(|| missing("ARK"))?;
        let chain = format!(
            "{}{}",
            crate::pem::certificate_pem(ask),
            crate::pem::certificate_pem(ark)
        );
        Ok((vcek.to_vec(), chain))
    }
}

/// The firmware's answer to a report request, as the `SNP_GET_(EXT_)REPORT` ioctls copy
/// it out (4000 bytes, of which the report takes `REPORT_SIZE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportResponse {
    /// The report bytes (`REPORT_SIZE` of them).
    pub report: Vec<u8>,
}

impl ReportResponse {
    /// Parses `MSG_REPORT_RSP`; a non-zero STATUS is an error naming the status.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < REPORT_RSP_HEADER_LEN {
            return Err(Error::Truncated {
                what: "SNP MSG_REPORT_RSP header",
                offset: 0,
                needed: REPORT_RSP_HEADER_LEN,
                available: bytes.len(),
            });
        }
        let status = u32_le(bytes, 0);
        if status != 0 {
            return Err(Error::Unsupported {
                what: "SNP firmware status in MSG_REPORT_RSP (0 = success; 0x16 = \
                       invalid parameters, e.g. a VMPL below the guest's own)",
                value: format!("{status:#x}"),
            });
        }
        let size = u32_le(bytes, 4) as usize;
        let available = bytes.len() - REPORT_RSP_HEADER_LEN;
        if size == 0 || size > available {
            return Err(Error::Truncated {
                what: "SNP MSG_REPORT_RSP report (REPORT_SIZE)",
                offset: REPORT_RSP_HEADER_LEN,
                needed: size,
                available,
            });
        }
        Ok(Self {
            report: bytes[REPORT_RSP_HEADER_LEN..REPORT_RSP_HEADER_LEN + size].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table layout written out field by field, not with `encode`, so the parser is
    /// checked against the GHCB layout rather than against itself.
    fn table(entries: &[([u8; 16], &[u8])], pad_to: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next = (entries.len() + 1) * 24;
        for (guid, der) in entries {
            out.extend_from_slice(guid);
            out.extend_from_slice(&(next as u32).to_le_bytes());
            out.extend_from_slice(&(der.len() as u32).to_le_bytes());
            next += der.len();
        }
        out.extend_from_slice(&[0; 24]);
        for (_, der) in entries {
            out.extend_from_slice(der);
        }
        out.resize(out.len().max(pad_to), 0);
        out
    }

    #[test]
    fn guid_constants_are_the_ghcb_text_forms_in_rfc4122_order() {
        assert_eq!(hex::encode(GUID_VCEK), "63da758de6644564adc5f4b93be8accd");
        assert_eq!(hex::encode(GUID_VLEK), "a8074bc2a25a483eaae639c045a0b8a1");
        assert_eq!(hex::encode(GUID_ASK), "4ab7b379bbac4fe4a02f05aef327c782");
        assert_eq!(hex::encode(GUID_ARK), "c0b406a4a803495297433fb6014cd0ae");
        assert_eq!(
            CertKind::Other(GUID_ARK).name(),
            "c0b406a4-a803-4952-9743-3fb6014cd0ae"
        );
    }

    #[test]
    fn a_page_padded_table_splits_into_typed_certificates() {
        let bytes = table(
            &[
                (GUID_VCEK, b"vcek-der"),
                (GUID_ASK, b"ask"),
                (GUID_ARK, b"ark!"),
            ],
            4096,
        );
        let t = CertTable::parse(&bytes).unwrap();
        assert_eq!(t.get(CertKind::Vcek), Some(&b"vcek-der"[..]));
        assert_eq!(t.get(CertKind::Ask), Some(&b"ask"[..]));
        assert_eq!(t.get(CertKind::Ark), Some(&b"ark!"[..]));
        assert_eq!(t.get(CertKind::Vlek), None);
        // encode writes the same layout (without the page padding).
        assert_eq!(
            t.encode(),
            table(
                &[
                    (GUID_VCEK, b"vcek-der"),
                    (GUID_ASK, b"ask"),
                    (GUID_ARK, b"ark!")
                ],
                0
            )
        );
    }

    #[test]
    fn unknown_guids_are_kept_and_named() {
        let other = [0x11; 16];
        let t = CertTable::parse(&table(&[(GUID_VLEK, b"v"), (other, b"x")], 0)).unwrap();
        assert_eq!(t.entries[1].kind, CertKind::Other(other));
        assert_eq!(t.get(CertKind::Vlek), Some(&b"v"[..]));
    }

    #[test]
    fn zero_filled_or_empty_buffers_are_an_empty_table() {
        assert!(CertTable::parse(&[]).unwrap().is_empty());
        assert!(CertTable::parse(&[0; 4096]).unwrap().is_empty());
    }

    #[test]
    fn malformed_tables_are_refused_with_the_reason() {
        // No terminator.
        let mut bytes = table(&[(GUID_VCEK, b"abc")], 0);
        bytes.truncate(24 + 10);
        let e = CertTable::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("terminating"), "{e}");
        // Offset beyond the buffer.
        let mut bytes = table(&[(GUID_VCEK, b"abc")], 0);
        bytes[16..20].copy_from_slice(&4000u32.to_le_bytes());
        let e = CertTable::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("VCEK") && e.contains("outside"), "{e}");
        // Offset pointing into the entries.
        let mut bytes = table(&[(GUID_VCEK, b"abc")], 0);
        bytes[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(CertTable::parse(&bytes).is_err());
        // Length overflowing u32 arithmetic.
        let mut bytes = table(&[(GUID_VCEK, b"abc")], 0);
        bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(CertTable::parse(&bytes).is_err());
        // Zero length.
        let mut bytes = table(&[(GUID_VCEK, b"abc")], 0);
        bytes[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert!(CertTable::parse(&bytes).is_err());
        // Two VCEKs.
        let e = CertTable::parse(&table(&[(GUID_VCEK, b"a"), (GUID_VCEK, b"b")], 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("repeats VCEK"), "{e}");
        // Zero GUID with data.
        let mut bytes = table(&[(GUID_VCEK, b"abc")], 0);
        bytes[..16].fill(0);
        assert!(CertTable::parse(&bytes)
            .unwrap_err()
            .to_string()
            .contains("zero GUID"));
    }

    #[test]
    fn too_many_entries_are_refused() {
        let entries: Vec<([u8; 16], &[u8])> = (0..=MAX_CERT_ENTRIES as u8)
            .map(|i| ([i.wrapping_add(1); 16], &b"c"[..]))
            .collect();
        let e = CertTable::parse(&table(&entries, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn report_response_gives_the_report_or_the_status() {
        let mut rsp = vec![0u8; 4000];
        rsp[4..8].copy_from_slice(&1184u32.to_le_bytes());
        rsp[0x20..0x20 + 1184].fill(0xab);
        let r = ReportResponse::parse(&rsp).unwrap();
        assert_eq!(r.report, vec![0xab; 1184]);

        rsp[0..4].copy_from_slice(&0x16u32.to_le_bytes());
        let e = ReportResponse::parse(&rsp).unwrap_err().to_string();
        assert!(e.contains("0x16"), "{e}");

        rsp[0..4].fill(0);
        rsp[4..8].copy_from_slice(&4000u32.to_le_bytes());
        assert!(ReportResponse::parse(&rsp).is_err());
        assert!(ReportResponse::parse(&rsp[..10]).is_err());
    }
}
