//! The runtime event log: what the guest extended into its runtime measurement register,
//! so a verifier can replay it and know *what* the register value means.
//!
//! A TDX RTMR is a hash chain: on its own, its value proves only that some sequence of
//! digests was extended. The guest therefore records each extension here, and the
//! verifier recomputes the register from zero (`RTMR := SHA-384(RTMR ‖ digest)`) and
//! compares it with the quote. Only event kinds this crate knows are accepted, so an
//! extension nobody can explain fails verification instead of being ignored.
//!
//! The same log records extensions of a vTPM's PCRs (SHA-256 bank), where a guest has
//! one: there the extended value is `SHA-256(digest)` (`PCR := SHA-256(PCR || SHA-256(d))`),
//! so the event keeps the same 48-byte config digest whichever register it went into.
//!
//! Encoding: CBOR array of maps `{register: u8, kind: text, digest: bytes(48)}`, plus
//! `bank: "pcr-sha256"` for a vTPM PCR event (absent: a TDX RTMR), carried in the
//! RA-TLS payload's `event_log` field.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};

use crate::{Error, Result};

/// TDX RTMR extension: `RTMR := SHA-384(RTMR || digest)`, digest zero-padded to 48 bytes.
pub fn rtmr_extend(rtmr: &[u8; 48], digest: &[u8]) -> [u8; 48] {
    let mut padded = [0u8; 48];
    let n = digest.len().min(48);
    padded[..n].copy_from_slice(&digest[..n]);
    let mut h = Sha384::new();
    h.update(rtmr);
    h.update(padded);
    h.finalize().into()
}

/// Event kind of the measured runtime config: `digest` is SHA-384 of the canonical
/// config document (the config digest of the RA-TLS payload).
pub const KIND_CONFIG: &str = "cocoon.config.v1";

/// The kinds a verifier understands.
pub const KNOWN_KINDS: &[&str] = &[KIND_CONFIG];

/// Which kind of register an event extended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterBank {
    /// A TDX RTMR (0-3), SHA-384.
    #[default]
    #[serde(rename = "rtmr")]
    Rtmr,
    /// A vTPM PCR (0-23) in the SHA-256 bank.
    #[serde(rename = "pcr-sha256")]
    PcrSha256,
}

impl RegisterBank {
    fn is_rtmr(&self) -> bool {
        *self == RegisterBank::Rtmr
    }
}

/// One extension of a runtime measurement register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEvent {
    /// RTMR index (0-3), or PCR index (0-23) when `bank` is a PCR bank.
    pub register: u8,
    /// Which register file `register` indexes.
    #[serde(default, skip_serializing_if = "RegisterBank::is_rtmr")]
    pub bank: RegisterBank,
    /// What was measured ([`KNOWN_KINDS`]).
    pub kind: String,
    /// The 48-byte digest that was extended.
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
}

/// The events of one boot, in extension order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeEventLog {
    pub events: Vec<RuntimeEvent>,
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "runtime event log",
        detail: detail.into(),
    }
}

impl RuntimeEventLog {
    /// A log with the one event a guest records at start: its measured config.
    pub fn config(register: u8, config_digest: &[u8; 48]) -> Self {
        Self::config_in(Some(register), None, config_digest)
    }

    /// The config event for the registers a guest extended: an RTMR (TDX), a vTPM PCR,
    /// both, or neither (an empty log).
    pub fn config_in(rtmr: Option<u8>, pcr: Option<u8>, config_digest: &[u8; 48]) -> Self {
        let event = |register, bank| RuntimeEvent {
            register,
            bank,
            kind: KIND_CONFIG.into(),
            digest: config_digest.to_vec(),
        };
        let events = rtmr
            .map(|r| event(r, RegisterBank::Rtmr))
            .into_iter()
            .chain(pcr.map(|p| event(p, RegisterBank::PcrSha256)))
            .collect();
        Self { events }
    }

    /// CBOR bytes. An empty log encodes as zero bytes (a TEE without runtime registers).
    pub fn to_cbor(&self) -> Result<Vec<u8>> {
        if self.events.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        ciborium::into_writer(&self.events, &mut out)
            .map_err(|e| malformed(format!("cannot encode: {e}")))?;
        Ok(out)
    }

