//! Comparison of a GPU report's measurement blocks with reference values.
//!
//! Why a separate step: a verified signature only says the GPU reported these values; what
//! firmware and driver they stand for is known only by comparing them with NVIDIA's
//! reference values (RIM files, parsed elsewhere into [`ReferenceMeasurement`]s). The
//! comparison never passes silently: every differing block is named with what was expected
//! and what was reported, a block no reference covers is listed (a policy decides whether
//! that is acceptable), and a reference for a block the report lacks is a failure.
//!
//! Indices here are the report's block indices (1-based). NVIDIA's RIMs number the same
//! measurements from 0, so RIM index i is block i + 1; that mapping belongs to the code
//! that reads RIMs, not to this comparison.

use std::collections::BTreeSet;
use std::fmt;

use super::spdm::GpuReport;
use crate::{Error, Result};

/// What a reference source says one block must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceMeasurement {
    /// The report's block index (1-based).
    pub block_index: u8,
    /// Acceptable values; the block must equal one of them (none: nothing matches).
    pub alternatives: Vec<Vec<u8>>,
    /// Where the reference comes from (RIM file and its index), for messages.
    pub source: String,
}

/// A block whose value is none of a reference's alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub block_index: u8,
    pub actual: Vec<u8>,
    pub expected: Vec<Vec<u8>>,
    pub source: String,
}

/// A reference for a block the report does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingBlock {
    pub block_index: u8,
    pub source: String,
}

/// The outcome of [`compare`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Comparison {
    /// Blocks every reference for which matched, ascending.
    pub matched: Vec<u8>,
    /// One entry per failed reference, by block index.
    pub mismatches: Vec<Mismatch>,
    /// Report blocks no reference covers, ascending (for policy; not a failure here).
    pub uncovered: Vec<u8>,
    /// References for blocks absent from the report.
    pub missing: Vec<MissingBlock>,
}

impl Comparison {
    /// True when no reference failed (mismatch or missing block). Uncovered blocks do not
    /// make this false: a policy that requires full coverage checks `uncovered` too.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.missing.is_empty()
    }

    /// `Ok` when [`Self::passed`]; otherwise an error naming every failed block index.
    pub fn into_result(self) -> Result<Self> {
        if self.passed() {
            Ok(self)
        } else {
            Err(Error::MeasurementMismatch {
                detail: self.failures(),
            })
        }
    }

    /// The failed references as one line (empty when none failed).
    pub fn failures(&self) -> String {
        let mut parts: Vec<String> = self
            .mismatches
            .iter()
            .map(|m| {
                format!(
                    "block {} is {}, expected {} ({})",
                    m.block_index,
                    hex::encode(&m.actual),
                    if m.expected.is_empty() {
                        "no acceptable value".to_string()
                    } else {
                        m.expected
                            .iter()
                            .map(hex::encode)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    },
                    m.source
                )
            })
            .collect();
        parts.extend(self.missing.iter().map(|m| {
            format!(
                "block {} is absent from the report ({})",
                m.block_index, m.source
            )
        }));
        parts.join("; ")
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[u8]| v.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
        write!(
            f,
            "{} matched, {} differ, {} missing, uncovered: [{}]",
            self.matched.len(),
            self.mismatches.len(),
            self.missing.len(),
            list(&self.uncovered)
        )?;
        if !self.passed() {
            write!(f, ": {}", self.failures())?;
        }
        Ok(())
    }
}

