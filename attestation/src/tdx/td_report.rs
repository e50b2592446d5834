//! The TDREPORT (`TDREPORT_STRUCT`, 1024 bytes) that `TDG.MR.REPORT` produces and the
//! Linux `TDX_CMD_GET_REPORT0` ioctl copies out; a quote is this report signed by the
//! quoting enclave. The guest reads it to check, before it sends the report to the
//! (untrusted) quote generation service, that it carries the requested REPORTDATA, and
//! after, that the quote it got back is over this TD and not another.
//!
//! Layout (Intel TDX Module ABI, "TDREPORT_STRUCT"; the same offsets as the kernel's
//! `TDREPORT_*` enum in `drivers/virt/coco/tdx-guest/tdx-guest.c`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 256 | REPORTMACSTRUCT: REPORTTYPE [4] (type 0x81 = TDX, subtype, version, reserved), reserved [12], CPUSVN [16], TEE_TCB_INFO_HASH [48], TEE_INFO_HASH [48], REPORTDATA [64] at 128, reserved [32], MAC [32] |
//! | 256 | 239 | TEE_TCB_INFO |
//! | 495 | 17 | reserved |
//! | 512 | 512 | TDINFO: ATTRIBUTES [8], XFAM [8], MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0-3 [48 each], SERVTD_HASH [48], reserved |

use super::quote::TdReportBody;
use crate::{Error, Result};

/// Size of a TDREPORT.
pub const TD_REPORT_LEN: usize = 1024;
/// REPORTTYPE.TYPE of a TDX report.
pub const REPORT_TYPE_TDX: u8 = 0x81;
/// Offset of REPORTDATA.
pub const REPORT_DATA_OFFSET: usize = 128;
/// Offset of TDINFO.
pub const TD_INFO_OFFSET: usize = 512;

/// TDINFO's fields up to RTMR3: (name, offset in TDINFO, size). A quote body repeats
/// them, in this order, as TDATTRIBUTES..RTMR3.
const TD_INFO_FIELDS: [(&str, usize, usize); 10] = [
    ("TD_ATTRIBUTES", 0, 8),
    ("XFAM", 8, 8),
    ("MRTD", 16, 48),
    ("MRCONFIGID", 64, 48),
    ("MROWNER", 112, 48),
    ("MROWNERCONFIG", 160, 48),
    ("RTMR0", 208, 48),
    ("RTMR1", 256, 48),
    ("RTMR2", 304, 48),
    ("RTMR3", 352, 48),
];
/// Bytes of TDINFO that [`TD_INFO_FIELDS`] cover.
pub const TD_INFO_MEASURED_LEN: usize = 400;

/// The parts of a TDREPORT the guest compares with a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// REPORTTYPE: type, subtype, version, reserved.
    pub report_type: [u8; 4],
    pub report_data: [u8; 64],
    /// TDINFO from ATTRIBUTES to RTMR3 (see [`TD_INFO_FIELDS`]).
    pub td_info: [u8; TD_INFO_MEASURED_LEN],
}

fn at<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

impl TdReport {
    /// Parses a TDREPORT (exactly [`TD_REPORT_LEN`] bytes, REPORTTYPE.TYPE 0x81).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != TD_REPORT_LEN {
            return Err(Error::Unsupported {
                what: "TDREPORT length (expected 1024 bytes)",
                value: bytes.len().to_string(),
            });
        }
        if bytes[0] != REPORT_TYPE_TDX {
            return Err(Error::Unsupported {
                what: "TDREPORT REPORTTYPE.TYPE (expected 0x81, TDX)",
                value: format!("{:#x}", bytes[0]),
            });
        }
        Ok(Self {
            report_type: at(bytes, 0),
            report_data: at(bytes, REPORT_DATA_OFFSET),
            td_info: at(bytes, TD_INFO_OFFSET),
        })
    }

    /// RTMR `index` (0-3) as the TDREPORT has it.
    pub fn rtmr(&self, index: usize) -> Option<[u8; 48]> {
        (index < 4).then(|| at(&self.td_info, 208 + 48 * index))
    }

    /// Checks that a quote's body describes this TD: REPORTDATA and every TDINFO field
    /// equal. The error names the first field that differs.
    pub fn check_quote_body(&self, body: &TdReportBody) -> Result<()> {
        let quoted: [&[u8]; 10] = [
            &body.td_attributes,
            &body.xfam,
            &body.mr_td,
            &body.mr_config_id,
            &body.mr_owner,
            &body.mr_owner_config,
            &body.rtmr[0],
            &body.rtmr[1],
            &body.rtmr[2],
            &body.rtmr[3],
        ];
        let ours = TD_INFO_FIELDS
            .iter()
            .map(|(name, offset, len)| (*name, &self.td_info[*offset..offset + len]));
        let fields = std::iter::once(("REPORTDATA", &self.report_data[..])).chain(ours);
        let quoted = std::iter::once(&body.report_data[..]).chain(quoted);
        for ((name, ours), quoted) in fields.zip(quoted) {
            if ours != quoted {
                return Err(Error::Policy {
                    rule: "the quote is over this TD's TDREPORT",
                    observed: format!("quote {name} {}", hex::encode(quoted)),
                    expected: format!("TDREPORT {name} {}", hex::encode(ours)),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::TdxQuote;

    const QUOTE: &[u8] = include_bytes!("../../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.bin");

    /// A TDREPORT laid out from the recorded quote's body at the TDX module's offsets
    /// (the body's TDATTRIBUTES..RTMR3 is TDINFO's first 400 bytes, in the same order).
    fn report_for(quote: &[u8]) -> Vec<u8> {
        let body = &quote[48..48 + 584];
        let mut r = vec![0u8; 1024];
        r[0] = 0x81;
        r[128..192].copy_from_slice(&body[520..584]);
        r[512..912].copy_from_slice(&body[120..520]);
        r
    }

    #[test]
    fn a_report_matches_the_quote_over_it() {
        let report = TdReport::parse(&report_for(QUOTE)).unwrap();
        let quote = TdxQuote::parse(QUOTE).unwrap();
        assert_eq!(report.rtmr(3), Some(quote.body.rtmr[3]));
        assert_eq!(report.rtmr(4), None);
        assert_eq!(&report.td_info[16..64], &quote.body.mr_td);
        report.check_quote_body(&quote.body).unwrap();
    }

    #[test]
    fn a_different_rtmr_is_named() {
        let mut bytes = report_for(QUOTE);
        bytes[512 + 352] ^= 1;
        let report = TdReport::parse(&bytes).unwrap();
        let quote = TdxQuote::parse(QUOTE).unwrap();
        let e = report
            .check_quote_body(&quote.body)
            .unwrap_err()
            .to_string();
        assert!(e.contains("RTMR3"), "{e}");
    }

    #[test]
    fn wrong_length_or_type_is_refused() {
        assert!(TdReport::parse(&[0x81; 1023]).is_err());
        let mut bytes = report_for(QUOTE);
        bytes[0] = 0x00; // SGX
        assert!(TdReport::parse(&bytes)
            .unwrap_err()
            .to_string()
            .contains("0x81"));
    }
}