    /// Parses a log and checks every event's register, kind and digest length.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let mut reader = std::io::Cursor::new(bytes);
        let events: Vec<RuntimeEvent> =
            ciborium::from_reader(&mut reader).map_err(|e| malformed(e.to_string()))?;
        if reader.position() != bytes.len() as u64 {
            return Err(malformed(format!(
                "{} trailing bytes after the log",
                bytes.len() as u64 - reader.position()
            )));
        }
        for (i, e) in events.iter().enumerate() {
            let last = match e.bank {
                RegisterBank::Rtmr => 3,
                RegisterBank::PcrSha256 => 23,
            };
            if e.register > last {
                return Err(malformed(format!(
                    "event {i}: register {} > {last}",
                    e.register
                )));
            }
            if !KNOWN_KINDS.contains(&e.kind.as_str()) {
                return Err(malformed(format!(
                    "event {i}: unknown kind '{}' (known: {})",
                    e.kind,
                    KNOWN_KINDS.join(", ")
                )));
            }
            if e.digest.len() != 48 {
                return Err(malformed(format!(
                    "event {i}: digest has {} bytes, expected 48",
                    e.digest.len()
                )));
            }
        }
        Ok(Self { events })
    }

    /// The value `register` has after these events, starting from zero.
    pub fn replay(&self, register: u8) -> [u8; 48] {
        self.events
            .iter()
            .filter(|e| e.bank == RegisterBank::Rtmr && e.register == register)
            .fold([0u8; 48], |rtmr, e| rtmr_extend(&rtmr, &e.digest))
    }

    /// The value SHA-256-bank PCR `index` has after these events, starting from zero.
    pub fn replay_pcr(&self, index: u8) -> [u8; 32] {
        self.events
            .iter()
            .filter(|e| e.bank == RegisterBank::PcrSha256 && e.register == index)
            .fold([0u8; 32], |pcr, e| pcr_sha256_extend(&pcr, &e.digest))
    }

    /// The config digests the log records in `bank` (a guest records exactly one per
    /// register file it extends).
    pub fn config_digests_in(&self, bank: RegisterBank) -> impl Iterator<Item = &[u8]> {
        self.events
            .iter()
            .filter(move |e| e.kind == KIND_CONFIG && e.bank == bank)
            .map(|e| e.digest.as_slice())
    }

    /// Checks the log against a verified vTPM quote: every PCR the log touches, and the
    /// config PCR even when untouched, is quoted (SHA-256 bank) with the value the log
    /// replays to, and the log records exactly the certificate's config digest in a PCR.
    pub fn check_pcrs(
        &self,
        quoted: &crate::vtpm::VerifiedQuote,
        config_pcr: u8,
        config_digest: &[u8],
    ) -> Result<()> {
        let mut touched: Vec<u8> = self
            .events
            .iter()
            .filter(|e| e.bank == RegisterBank::PcrSha256)
            .map(|e| e.register)
            .chain(std::iter::once(config_pcr))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for index in touched {
            let replayed = self.replay_pcr(index);
            let Some(value) = quoted.sha256_pcr(index) else {
                return Err(Error::Policy {
                    rule: "the vTPM quote must cover every PCR the event log extends",
                    observed: format!("PCR {index} not quoted"),
                    expected: format!("PCR {index} (SHA-256 bank) in the quote"),
                });
            };
            if value != replayed {
                return Err(Error::Policy {
                    rule: "runtime event log replay must equal the quoted PCR",
                    observed: format!("PCR{index} = {}", hex::encode(value)),
                    expected: format!("replayed {}", hex::encode(replayed)),
                });
            }
        }
        check_one_config(
            self.config_digests_in(RegisterBank::PcrSha256).collect(),
            config_digest,
        )
    }

    /// Checks the log against a TDX quote's RTMRs and the payload's config digest: the
    /// replay of every register the log touches equals the quote, RTMR3 included even
    /// when untouched (an unexplained RTMR3 fails), and the log records exactly the
    /// one config digest the certificate names.
    pub fn check_tdx(&self, rtmr: &[[u8; 48]; 4], config_digest: &[u8]) -> Result<()> {
        for register in 0..4u8 {
            let touched = self.events.iter().any(|e| e.register == register);
            if !touched && register != 3 {
                continue;
            }
            let replayed = self.replay(register);
            if replayed != rtmr[usize::from(register)] {
                return Err(Error::Policy {
                    rule: "runtime event log replay must equal the quote's RTMR",
                    observed: format!(
                        "RTMR{register} = {}",
                        hex::encode(rtmr[usize::from(register)])
                    ),
                    expected: format!("replayed {}", hex::encode(replayed)),
                });
            }
        }
        check_one_config(
            self.config_digests_in(RegisterBank::Rtmr).collect(),
            config_digest,
        )
    }
}

