//! TCG2 crypto-agile event logs (the TDX CCEL log) and their replay into RTMRs.
//!
//! A TDX guest's firmware records every extension of RTMR0-2 in the ACPI CCEL log, in
//! the TCG PC Client format: a SHA-1-format first event carrying the "Spec ID Event03"
//! (which lists the digest algorithms and their sizes), then TCG_PCR_EVENT2 records.
//! Under the CCEL convention the "PCR index" is the MR index: 1..4 are RTMR0..3 (0 would
//! be MRTD, which software cannot extend). Replaying the SHA-384 digests gives the
//! registers a quote must show; this is how `cocoon-measure` learned and checks the boot
//! event sequence. The log is untrusted: every length is checked, nothing panics.

use crate::bytes;
use crate::error::{Error, Result};

/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000c;
/// EV_NO_ACTION: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Cap on one event's data (a log area is at most a few MiB).
const MAX_EVENT_DATA: usize = 16 << 20;

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Byte offset of the event in the log.
    pub offset: usize,
    /// CCEL MR index (1..4 = RTMR0..3).
    pub mr_index: u32,
    pub event_type: u32,
    /// The SHA-384 digest (every extended event carries one).
    pub sha384: Option<[u8; 48]>,
    pub data: Vec<u8>,
}

impl Event {
    /// The RTMR this event extends, or `None` for EV_NO_ACTION.
    pub fn rtmr(&self) -> Option<u8> {
        if self.event_type == EV_NO_ACTION {
            return None;
        }
        self.mr_index
            .checked_sub(1)
            .and_then(|i| u8::try_from(i).ok())
    }
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// `(algorithm id, digest size)` from the Spec ID event.
    pub algorithms: Vec<(u16, u16)>,
    pub events: Vec<Event>,
}

fn err(offset: usize, detail: impl Into<String>) -> Error {
    Error::EventLog {
        offset,
        detail: detail.into(),
    }
}

/// A cursor that turns every short read into an error at the right offset.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u16(&mut self, what: &str) -> Result<u16> {
        let v = bytes::u16_le(self.bytes, self.pos)
            .ok_or_else(|| err(self.pos, format!("truncated {what}")))?;
        self.pos += 2;
        Ok(v)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let v = bytes::u32_le(self.bytes, self.pos)
            .ok_or_else(|| err(self.pos, format!("truncated {what}")))?;
        self.pos += 4;
        Ok(v)
    }
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let v = bytes::slice(self.bytes, self.pos, len)
            .ok_or_else(|| err(self.pos, format!("{what} of {len} bytes runs past the end")))?;
        self.pos += len;
        Ok(v)
    }
    /// The rest is padding: the log area is filled with 0xFF (or zeros) after the last event.
    fn at_end(&self) -> bool {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        rest.iter().all(|b| *b == 0xff) || rest.iter().all(|b| *b == 0)
    }
}

impl EventLog {
    /// Parses a crypto-agile log.
    pub fn parse(log: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes: log, pos: 0 };
        // First event: TCG_PCClientPCREvent (SHA-1 format) holding the Spec ID event.
        r.u32("first event's PCR index")?;
        let kind = r.u32("first event's type")?;
        r.take(20, "first event's SHA-1 digest")?;
        let size = r.u32("first event's size")? as usize;
        let spec_at = r.pos;
        let spec = r.take(size, "Spec ID event")?;
        if kind != EV_NO_ACTION || spec.get(..16) != Some(&SPEC_ID_SIGNATURE[..]) {
            return Err(err(0, "not a crypto-agile log: the first event is not an EV_NO_ACTION \"Spec ID Event03\""));
        }
        let mut s = Reader {
            bytes: spec,
            pos: 16 + 4 + 4,
        };
        let count = s
            .u32("number of algorithms")
            .map_err(|_| err(spec_at, "truncated Spec ID event"))?;
        let mut algorithms = Vec::new();
        for _ in 0..count.min(64) {
            let id = s
                .u16("algorithm id")
                .map_err(|_| err(spec_at, "truncated Spec ID algorithm list"))?;
            let len = s
                .u16("digest size")
                .map_err(|_| err(spec_at, "truncated Spec ID algorithm list"))?;
            algorithms.push((id, len));
        }
        if count > 64 {
            return Err(err(
                spec_at,
                format!("{count} digest algorithms is not plausible"),
            ));
        }
        if !algorithms.contains(&(ALG_SHA384, 48)) {
            return Err(err(
                spec_at,
                "the log does not carry SHA-384 digests (algorithm 0x000c, 48 bytes)",
            ));
        }
        let mut events = Vec::new();
        while !r.at_end() {
            let offset = r.pos;
            let mr_index = r.u32("MR index")?;
            let event_type = r.u32("event type")?;
            let digests = r.u32("digest count")?;
            if digests as usize > algorithms.len() {
                return Err(err(
                    offset,
                    format!(
                        "{digests} digests but the log declares {} algorithms",
                        algorithms.len()
                    ),
                ));
            }
            let mut sha384 = None;
            for _ in 0..digests {
                let alg_at = r.pos;
                let alg = r.u16("digest algorithm")?;
                let len = algorithms
                    .iter()
                    .find(|(id, _)| *id == alg)
                    .map(|(_, len)| usize::from(*len))
                    .ok_or_else(|| {
                        err(
                            alg_at,
                            format!(
                                "digest algorithm {alg:#06x} is not declared in the Spec ID event"
                            ),
                        )
                    })?;
                let digest = r.take(len, "digest")?;
                if alg == ALG_SHA384 {
                    sha384 = digest.try_into().ok();
                }
            }
            let size = r.u32("event size")? as usize;
            if size > MAX_EVENT_DATA {
                return Err(err(
                    offset,
                    format!("event data of {size} bytes is not plausible"),
                ));
            }
            let data = r.take(size, "event data")?.to_vec();
            if event_type != EV_NO_ACTION {
                if !(1..=4).contains(&mr_index) {
                    return Err(err(
                        offset,
                        format!("MR index {mr_index} is not an RTMR (CCEL uses 1..4 for RTMR0..3)"),
                    ));
                }
                if sha384.is_none() {
                    return Err(err(offset, "extended event without a SHA-384 digest"));
                }
            }
            events.push(Event {
                offset,
                mr_index,
                event_type,
                sha384,
                data,
            });
        }
        Ok(Self { algorithms, events })
    }

    /// RTMR0..3 after replaying every extended event from zero.
    pub fn replay(&self) -> [[u8; 48]; 4] {
        let mut rtmr = [[0u8; 48]; 4];
        for e in &self.events {
            if let (Some(i), Some(d)) = (e.rtmr(), e.sha384) {
                if let Some(slot) = rtmr.get_mut(usize::from(i)) {
                    *slot = cocoon_attestation::event_log::rtmr_extend(slot, &d);
                }
            }
        }
        rtmr
    }
}

