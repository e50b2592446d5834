//! The Intel Quote Generation Service (QGS) message protocol, as a TD guest speaks it to
//! the host's QGS over vsock when the kernel has no configfs-tsm: the guest sends its
//! TDREPORT in a `GET_QUOTE_REQ`, the QGS answers with the quote in a `GET_QUOTE_RESP`.
//!
//! Pure encoding and decoding (no I/O): the transport lives in the guest. Layouts are
//! those of Intel's `qgs_msg_lib.h` (SGXDataCenterAttestationPrimitives,
//! `QuoteGeneration/quote_wrapper/qgs_msg_lib`), packed, little-endian:
//!
//! | message | field | size |
//! |---|---|---|
//! | header | major_version u16, minor_version u16, type u32, size u32 (whole message), error_code u32 | 16 |
//! | GET_QUOTE_REQ (type 0) | header, report_size u32, id_list_size u32, report, id_list | 24 + n |
//! | GET_QUOTE_RESP (type 1) | header, selected_id_size u32, quote_size u32, selected_id, quote | 24 + n |
//!
//! On the socket every message is preceded by its length as a 4-byte **big-endian**
//! integer (`tdx_attest.c`). The QGS is host software outside the trust boundary, so a
//! response is parsed as untrusted bytes with the same checks Intel's
//! `qgs_msg_inflate_get_quote_resp` makes, and a length prefix above
//! [`MAX_MESSAGE_LEN`] is refused before anything is allocated.

use crate::{Error, Result};

/// Major version this codec speaks (only the major version must match).
pub const MAJOR_VERSION: u16 = 1;
/// Minor version written in requests.
pub const MINOR_VERSION: u16 = 1;
/// `GET_QUOTE_REQ`.
pub const GET_QUOTE_REQ: u32 = 0;
/// `GET_QUOTE_RESP`.
pub const GET_QUOTE_RESP: u32 = 1;
/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// Size of a GET_QUOTE_REQ / GET_QUOTE_RESP before its variable part.
pub const FIXED_LEN: usize = HEADER_LEN + 8;
/// Size of the big-endian length prefix on the socket.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Largest message accepted from the QGS (quotes with PEM chains are under 16 KiB).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// First of the QGS message-library error codes (`QGS_MSG_MK_ERROR(0)`).
pub const QGS_MSG_ERROR_BASE: u32 = 0x0001_2000;
/// One past the last code a response may carry (`QGS_MSG_ERROR_MAX`).
pub const QGS_MSG_ERROR_MAX: u32 = 0x0001_2008;

/// The common message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
    pub major_version: u16,
    pub minor_version: u16,
    pub msg_type: u32,
    /// Size of the whole message, header included.
    pub size: u32,
    /// Used in responses only.
    pub error_code: u32,
}

impl MsgHeader {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.major_version.to_le_bytes());
        out.extend_from_slice(&self.minor_version.to_le_bytes());
        out.extend_from_slice(&self.msg_type.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.error_code.to_le_bytes());
    }

    fn read(bytes: &[u8], what: &'static str) -> Result<Self> {
        if bytes.len() < FIXED_LEN {
            return Err(Error::Truncated {
                what,
                offset: 0,
                needed: FIXED_LEN,
                available: bytes.len(),
            });
        }
        Ok(Self {
            major_version: u16::from_le_bytes([bytes[0], bytes[1]]),
            minor_version: u16::from_le_bytes([bytes[2], bytes[3]]),
            msg_type: u32_at(bytes, 4),
            size: u32_at(bytes, 8),
            error_code: u32_at(bytes, 12),
        })
    }

    /// The checks every message gets: version, type, and a size that is the number of
    /// bytes received and the sum of the parts.
    fn check(&self, what: &'static str, msg_type: u32, received: usize, parts: u64) -> Result<()> {
        if self.major_version != MAJOR_VERSION {
            return Err(Error::Unsupported {
                what: "QGS message major version (expected 1)",
                value: self.major_version.to_string(),
            });
        }
        if self.msg_type != msg_type {
            return Err(Error::Unsupported {
                what,
                value: format!("message type {}", self.msg_type),
            });
        }
        if self.size as usize != received || u64::from(self.size) != FIXED_LEN as u64 + parts {
            return Err(Error::Malformed {
                what,
                detail: format!(
                    "header size {} but {received} bytes received and the parts add up \
                     to {}",
                    self.size,
                    FIXED_LEN as u64 + parts
                ),
            });
        }
        Ok(())
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(b)
}

fn len_u32(len: usize, what: &'static str) -> Result<u32> {
    if len > MAX_MESSAGE_LEN {
        return Err(Error::Unsupported {
            what,
            value: format!("{len} bytes (max {MAX_MESSAGE_LEN})"),
        });
    }
    Ok(len as u32)
}

