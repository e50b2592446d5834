//! The SPDM 1.1 messages an NVIDIA H100 attestation report is made of, one struct per
//! wire structure, each with `parse` and `to_bytes` (DMTF DSP0274 1.1, GET_MEASUREMENTS
//! and MEASUREMENTS; NVIDIA's opaque-data TLVs).
//!
//! Why typed structs with explicit layouts: the report signature covers the bytes exactly
//! as the GPU sent them, and every length in them comes from untrusted input. Parsing into
//! one struct per structure, with every length checked against what is left and every
//! offset named in the error, keeps a hostile report from panicking the verifier or making
//! it allocate more than the input's own size; `to_bytes` gives the same bytes back, which
//! the round-trip tests check on real reports.
//!
//! Layout of the evidence as NVIDIA's tools store it (hex text): the 37-byte request
//! followed by the response.
//!
//! ```text
//! GET_MEASUREMENTS (SPDM 1.1, signature requested), 37 bytes
//!   0  SPDMVersion   u8   0x11
//!   1  RequestCode   u8   0xE0
//!   2  Param1        u8   bit 0: signature requested
//!   3  Param2        u8   measurement operation (0xFF = all blocks)
//!   4  Nonce         [32]
//!  36  SlotIDParam   u8   (bits 3:0)
//! MEASUREMENTS
//!   0  SPDMVersion   u8   0x11
//!   1  ResponseCode  u8   0x60
//!   2  Param1        u8
//!   3  Param2        u8   slot id (bits 3:0)
//!   4  NumberOfBlocks u8
//!   5  MeasurementRecordLength u24 LE   (L1)
//!   8  MeasurementRecord [L1]: blocks of
//!        Index u8, MeasurementSpecification u8 (bit 0 = DMTF), MeasurementSize u16 LE,
//!        Measurement [MeasurementSize] = DMTF value type u8, value size u16 LE, value
//!   8+L1   Nonce [32]      (the responder's)
//!  40+L1   OpaqueLength u16 LE (L2)
//!  42+L1   OpaqueData [L2]: NVIDIA TLVs, type u16 LE, size u16 LE, value
//!  42+L1+L2 Signature [96] (ECDSA P-384 r||s)
//! ```

use crate::wire::Reader;
use crate::{Error, Result};

/// SPDM version byte for 1.1 (major 1, minor 1).
pub const SPDM_VERSION_1_1: u8 = 0x11;
/// GET_MEASUREMENTS request code.
pub const GET_MEASUREMENTS: u8 = 0xE0;
/// MEASUREMENTS response code.
pub const MEASUREMENTS: u8 = 0x60;
/// Param1 bit 0 of GET_MEASUREMENTS: the responder must sign the response.
pub const SIGNATURE_REQUESTED: u8 = 0x01;
/// Param2 of GET_MEASUREMENTS: return every measurement block.
pub const ALL_MEASUREMENTS: u8 = 0xFF;
/// MeasurementSpecification bit 0: the block is a DMTF measurement.
pub const SPEC_DMTF: u8 = 0x01;
/// Nonce length in both messages.
pub const NONCE_LEN: usize = 32;
/// Length of a GET_MEASUREMENTS 1.1 request with the signature requested.
pub const REQUEST_LEN: usize = 37;
/// Signature length for ECDSA P-384 (raw r||s), the H100's algorithm.
pub const P384_SIGNATURE_LEN: usize = 96;

fn expect(what: &'static str, observed: u8, expected: u8) -> Result<()> {
    if observed != expected {
        return Err(Error::Unsupported {
            what,
            value: format!("{observed:#04x} (expected {expected:#04x})"),
        });
    }
    Ok(())
}

/// The SPDM 1.1 GET_MEASUREMENTS request, signature requested (37 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMeasurementsRequest {
    pub version: u8,
    /// Bit 0: signature requested (required here).
    pub param1: u8,
    /// Measurement operation: 0xFF for every block, or one block index.
    pub param2: u8,
    /// The requester's (verifier's) fresh nonce.
    pub nonce: [u8; NONCE_LEN],
    /// SlotIDParam: the certificate slot whose key signs (bits 3:0).
    pub slot_id: u8,
}

