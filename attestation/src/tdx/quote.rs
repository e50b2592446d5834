//! TDX quotes (versions 4 and 5) as typed structs with explicit byte layouts.
//!
//! Layout (Intel TDX DCAP Quoting Library API, "Quote Format"), all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 48 | header: version u16, att_key_type u16, tee_type u32, qe_svn u16, pce_svn u16, qe_vendor_id [16], user_data [20] |
//! | v4: 48 | 584 | TD report body (TD 1.0) |
//! | v5: 48 | 6 | body_type u16 (2 = TD 1.0, 3 = TD 1.5), body_size u32 |
//! | v5: 54 | 584 / 648 | TD report body |
//! | then | 4 | signature data length u32 |
//! | then | n | ECDSA signature [64], attestation key [64], certification data (type u16, size u32, data) |
//!
//! The quote signature covers the header and the body (for v5 including its 6-byte
//! descriptor), i.e. every byte before the signature data length.

use crate::wire::Reader;
use crate::{Error, Result};

/// TEE type of TDX in the quote header.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type ECDSA-256-with-P-256.
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// Size of the quote header.
pub const HEADER_LEN: usize = 48;
/// Size of a TD 1.0 report body.
pub const TD10_BODY_LEN: usize = 584;
/// Size of a TD 1.5 report body.
pub const TD15_BODY_LEN: usize = 648;
/// Offset of REPORTDATA inside a TD report body.
pub const REPORT_DATA_OFFSET_IN_BODY: usize = 520;
/// Bit of TD_ATTRIBUTES that marks a debuggable TD (TUD.DEBUG).
pub const TD_ATTRIBUTES_DEBUG: u64 = 1;
/// TD_ATTRIBUTES.TUD (byte 0): "TD under debug". Intel's ABI: if any bit of this group
/// is set, the TD is untrusted. Bit 0 DEBUG, bit 4 HGS_PLUS_PROF, bit 5 PERF_PROF, bit 6
/// PMT_PROF (the profiling bits let the host observe the TD's execution); the others are
/// reserved.
pub const TD_ATTRIBUTES_TUD_MASK: u64 = 0xff;
/// The TUD bits by name, for error messages.
pub const TD_ATTRIBUTES_TUD_BITS: &[(u64, &str)] = &[
    (1 << 0, "DEBUG"),
    (1 << 4, "HGS_PLUS_PROF"),
    (1 << 5, "PERF_PROF"),
    (1 << 6, "PMT_PROF"),
];

/// The 48-byte quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteHeader {
    pub version: u16,
    pub attestation_key_type: u16,
    pub tee_type: u32,
    pub qe_svn: u16,
    pub pce_svn: u16,
    pub qe_vendor_id: [u8; 16],
    pub user_data: [u8; 20],
}

impl QuoteHeader {
    fn parse(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            version: r.u16()?,
            attestation_key_type: r.u16()?,
            tee_type: r.u32()?,
            qe_svn: r.u16()?,
            pce_svn: r.u16()?,
            qe_vendor_id: r.array()?,
            user_data: r.array()?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.attestation_key_type.to_le_bytes());
        out.extend_from_slice(&self.tee_type.to_le_bytes());
        out.extend_from_slice(&self.qe_svn.to_le_bytes());
        out.extend_from_slice(&self.pce_svn.to_le_bytes());
        out.extend_from_slice(&self.qe_vendor_id);
        out.extend_from_slice(&self.user_data);
    }
}

/// The TD report body: TD 1.0 fields, plus the two TD 1.5 fields when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReportBody {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TD 1.5 only: TEE_TCB_SVN2 and MRSERVICETD.
    pub td15: Option<Td15Extension>,
}

/// Fields a TD 1.5 report body adds after REPORTDATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Td15Extension {
    pub tee_tcb_svn2: [u8; 16],
    pub mr_service_td: [u8; 48],
}