/// Encodes a message with two length-prefixed parts after the header.
fn encode_two(msg_type: u32, error_code: u32, a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
    let size = len_u32(FIXED_LEN + a.len() + b.len(), "QGS message size")?;
    let mut out = Vec::with_capacity(size as usize);
    MsgHeader {
        major_version: MAJOR_VERSION,
        minor_version: MINOR_VERSION,
        msg_type,
        size,
        error_code,
    }
    .write(&mut out);
    out.extend_from_slice(&(a.len() as u32).to_le_bytes());
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    Ok(out)
}

/// Decodes the header and the two parts of a message of `msg_type`.
fn decode_two<'a>(
    bytes: &'a [u8],
    msg_type: u32,
    what: &'static str,
) -> Result<(MsgHeader, &'a [u8], &'a [u8])> {
    let header = MsgHeader::read(bytes, what)?;
    let a_len = u32_at(bytes, 16);
    let b_len = u32_at(bytes, 20);
    header.check(
        what,
        msg_type,
        bytes.len(),
        u64::from(a_len) + u64::from(b_len),
    )?;
    let a_end = FIXED_LEN + a_len as usize;
    Ok((header, &bytes[FIXED_LEN..a_end], &bytes[a_end..]))
}

/// `GET_QUOTE_REQ`: a TDREPORT and an optional list of attestation-key ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetQuoteRequest {
    pub report: Vec<u8>,
    pub id_list: Vec<u8>,
}

impl GetQuoteRequest {
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.report.is_empty() {
            return Err(Error::Malformed {
                what: "QGS GET_QUOTE_REQ",
                detail: "the report cannot be empty".into(),
            });
        }
        encode_two(GET_QUOTE_REQ, 0, &self.report, &self.id_list)
    }

    /// Decodes a request (what a QGS does; the guest's tests use it to play one).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (header, report, id_list) = decode_two(bytes, GET_QUOTE_REQ, "QGS GET_QUOTE_REQ")?;
        if header.error_code != 0 || report.is_empty() {
            return Err(Error::Malformed {
                what: "QGS GET_QUOTE_REQ",
                detail: format!(
                    "error code {:#x} and report size {} (a request has no error and a \
                     non-empty report)",
                    header.error_code,
                    report.len()
                ),
            });
        }
        Ok(Self {
            report: report.to_vec(),
            id_list: id_list.to_vec(),
        })
    }
}

/// `GET_QUOTE_RESP`: the quote, or an error code with nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetQuoteResponse {
    /// 0 on success; otherwise the QGS's error code (see [`qgs_error_name`]).
    pub error_code: u32,
    pub selected_id: Vec<u8>,
    pub quote: Vec<u8>,
}

impl GetQuoteResponse {
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode_two(
            GET_QUOTE_RESP,
            self.error_code,
            &self.selected_id,
            &self.quote,
        )
    }

    /// Decodes a response from untrusted bytes. A success must carry a quote; an error
    /// must carry nothing but its code, and the code must be below `QGS_MSG_ERROR_MAX`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "QGS GET_QUOTE_RESP";
        let (header, selected_id, quote) = decode_two(bytes, GET_QUOTE_RESP, WHAT)?;
        match header.error_code {
            0 if quote.is_empty() => Err(Error::Malformed {
                what: WHAT,
                detail: "success with an empty quote".into(),
            }),
            0 => Ok(Self {
                error_code: 0,
                selected_id: selected_id.to_vec(),
                quote: quote.to_vec(),
            }),
            code if code >= QGS_MSG_ERROR_MAX => Err(Error::Unsupported {
                what: "QGS GET_QUOTE_RESP error code",
                value: format!("{code:#x}"),
            }),
            code if !selected_id.is_empty() || !quote.is_empty() => Err(Error::Malformed {
                what: WHAT,
                detail: format!("error {code:#x} together with a quote or id"),
            }),
            code => Ok(Self {
                error_code: code,
                selected_id: Vec::new(),
                quote: Vec::new(),
            }),
        }
    }
}

/// What a response error code means, for messages.
pub fn qgs_error_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        0x0001_2001 => "QGS_MSG_ERROR_UNEXPECTED",
        0x0001_2002 => "QGS_MSG_ERROR_OUT_OF_MEMORY",
        0x0001_2003 => "QGS_MSG_ERROR_INVALID_PARAMETER",
        0x0001_2004 => "QGS_MSG_ERROR_INVALID_VERSION",
        0x0001_2005 => "QGS_MSG_ERROR_INVALID_TYPE",
        0x0001_2006 => "QGS_MSG_ERROR_INVALID_SIZE",
        0x0001_2007 => "QGS_MSG_ERROR_INVALID_CODE",
        _ => "a quote-generation error from the QGS (DCAP quote library error code)",
    }
}