impl GetMeasurementsRequest {
    /// Parses exactly [`REQUEST_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "SPDM GET_MEASUREMENTS request");
        let version = r.u8()?;
        expect("SPDM request version (offset 0)", version, SPDM_VERSION_1_1)?;
        expect("SPDM request code (offset 1)", r.u8()?, GET_MEASUREMENTS)?;
        let param1 = r.u8()?;
        if param1 & SIGNATURE_REQUESTED == 0 {
            return Err(Error::Unsupported {
                what: "SPDM request Param1 (offset 2): signature not requested",
                value: format!("{param1:#04x}"),
            });
        }
        let param2 = r.u8()?;
        let nonce = r.array::<NONCE_LEN>()?;
        let slot_id = r.u8()?;
        if r.remaining() != 0 {
            return Err(Error::Malformed {
                what: "SPDM GET_MEASUREMENTS request",
                detail: format!(
                    "{} bytes after the {REQUEST_LEN}-byte request",
                    r.remaining()
                ),
            });
        }
        Ok(Self {
            version,
            param1,
            param2,
            nonce,
            slot_id,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_LEN);
        out.extend_from_slice(&[self.version, GET_MEASUREMENTS, self.param1, self.param2]);
        out.extend_from_slice(&self.nonce);
        out.push(self.slot_id);
        out
    }
}

/// One DMTF measurement block of the measurement record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    /// Block index (1-based; NVIDIA's RIM index is this minus one).
    pub index: u8,
    /// MeasurementSpecification: [`SPEC_DMTF`].
    pub specification: u8,
    /// DMTFSpecMeasurementValueType (bit 7: raw bit stream rather than a digest).
    pub value_type: u8,
    /// DMTFSpecMeasurementValue (for the H100, a 48-byte SHA-384 digest).
    pub value: Vec<u8>,
}

impl MeasurementBlock {
    /// Bytes on the wire: 4-byte block header, 3-byte DMTF header, value.
    pub fn encoded_len(&self) -> usize {
        7 + self.value.len()
    }

    fn read(r: &mut Reader<'_>, position: usize) -> Result<Self> {
        let start = r.offset;
        let index = r.u8()?;
        let specification = r.u8()?;
        if specification != SPEC_DMTF {
            return Err(Error::Unsupported {
                what: "measurement block MeasurementSpecification (expected 0x01, DMTF)",
                value: format!(
                    "{specification:#04x} in block {position} (index {index}) at record offset {start}"
                ),
            });
        }
        let size = usize::from(r.u16()?);
        let body = r.take(size)?;
        let mut m = Reader::new(body, "DMTF measurement");
        let value_type = m.u8()?;
        let value_size = usize::from(m.u16()?);
        let value = m.take(value_size)?.to_vec();
        if m.remaining() != 0 {
            return Err(Error::Malformed {
                what: "DMTF measurement",
                detail: format!(
                    "block index {index} (record offset {start}): MeasurementSize {size} \
                     but DMTF value size {value_size} (+3 header bytes)"
                ),
            });
        }
        Ok(Self {
            index,
            specification,
            value_type,
            value,
        })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        let value_size = u16::try_from(self.value.len()).map_err(|_| Error::Unsupported {
            what: "measurement value size (max 65532)",
            value: self.value.len().to_string(),
        })?;
        let size = value_size
            .checked_add(3)
            .ok_or_else(|| Error::Unsupported {
                what: "measurement value size (max 65532)",
                value: self.value.len().to_string(),
            })?;
        out.extend_from_slice(&[self.index, self.specification]);
        out.extend_from_slice(&size.to_le_bytes());
        out.push(self.value_type);
        out.extend_from_slice(&value_size.to_le_bytes());
        out.extend_from_slice(&self.value);
        Ok(())
    }
}

/// NVIDIA's opaque-data field types (nvtrust's `OPAQUE_FIELD_ID_*`), as far as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpaqueFieldType {
    CertIssuerName,
    CertAuthorityKeyIdentifier,
    DriverVersion,
    GpuInfo,
    Sku,
    VbiosVersion,
    ManufacturerId,
    TamperDetection,
    Smc,
    Vpr,
    Nvdec0Status,
    MsrsCount,
    CprInfo,
    BoardId,
    ChipSku,
    ChipSkuMod,
    Project,
    ProjectSku,
    ProjectSkuMod,
    Fwid,
    ProtectedPcieStatus,
    SwitchPdi,
    FloorsweptPorts,
    PositionId,
    LockSwitchStatus,
    GpuLinkConn,
    Invalid,
    /// A type this parser does not name; its value is kept raw.
    Unknown(u16),
}