impl TdReportBody {
    fn parse(r: &mut Reader<'_>, td15: bool) -> Result<Self> {
        let mut body = Self {
            tee_tcb_svn: r.array()?,
            mr_seam: r.array()?,
            mr_signer_seam: r.array()?,
            seam_attributes: r.array()?,
            td_attributes: r.array()?,
            xfam: r.array()?,
            mr_td: r.array()?,
            mr_config_id: r.array()?,
            mr_owner: r.array()?,
            mr_owner_config: r.array()?,
            rtmr: [r.array()?, r.array()?, r.array()?, r.array()?],
            report_data: r.array()?,
            td15: None,
        };
        if td15 {
            body.td15 = Some(Td15Extension {
                tee_tcb_svn2: r.array()?,
                mr_service_td: r.array()?,
            });
        }
        Ok(body)
    }

    fn write(&self, out: &mut Vec<u8>) {
        for field in [
            &self.tee_tcb_svn[..],
            &self.mr_seam,
            &self.mr_signer_seam,
            &self.seam_attributes,
            &self.td_attributes,
            &self.xfam,
            &self.mr_td,
            &self.mr_config_id,
            &self.mr_owner,
            &self.mr_owner_config,
            &self.rtmr[0],
            &self.rtmr[1],
            &self.rtmr[2],
            &self.rtmr[3],
            &self.report_data,
        ] {
            out.extend_from_slice(field);
        }
        if let Some(td15) = &self.td15 {
            out.extend_from_slice(&td15.tee_tcb_svn2);
            out.extend_from_slice(&td15.mr_service_td);
        }
    }

    /// TD_ATTRIBUTES as an integer.
    pub fn td_attributes_u64(&self) -> u64 {
        u64::from_le_bytes(self.td_attributes)
    }

    /// True when the TD is "under debug": DEBUG (its memory is readable by the host) or
    /// any other TUD bit, such as the profiling bits (its execution is observable).
    pub fn debug(&self) -> bool {
        self.td_attributes_u64() & TD_ATTRIBUTES_TUD_MASK != 0
    }

    /// The names of the TUD bits set in TD_ATTRIBUTES (`bit N` for reserved ones).
    pub fn debug_bits(&self) -> Vec<String> {
        let tud = self.td_attributes_u64() & TD_ATTRIBUTES_TUD_MASK;
        (0..8)
            .filter(|bit| tud & (1 << bit) != 0)
            .map(|bit| {
                TD_ATTRIBUTES_TUD_BITS
                    .iter()
                    .find(|(mask, _)| *mask == 1 << bit)
                    .map_or_else(|| format!("bit {bit}"), |(_, name)| name.to_string())
            })
            .collect()
    }

    /// XFAM as an integer.
    pub fn xfam_u64(&self) -> u64 {
        u64::from_le_bytes(self.xfam)
    }
}

/// Certification data: how the attestation key is vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificationData {
    /// 5 = PCK certificate chain (PEM), 6 = QE report certification data.
    pub cert_type: u16,
    pub data: Vec<u8>,
}

/// The ECDSA quote signature data (attestation key type 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteSignatureData {
    /// r || s, 32 bytes each, big-endian.
    pub signature: [u8; 64],
    /// Uncompressed P-256 point x || y, without the 0x04 prefix.
    pub attestation_key: [u8; 64],
    pub certification_data: CertificationData,
}