/// A message with its 4-byte big-endian length prefix, ready for the socket.
pub fn frame(message: &[u8]) -> Result<Vec<u8>> {
    let len = len_u32(message.len(), "QGS message size")?;
    let mut out = Vec::with_capacity(LENGTH_PREFIX_LEN + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// The body length a received prefix announces, refused above [`MAX_MESSAGE_LEN`] and
/// below the smallest message.
pub fn framed_len(prefix: [u8; LENGTH_PREFIX_LEN]) -> Result<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    if !(FIXED_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(Error::Unsupported {
            what: "QGS message length prefix (24 bytes to 256 KiB)",
            value: format!("{len} bytes"),
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GET_QUOTE_RESP written field by field from the qgs_msg_lib.h layout.
    fn response(error: u32, id: &[u8], quote: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&((24 + id.len() + quote.len()) as u32).to_le_bytes());
        out.extend_from_slice(&error.to_le_bytes());
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(&(quote.len() as u32).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(quote);
        out
    }

    #[test]
    fn request_layout_is_the_qgs_msg_lib_layout() {
        let req = GetQuoteRequest {
            report: vec![0xaa; 1024],
            id_list: Vec::new(),
        };
        let bytes = req.encode().unwrap();
        assert_eq!(bytes.len(), 24 + 1024);
        assert_eq!(&bytes[0..4], &[1, 0, 1, 0]); // major 1, minor 1
        assert_eq!(&bytes[4..8], &0u32.to_le_bytes()); // GET_QUOTE_REQ
        assert_eq!(&bytes[8..12], &1048u32.to_le_bytes()); // whole size
        assert_eq!(&bytes[12..16], &0u32.to_le_bytes()); // error code
        assert_eq!(&bytes[16..20], &1024u32.to_le_bytes()); // report_size
        assert_eq!(&bytes[20..24], &0u32.to_le_bytes()); // id_list_size
        assert!(bytes[24..].iter().all(|b| *b == 0xaa));
        assert_eq!(GetQuoteRequest::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn response_round_trips_and_matches_the_layout() {
        let bytes = response(0, b"id", b"the quote");
        let resp = GetQuoteResponse::decode(&bytes).unwrap();
        assert_eq!(resp.quote, b"the quote");
        assert_eq!(resp.selected_id, b"id");
        assert_eq!(resp.encode().unwrap(), bytes);
        let err = GetQuoteResponse::decode(&response(0x0001_2003, b"", b"")).unwrap();
        assert_eq!(err.error_code, 0x0001_2003);
        assert_eq!(
            qgs_error_name(err.error_code),
            "QGS_MSG_ERROR_INVALID_PARAMETER"
        );
    }

    #[test]
    fn malformed_responses_are_refused() {
        let good = response(0, b"", b"q");
        // Wrong size in the header.
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&100u32.to_le_bytes());
        assert!(GetQuoteResponse::decode(&bad).is_err());
        // quote_size larger than what follows.
        let mut bad = good.clone();
        bad[20..24].copy_from_slice(&2u32.to_le_bytes());
        assert!(GetQuoteResponse::decode(&bad).is_err());
        // Huge sizes do not overflow.
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(GetQuoteResponse::decode(&bad).is_err());
        // Wrong type, wrong major version.
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert!(GetQuoteResponse::decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("type 0"));
        let mut bad = good.clone();
        bad[0..2].copy_from_slice(&2u16.to_le_bytes());
        assert!(GetQuoteResponse::decode(&bad).is_err());
        // Success without a quote; error with a quote; out-of-range error code.
        assert!(GetQuoteResponse::decode(&response(0, b"", b"")).is_err());
        assert!(GetQuoteResponse::decode(&response(0x0001_2001, b"", b"q")).is_err());
        assert!(GetQuoteResponse::decode(&response(0x0002_0000, b"", b"")).is_err());
        // Truncated header.
        assert!(GetQuoteResponse::decode(&good[..20]).is_err());
    }

    #[test]
    fn framing_is_a_big_endian_length() {
        let framed = frame(b"0123456789abcdefghijklmn").unwrap();
        assert_eq!(&framed[..4], &[0, 0, 0, 24]);
        assert_eq!(framed_len([0, 0, 0x10, 0x00]).unwrap(), 4096);
        assert!(framed_len([0, 0, 0, 3]).is_err());
        assert!(framed_len([0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