/// Compares every block of `report` with `refs`. A block covered by several references
/// must satisfy each of them.
pub fn compare(report: &GpuReport, refs: &[ReferenceMeasurement]) -> Comparison {
    let mut out = Comparison::default();
    let mut failed = BTreeSet::new();
    let mut covered = BTreeSet::new();
    for r in refs {
        match report.response.block(r.block_index) {
            None => out.missing.push(MissingBlock {
                block_index: r.block_index,
                source: r.source.clone(),
            }),
            Some(block) => {
                covered.insert(r.block_index);
                if !r.alternatives.contains(&block.value) {
                    failed.insert(r.block_index);
                    out.mismatches.push(Mismatch {
                        block_index: r.block_index,
                        actual: block.value.clone(),
                        expected: r.alternatives.clone(),
                        source: r.source.clone(),
                    });
                }
            }
        }
    }
    out.mismatches.sort_by_key(|m| m.block_index);
    out.missing.sort_by_key(|m| m.block_index);
    out.matched = covered.difference(&failed).copied().collect();
    let mut uncovered: Vec<u8> = report
        .response
        .blocks
        .iter()
        .map(|b| b.index)
        .filter(|i| !covered.contains(i))
        .collect();
    uncovered.sort_unstable();
    out.uncovered = uncovered;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fixtures::{R2023, R2025};

    fn own_refs(report: &GpuReport) -> Vec<ReferenceMeasurement> {
        report
            .response
            .blocks
            .iter()
            .map(|b| ReferenceMeasurement {
                block_index: b.index,
                alternatives: vec![vec![0xEE; 48], b.value.clone()],
                source: format!("test RIM index {}", b.index - 1),
            })
            .collect()
    }

    #[test]
    fn gpu_reference_from_own_blocks_passes() {
        let report = GpuReport::parse_hex(R2023).unwrap();
        let c = compare(&report, &own_refs(&report));
        assert!(c.passed(), "{c}");
        assert_eq!(c.matched, (1..=64).collect::<Vec<u8>>());
        assert!(c.uncovered.is_empty() && c.mismatches.is_empty() && c.missing.is_empty());
        c.into_result().unwrap();
    }

    #[test]
    fn gpu_reference_changed_value_is_named_by_index() {
        let report = GpuReport::parse_hex(R2023).unwrap();
        let mut refs = own_refs(&report);
        refs[9].alternatives = vec![vec![0x11; 48]];
        let c = compare(&report, &refs);
        assert!(!c.passed());
        assert_eq!(c.mismatches.len(), 1);
        assert_eq!(c.mismatches[0].block_index, 10);
        assert_eq!(c.mismatches[0].actual, report.response.blocks[9].value);
        assert_eq!(c.mismatches[0].expected, vec![vec![0x11; 48]]);
        assert!(!c.matched.contains(&10));
        let err = c.into_result().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("block 10 is "), "{msg}");
        assert!(msg.contains(&"11".repeat(48)), "{msg}");
        assert!(msg.contains("test RIM index 9"), "{msg}");
    }

    #[test]
    fn gpu_reference_uncovered_and_missing_blocks_are_reported() {
        let report = GpuReport::parse_hex(R2023).unwrap();
        let mut refs = own_refs(&report);
        refs.retain(|r| r.block_index != 7 && r.block_index != 64);
        refs.push(ReferenceMeasurement {
            block_index: 65,
            alternatives: vec![vec![0; 48]],
            source: "test RIM index 64".into(),
        });
        let c = compare(&report, &refs);
        assert_eq!(c.uncovered, vec![7, 64]);
        assert_eq!(c.missing.len(), 1);
        assert_eq!(c.missing[0].block_index, 65);
        assert!(!c.passed());
        assert!(c.to_string().contains("uncovered: [7,64]"), "{c}");
        assert!(c.failures().contains("block 65 is absent"), "{c}");
        // Uncovered alone does not fail the comparison; policy reads `uncovered`.
        refs.pop();
        let c = compare(&report, &refs);
        assert!(c.passed());
        assert_eq!(c.uncovered, vec![7, 64]);
        // No references at all: everything uncovered, nothing passed silently as matched.
        let c = compare(&report, &[]);
        assert_eq!(c.uncovered.len(), 64);
        assert!(c.matched.is_empty());
    }

    #[test]
    fn gpu_reference_other_report_differs_everywhere_it_changed() {
        // References from the 2023 GPU against the 2025 report (newer driver and VBIOS):
        // every block whose value changed is named, and only those.
        let old = GpuReport::parse_hex(R2023).unwrap();
        let new = GpuReport::parse_hex(R2025).unwrap();
        let c = compare(&new, &own_refs(&old));
        let changed: Vec<u8> = old
            .response
            .blocks
            .iter()
            .zip(&new.response.blocks)
            .filter(|(a, b)| a.value != b.value)
            .map(|(a, _)| a.index)
            .collect();
        assert!(!changed.is_empty());
        let named: Vec<u8> = c.mismatches.iter().map(|m| m.block_index).collect();
        assert_eq!(named, changed);
        // Several references on one block: each must hold.
        let mut refs = own_refs(&old);
        refs.push(ReferenceMeasurement {
            block_index: 1,
            // (block 1 of this report is all zeros)
            alternatives: vec![vec![0x5A; 48]],
            source: "second".into(),
        });
        let c = compare(&old, &refs);
        assert_eq!(c.mismatches.len(), 1);
        assert_eq!(c.mismatches[0].source, "second");
    }
}