const OPAQUE_TYPES: [(u16, OpaqueFieldType); 27] = [
    (1, OpaqueFieldType::CertIssuerName),
    (2, OpaqueFieldType::CertAuthorityKeyIdentifier),
    (3, OpaqueFieldType::DriverVersion),
    (4, OpaqueFieldType::GpuInfo),
    (5, OpaqueFieldType::Sku),
    (6, OpaqueFieldType::VbiosVersion),
    (7, OpaqueFieldType::ManufacturerId),
    (8, OpaqueFieldType::TamperDetection),
    (9, OpaqueFieldType::Smc),
    (10, OpaqueFieldType::Vpr),
    (11, OpaqueFieldType::Nvdec0Status),
    (12, OpaqueFieldType::MsrsCount),
    (13, OpaqueFieldType::CprInfo),
    (14, OpaqueFieldType::BoardId),
    (15, OpaqueFieldType::ChipSku),
    (16, OpaqueFieldType::ChipSkuMod),
    (17, OpaqueFieldType::Project),
    (18, OpaqueFieldType::ProjectSku),
    (19, OpaqueFieldType::ProjectSkuMod),
    (20, OpaqueFieldType::Fwid),
    (21, OpaqueFieldType::ProtectedPcieStatus),
    (22, OpaqueFieldType::SwitchPdi),
    (23, OpaqueFieldType::FloorsweptPorts),
    (24, OpaqueFieldType::PositionId),
    (25, OpaqueFieldType::LockSwitchStatus),
    (32, OpaqueFieldType::GpuLinkConn),
    (255, OpaqueFieldType::Invalid),
];

impl OpaqueFieldType {
    pub fn from_u16(v: u16) -> Self {
        OPAQUE_TYPES
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, t)| *t)
            .unwrap_or(Self::Unknown(v))
    }

    pub fn to_u16(self) -> u16 {
        match self {
            Self::Unknown(v) => v,
            known => OPAQUE_TYPES
                .iter()
                .find(|(_, t)| *t == known)
                .map(|(n, _)| *n)
                .unwrap_or(0),
        }
    }
}

/// One TLV of NVIDIA's opaque data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueField {
    pub kind: OpaqueFieldType,
    pub value: Vec<u8>,
}

/// NVIDIA's opaque data: a list of TLVs in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpaqueData {
    pub fields: Vec<OpaqueField>,
}