/// The RTMRs of a TDX quote (v4 or v5), through the attestation crate's parser.
pub fn quote_rtmrs(quote: &[u8]) -> Result<[[u8; 48]; 4]> {
    Ok(cocoon_attestation::tdx::TdxQuote::parse(quote)?.body.rtmr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal log: Spec ID (SHA-384 only) and the given `(mr, type, digest)` events.
    fn log(events: &[(u32, u32, [u8; 48])]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 2]);
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&ALG_SHA384.to_le_bytes());
        spec.extend_from_slice(&48u16.to_le_bytes());
        spec.push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend(spec);
        for (mr, kind, d) in events {
            out.extend_from_slice(&mr.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&ALG_SHA384.to_le_bytes());
            out.extend_from_slice(d);
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(b"abc");
        }
        out.extend_from_slice(&[0xff; 64]);
        out
    }

    #[test]
    fn replay_follows_ccel_indices() {
        let bytes = log(&[
            (1, 4, [1; 48]),
            (3, 6, [2; 48]),
            (3, EV_NO_ACTION, [9; 48]),
            (2, 5, [3; 48]),
        ]);
        let parsed = EventLog::parse(&bytes).unwrap();
        assert_eq!(parsed.events.len(), 4);
        let r = parsed.replay();
        let ext = cocoon_attestation::event_log::rtmr_extend;
        assert_eq!(r[0], ext(&[0; 48], &[1; 48]));
        assert_eq!(r[1], ext(&[0; 48], &[3; 48]));
        assert_eq!(
            r[2],
            ext(&[0; 48], &[2; 48]),
            "EV_NO_ACTION is not extended"
        );
        assert_eq!(r[3], [0; 48]);
    }

    #[test]
    fn malformed_logs_are_typed_errors_at_every_truncation() {
        let good = log(&[(1, 4, [1; 48]), (4, 6, [2; 48])]);
        let events_end = good.len() - 64;
        for cut in 0..events_end {
            // Truncating anywhere must give an error or (at an event boundary) a shorter
            // log, never a panic.
            let _ = EventLog::parse(&good[..cut]);
        }
        assert!(EventLog::parse(&good[..10]).is_err());
        let mut bad = good.clone();
        let first_event = events_end - 2 * (4 + 4 + 4 + 2 + 48 + 4 + 3);
        bad[first_event..first_event + 4].copy_from_slice(&7u32.to_le_bytes());
        let e = EventLog::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("MR index 7"), "{e}");
        let mut bad = good.clone();
        bad[first_event + 12..first_event + 14].copy_from_slice(&0x0bu16.to_le_bytes());
        let e = EventLog::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("not declared"), "{e}");
        let mut bad = good.clone();
        bad[first_event + 8..first_event + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(EventLog::parse(&bad).is_err());
        let mut bad = good;
        bad[4] = 1;
        assert!(EventLog::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("crypto-agile"));
        assert!(EventLog::parse(&[]).is_err());
    }
}