/// vTPM PCR extension with a 48-byte event digest: `PCR := SHA-256(PCR || SHA-256(d))`.
pub fn pcr_sha256_extend(pcr: &[u8; 32], digest: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(Sha256::digest(digest));
    h.finalize().into()
}

fn check_one_config(recorded: Vec<&[u8]>, config_digest: &[u8]) -> Result<()> {
    if recorded != [config_digest] {
        return Err(Error::Policy {
            rule: "the event log must record exactly the certificate's config digest",
            observed: format!(
                "[{}]",
                recorded
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            expected: format!("[{}]", hex::encode(config_digest)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replays_like_the_tdx_module() {
        let log = RuntimeEventLog::config(3, &[7; 48]);
        let cbor = log.to_cbor().unwrap();
        assert_eq!(RuntimeEventLog::from_cbor(&cbor).unwrap(), log);
        assert_eq!(log.replay(3), rtmr_extend(&[0; 48], &[7; 48]));
        assert_eq!(log.replay(2), [0; 48]);
        assert!(RuntimeEventLog::default().to_cbor().unwrap().is_empty());
    }

    #[test]
    fn check_tdx_catches_unexplained_and_missing_extensions() {
        let log = RuntimeEventLog::config(3, &[7; 48]);
        let mut rtmr = [[0u8; 48]; 4];
        rtmr[3] = log.replay(3);
        log.check_tdx(&rtmr, &[7; 48]).unwrap();
        // Another config digest than the certificate's.
        let err = log.check_tdx(&rtmr, &[8; 48]).unwrap_err();
        assert!(
            err.to_string().contains("exactly the certificate's config"),
            "{err}"
        );
        // RTMR3 carries an extension the log does not explain.
        rtmr[3] = rtmr_extend(&rtmr[3], &[9; 48]);
        let err = log.check_tdx(&rtmr, &[7; 48]).unwrap_err();
        assert!(err.to_string().contains("RTMR3"), "{err}");
        // An empty log cannot explain a non-zero RTMR3.
        let err = RuntimeEventLog::default()
            .check_tdx(&rtmr, &[7; 48])
            .unwrap_err();
        assert!(err.to_string().contains("replay"), "{err}");
    }

    #[test]
    fn unknown_kinds_bad_registers_and_junk_are_refused() {
        let mut log = RuntimeEventLog::config(3, &[7; 48]);
        log.events[0].kind = "shell-history".into();
        let err = RuntimeEventLog::from_cbor(&log.to_cbor().unwrap()).unwrap_err();
        assert!(err.to_string().contains("unknown kind"), "{err}");
        let mut log = RuntimeEventLog::config(3, &[7; 48]);
        log.events[0].register = 4;
        assert!(RuntimeEventLog::from_cbor(&log.to_cbor().unwrap()).is_err());
        let mut log = RuntimeEventLog::config(3, &[7; 48]);
        log.events[0].digest.truncate(47);
        assert!(RuntimeEventLog::from_cbor(&log.to_cbor().unwrap()).is_err());
        for junk in [&[0xff][..], &[0x80, 0x01], b"not cbor"] {
            assert!(RuntimeEventLog::from_cbor(junk).is_err());
        }
    }
}