/// A NUL-terminated (or NUL-padded) ASCII string field.
fn c_string(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let s = &bytes[..end];
    (s.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
        .then(|| String::from_utf8_lossy(s).into_owned())
}

impl OpaqueData {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "NVIDIA opaque data TLV");
        let mut fields = Vec::new();
        while r.remaining() > 0 {
            let kind = OpaqueFieldType::from_u16(r.u16()?);
            let size = usize::from(r.u16()?);
            let value = r.take(size)?.to_vec();
            fields.push(OpaqueField { kind, value });
        }
        Ok(Self { fields })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for f in &self.fields {
            let size = u16::try_from(f.value.len()).map_err(|_| Error::Unsupported {
                what: "opaque field size (max 65535)",
                value: f.value.len().to_string(),
            })?;
            out.extend_from_slice(&f.kind.to_u16().to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&f.value);
        }
        Ok(out)
    }

    /// The first field of this type.
    pub fn get(&self, kind: OpaqueFieldType) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.value.as_slice())
    }

    /// The driver version string (e.g. `545.00`).
    pub fn driver_version(&self) -> Option<String> {
        c_string(self.get(OpaqueFieldType::DriverVersion)?)
    }

    /// The VBIOS version as NVIDIA prints it (e.g. `96.00.5E.00.01`): bytes 3, 2, 1, 0
    /// and 4 of the little-endian 8-byte field, in upper-case hex.
    pub fn vbios_version(&self) -> Option<String> {
        let v = self.get(OpaqueFieldType::VbiosVersion)?;
        if v.len() < 5 {
            return None;
        }
        Some(format!(
            "{:02X}.{:02X}.{:02X}.{:02X}.{:02X}",
            v[3], v[2], v[1], v[0], v[4]
        ))
    }

    /// A NUL-terminated string field (chip SKU, project, project SKU, ...).
    pub fn string(&self, kind: OpaqueFieldType) -> Option<String> {
        c_string(self.get(kind)?)
    }

    /// The per-block measurement counters (little-endian u32s), when present and well
    /// formed.
    pub fn measurement_counts(&self) -> Option<Vec<u32>> {
        let v = self.get(OpaqueFieldType::MsrsCount)?;
        if v.len() % 4 != 0 {
            return None;
        }
        Some(
            v.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

/// The SPDM 1.1 MEASUREMENTS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementsResponse {
    pub version: u8,
    pub param1: u8,
    /// Slot id (bits 3:0).
    pub param2: u8,
    /// The measurement record, in the order received.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's nonce.
    pub nonce: [u8; NONCE_LEN],
    pub opaque: OpaqueData,
    /// The signature bytes (empty when none was requested).
    pub signature: Vec<u8>,
}

impl MeasurementsResponse {
    /// Parses a response whose trailing signature is `signature_len` bytes (0 when the
    /// request asked for none). Every length is checked against the bytes left; the
    /// record must hold exactly NumberOfBlocks blocks with distinct indices.
    pub fn parse(bytes: &[u8], signature_len: usize) -> Result<Self> {
        let mut r = Reader::new(bytes, "SPDM MEASUREMENTS response");
        let version = r.u8()?;
        expect(
            "SPDM response version (offset 0)",
            version,
            SPDM_VERSION_1_1,
        )?;
        expect("SPDM response code (offset 1)", r.u8()?, MEASUREMENTS)?;
        let param1 = r.u8()?;
        let param2 = r.u8()?;
        let count = r.u8()?;
        let record_len = r.u24()? as usize;
        let record = r.take(record_len)?;
        let mut rec = Reader::new(record, "SPDM measurement record");
        let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(usize::from(count));
        for position in 0..usize::from(count) {
            let block = MeasurementBlock::read(&mut rec, position)?;
            if block.index == 0 || block.index == 0xFF {
                return Err(Error::Unsupported {
                    what: "measurement block index (1..=254)",
                    value: format!("{} in block {position}", block.index),
                });
            }
            if blocks.iter().any(|b| b.index == block.index) {
                return Err(Error::Malformed {
                    what: "SPDM measurement record",
                    detail: format!("block index {} appears twice", block.index),
                });
            }
            blocks.push(block);
        }
        if rec.remaining() != 0 {
            return Err(Error::Malformed {
                what: "SPDM measurement record",
                detail: format!(
                    "{} bytes after the {count} blocks (record length {record_len}, response offset 8)",
                    rec.remaining()
                ),
            });
        }
        let nonce = r.array::<NONCE_LEN>()?;
        let opaque_len = usize::from(r.u16()?);
        let opaque = OpaqueData::parse(r.take(opaque_len)?)?;
        let sig_offset = r.offset;
        let signature = r.rest().to_vec();
        if signature.len() != signature_len {
            return Err(Error::Malformed {
                what: "SPDM MEASUREMENTS signature",
                detail: format!(
                    "{} bytes at offset {sig_offset}, expected {signature_len}",
                    signature.len()
                ),
            });
        }
        Ok(Self {
            version,
            param1,
            param2,
            blocks,
            nonce,
            opaque,
            signature,
        })
    }

    /// The response bytes without the signature (what, after the request, is signed).
    pub fn unsigned_bytes(&self) -> Result<Vec<u8>> {
        let mut record = Vec::new();
        for b in &self.blocks {
            b.write(&mut record)?;
        }
        let count = u8::try_from(self.blocks.len()).map_err(|_| Error::Unsupported {
            what: "number of measurement blocks (max 255)",
            value: self.blocks.len().to_string(),
        })?;
        let record_len = u32::try_from(record.len())
            .ok()
            .filter(|n| *n < 1 << 24)
            .ok_or_else(|| Error::Unsupported {
                what: "measurement record length (max 2^24 - 1)",
                value: record.len().to_string(),
            })?;
        let opaque = self.opaque.to_bytes()?;
        let opaque_len = u16::try_from(opaque.len()).map_err(|_| Error::Unsupported {
            what: "opaque data length (max 65535)",
            value: opaque.len().to_string(),
        })?;
        let mut out = Vec::with_capacity(8 + record.len() + 34 + opaque.len());
        out.extend_from_slice(&[self.version, MEASUREMENTS, self.param1, self.param2, count]);
        out.extend_from_slice(&record_len.to_le_bytes()[..3]);
        out.extend_from_slice(&record);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&opaque_len.to_le_bytes());
        out.extend_from_slice(&opaque);
        Ok(out)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = self.unsigned_bytes()?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// The block with this index.
    pub fn block(&self, index: u8) -> Option<&MeasurementBlock> {
        self.blocks.iter().find(|b| b.index == index)
    }
}

/// Largest report accepted (binary): a real H100 report is about 4 KiB; this leaves room
/// for larger opaque data while bounding what untrusted input can make us allocate.
pub const MAX_REPORT_LEN: usize = 64 * 1024;

/// An attestation report as NVIDIA's tools store it: request followed by response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReport {
    pub request: GetMeasurementsRequest,
    pub response: MeasurementsResponse,
}