impl QuoteSignatureData {
    fn parse(r: &mut Reader<'_>) -> Result<Self> {
        let signature = r.array()?;
        let attestation_key = r.array()?;
        let cert_type = r.u16()?;
        let size = r.u32()? as usize;
        let data = r.take(size)?.to_vec();
        Ok(Self {
            signature,
            attestation_key,
            certification_data: CertificationData { cert_type, data },
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.attestation_key);
        out.extend_from_slice(&self.certification_data.cert_type.to_le_bytes());
        out.extend_from_slice(&(self.certification_data.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.certification_data.data);
    }
}

/// A parsed TDX quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote {
    pub header: QuoteHeader,
    pub body: TdReportBody,
    pub signature_data: QuoteSignatureData,
    /// The bytes the quote signature covers (header and body).
    pub signed_bytes: Vec<u8>,
}

/// Upper bound on a quote we accept (real ones with PEM chains are under 16 KiB).
pub const MAX_QUOTE_LEN: usize = 128 * 1024;

impl TdxQuote {
    /// Parses a v4 or v5 TDX quote from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_QUOTE_LEN {
            return Err(Error::Unsupported {
                what: "quote length",
                value: format!("{} bytes (max {MAX_QUOTE_LEN})", bytes.len()),
            });
        }
        let mut r = Reader::new(bytes, "TDX quote");
        let header = QuoteHeader::parse(&mut r)?;
        if header.tee_type != TEE_TYPE_TDX {
            return Err(Error::Unsupported {
                what: "quote TEE type (expected 0x81, TDX)",
                value: format!("{:#x}", header.tee_type),
            });
        }
        if header.attestation_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(Error::Unsupported {
                what: "attestation key type (expected 2, ECDSA P-256)",
                value: header.attestation_key_type.to_string(),
            });
        }
        let body = match header.version {
            4 => TdReportBody::parse(&mut r, false)?,
            5 => {
                let body_type = r.u16()?;
                let body_size = r.u32()? as usize;
                let td15 = match (body_type, body_size) {
                    (2, TD10_BODY_LEN) => false,
                    (3, TD15_BODY_LEN) => true,
                    _ => {
                        return Err(Error::Unsupported {
                            what: "v5 quote body type/size",
                            value: format!("type {body_type}, size {body_size}"),
                        })
                    }
                };
                TdReportBody::parse(&mut r, td15)?
            }
            other => {
                return Err(Error::Unsupported {
                    what: "TDX quote version (expected 4 or 5)",
                    value: other.to_string(),
                })
            }
        };
        let signed_len = r.offset;
        let sig_len = r.u32()? as usize;
        let sig_bytes = r.take(sig_len)?;
        let mut sig_reader = Reader::new(sig_bytes, "TDX quote signature data");
        let signature_data = QuoteSignatureData::parse(&mut sig_reader)?;
        // Nothing may follow the signature data but zero padding (quote buffers from some
        // quote generation paths are zero-padded, e.g. dcap-qvl's real sample quote): bytes
        // no signature covers must not carry anything a reader could act on.
        let rest = &bytes[r.offset..];
        if let Some(at) = rest.iter().position(|b| *b != 0) {
            return Err(Error::Malformed {
                what: "TDX quote",
                detail: format!(
                    "{} bytes after the signature data, non-zero at offset {}",
                    rest.len(),
                    r.offset + at
                ),
            });
        }
        if sig_reader.offset != sig_bytes.len() {
            return Err(Error::Malformed {
                what: "TDX quote signature data",
                detail: format!(
                    "{} bytes after the certification data",
                    sig_bytes.len() - sig_reader.offset
                ),
            });
        }
        Ok(Self {
            header,
            body,
            signature_data,
            signed_bytes: bytes[..signed_len].to_vec(),
        })
    }

    /// Serialises header and body as the quote signature covers them.
    pub fn encode_signed_part(header: &QuoteHeader, body: &TdReportBody) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 6 + TD15_BODY_LEN);
        header.write(&mut out);
        if header.version == 5 {
            let (body_type, size) = match body.td15 {
                Some(_) => (3u16, TD15_BODY_LEN as u32),
                None => (2u16, TD10_BODY_LEN as u32),
            };
            out.extend_from_slice(&body_type.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
        }
        body.write(&mut out);
        out
    }

    /// Serialises the whole quote.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Self::encode_signed_part(&self.header, &self.body);
        let mut sig = Vec::new();
        self.signature_data.write(&mut sig);
        out.extend_from_slice(&(sig.len() as u32).to_le_bytes());
        out.extend_from_slice(&sig);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &[u8] = include_bytes!("../../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
    const V5: &[u8] = include_bytes!("../../tests/fixtures/tdx/gotdx_quote_v5_sample.bin");

    /// Reads a field at a fixed offset taken from the Intel quote layout table, so the
    /// typed parser is checked against an independent reading of the same bytes.
    fn at(bytes: &[u8], offset: usize, len: usize) -> &[u8] {
        &bytes[offset..offset + len]
    }

    #[test]
    fn v4_fields_match_spec_offsets() {
        let q = TdxQuote::parse(V4).unwrap();
        assert_eq!(q.header.version, 4);
        assert_eq!(q.header.tee_type, TEE_TYPE_TDX);
        let body = 48;
        assert_eq!(&q.body.tee_tcb_svn[..], at(V4, body, 16));
        assert_eq!(&q.body.mr_seam[..], at(V4, body + 16, 48));
        assert_eq!(&q.body.td_attributes[..], at(V4, body + 120, 8));
        assert_eq!(&q.body.mr_td[..], at(V4, body + 136, 48));
        assert_eq!(&q.body.rtmr[0][..], at(V4, body + 328, 48));
        assert_eq!(&q.body.rtmr[3][..], at(V4, body + 472, 48));
        assert_eq!(&q.body.report_data[..], at(V4, 568, 64));
        assert!(!q.body.debug(), "the dcap-qvl sample quote has debug off");
        assert_eq!(q.signed_bytes.len(), 48 + 584);
        assert_eq!(q.signature_data.certification_data.cert_type, 6);
    }

    #[test]
    fn v5_parses_and_round_trips() {
        let q = TdxQuote::parse(V5).unwrap();
        assert_eq!(q.header.version, 5);
        let body = 48 + 6;
        assert_eq!(&q.body.mr_td[..], at(V5, body + 136, 48));
        assert_eq!(&q.body.report_data[..], at(V5, body + 520, 64));
        assert_eq!(q.to_bytes(), V5[..q.to_bytes().len()].to_vec());
    }

    #[test]
    fn v4_round_trips_byte_for_byte() {
        let q = TdxQuote::parse(V4).unwrap();
        let again = q.to_bytes();
        assert_eq!(&again[..], &V4[..again.len()]);
        assert_eq!(TdxQuote::parse(&again).unwrap(), q);
    }

    /// Review finding 9: bytes after the signature data are refused (zero padding, which
    /// real quote buffers carry, is not data).
    #[test]
    fn trailing_bytes_after_the_signature_data_are_refused() {
        let exact = TdxQuote::parse(V4).unwrap().to_bytes();
        assert!(TdxQuote::parse(&exact).is_ok());
        let mut padded = exact.clone();
        padded.extend_from_slice(&[0; 64]);
        assert!(TdxQuote::parse(&padded).is_ok(), "zero padding");
        for tail in [&b"x"[..], &[0, 0, 1], b"smuggled"] {
            let mut bad = exact.clone();
            bad.extend_from_slice(tail);
            let err = TdxQuote::parse(&bad).unwrap_err().to_string();
            assert!(err.contains("after the signature data"), "{err}");
        }
    }

    #[test]
    fn profiling_bits_count_as_debug() {
        let mut q = TdxQuote::parse(V4).unwrap();
        assert!(!q.body.debug());
        for (bit, name) in [(4, "HGS_PLUS_PROF"), (5, "PERF_PROF"), (6, "PMT_PROF")] {
            q.body.td_attributes = (0x1000_0000u64 | 1 << bit).to_le_bytes();
            assert!(q.body.debug(), "{name}");
            assert_eq!(q.body.debug_bits(), vec![name.to_string()]);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for len in 0..V4.len().min(1400) {
            assert!(TdxQuote::parse(&V4[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn wrong_version_and_tee_type_are_named() {
        let mut bad = V4.to_vec();
        bad[0] = 3;
        let err = TdxQuote::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
        let mut bad = V4.to_vec();
        bad[4] = 0;
        let err = TdxQuote::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("TEE type"), "{err}");
    }
}