impl GpuReport {
    /// Parses the binary report (request ‖ response).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_REPORT_LEN {
            return Err(Error::Unsupported {
                what: "GPU attestation report length",
                value: format!("{} bytes (max {MAX_REPORT_LEN})", bytes.len()),
            });
        }
        if bytes.len() < REQUEST_LEN {
            return Err(Error::Truncated {
                what: "SPDM GET_MEASUREMENTS request",
                offset: 0,
                needed: REQUEST_LEN,
                available: bytes.len(),
            });
        }
        let (req, resp) = bytes.split_at(REQUEST_LEN);
        let request = GetMeasurementsRequest::parse(req)?;
        let response = MeasurementsResponse::parse(resp, P384_SIGNATURE_LEN)?;
        if response.version != request.version {
            return Err(Error::Malformed {
                what: "SPDM MEASUREMENTS response",
                detail: format!(
                    "version {:#04x} differs from the request's {:#04x}",
                    response.version, request.version
                ),
            });
        }
        Ok(Self { request, response })
    }

    /// Parses hex text (NVIDIA's sample format); surrounding whitespace is ignored.
    pub fn parse_hex(text: &[u8]) -> Result<Self> {
        Self::parse(&decode_report_hex(text)?)
    }

    /// The bytes the signature covers: request ‖ response without the signature.
    pub fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut out = self.request.to_bytes();
        out.extend_from_slice(&self.response.unsigned_bytes()?);
        Ok(out)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = self.request.to_bytes();
        out.extend_from_slice(&self.response.to_bytes()?);
        Ok(out)
    }
}

/// Decodes a report stored as hex text (whitespace around it ignored), bounded by
/// [`MAX_REPORT_LEN`].
pub fn decode_report_hex(text: &[u8]) -> Result<Vec<u8>> {
    let text = text.trim_ascii();
    if text.len() > 2 * MAX_REPORT_LEN {
        return Err(Error::Unsupported {
            what: "GPU attestation report length",
            value: format!("{} hex digits (max {})", text.len(), 2 * MAX_REPORT_LEN),
        });
    }
    hex::decode(text).map_err(|e| Error::Malformed {
        what: "GPU attestation report (hex)",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fixtures::{R2023, R2025};

    #[test]
    fn gpu_real_reports_parse_and_round_trip() {
        for text in [R2023, R2025] {
            let raw = decode_report_hex(text).unwrap();
            let report = GpuReport::parse(&raw).unwrap();
            assert_eq!(report.to_bytes().unwrap(), raw);
            assert_eq!(
                report.request,
                GetMeasurementsRequest::parse(&report.request.to_bytes()).unwrap()
            );
            let resp = report.response.to_bytes().unwrap();
            assert_eq!(resp, raw[REQUEST_LEN..]);
            assert_eq!(
                MeasurementsResponse::parse(&resp, P384_SIGNATURE_LEN).unwrap(),
                report.response
            );
            let opaque = report.response.opaque.to_bytes().unwrap();
            assert_eq!(OpaqueData::parse(&opaque).unwrap(), report.response.opaque);
            assert_eq!(report.request.param2, ALL_MEASUREMENTS);
            assert_eq!(report.response.blocks.len(), 64);
            for (i, b) in report.response.blocks.iter().enumerate() {
                assert_eq!(usize::from(b.index), i + 1);
                assert_eq!(b.value.len(), 48);
            }
        }
    }

    #[test]
    fn gpu_report_fields_at_their_offsets() {
        // Read from the raw bytes at the documented offsets, not through the parser.
        let raw = decode_report_hex(R2023).unwrap();
        let report = GpuReport::parse(&raw).unwrap();
        assert_eq!(&raw[..4], &[0x11, 0xE0, 0x01, 0xFF]);
        assert_eq!(report.request.nonce[..], raw[4..36]);
        let resp = &raw[REQUEST_LEN..];
        let l1 = u32::from_le_bytes([resp[5], resp[6], resp[7], 0]) as usize;
        assert_eq!(l1, 3520);
        assert_eq!(report.response.nonce[..], resp[8 + l1..40 + l1]);
        let l2 = usize::from(u16::from_le_bytes([resp[40 + l1], resp[41 + l1]]));
        assert_eq!(report.response.signature[..], resp[42 + l1 + l2..]);
        assert_eq!(report.response.opaque.driver_version().unwrap(), "545.00");
        assert_eq!(
            report.response.opaque.vbios_version().unwrap(),
            "96.00.5E.00.01"
        );
        assert_eq!(
            report
                .response
                .opaque
                .string(OpaqueFieldType::Project)
                .unwrap(),
            "1010"
        );
        assert_eq!(
            report
                .response
                .opaque
                .string(OpaqueFieldType::ChipSku)
                .unwrap(),
            "882"
        );
        assert_eq!(
            report.response.opaque.measurement_counts().unwrap().len(),
            64
        );
    }

    #[test]
    fn gpu_truncated_and_bad_lengths_fail_without_panic() {
        let raw = decode_report_hex(R2023).unwrap();
        for cut in 0..raw.len() {
            assert!(GpuReport::parse(&raw[..cut]).is_err(), "cut at {cut}");
        }
        // Record length one larger: the blocks no longer fill it exactly.
        let mut bad = raw.clone();
        bad[REQUEST_LEN + 5] = bad[REQUEST_LEN + 5].wrapping_add(1);
        assert!(GpuReport::parse(&bad).is_err());
        // Number of blocks one larger.
        let mut bad = raw.clone();
        bad[REQUEST_LEN + 4] = 65;
        let err = GpuReport::parse(&bad).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // Not DMTF.
        let mut bad = raw.clone();
        bad[REQUEST_LEN + 8 + 1] = 0x02;
        let err = GpuReport::parse(&bad).unwrap_err();
        assert!(
            err.to_string().contains("MeasurementSpecification"),
            "{err}"
        );
        // A duplicate index.
        let mut bad = raw.clone();
        bad[REQUEST_LEN + 8 + 55] = 1;
        let err = GpuReport::parse(&bad).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        // Signature not requested.
        let mut bad = raw.clone();
        bad[2] = 0;
        assert!(GpuReport::parse(&bad).is_err());
        // Extra byte after the signature.
        let mut bad = raw.clone();
        bad.push(0);
        let err = GpuReport::parse(&bad).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        // Too large, and not hex.
        assert!(GpuReport::parse(&vec![0; MAX_REPORT_LEN + 1]).is_err());
        assert!(GpuReport::parse_hex(b"11e0zz").is_err());
    }

    #[test]
    fn gpu_opaque_unknown_types_are_kept_raw() {
        let data = [0x34, 0x12, 2, 0, 0xAA, 0xBB, 3, 0, 3, 0, b'1', b'.', 0];
        let o = OpaqueData::parse(&data).unwrap();
        assert_eq!(o.fields[0].kind, OpaqueFieldType::Unknown(0x1234));
        assert_eq!(o.fields[0].value, [0xAA, 0xBB]);
        assert_eq!(o.driver_version().unwrap(), "1.");
        assert_eq!(o.to_bytes().unwrap(), data);
        // A TLV whose size runs past the end.
        assert!(matches!(
            OpaqueData::parse(&[3, 0, 9, 0, 1]).unwrap_err(),
            Error::Truncated { .. }
        ));
        for v in 0..=300u16 {
            assert_eq!(OpaqueFieldType::from_u16(v).to_u16(), v);
        }
    }
}
