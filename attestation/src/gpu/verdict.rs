//! One GPU verification's printable result: the facts (or, when refused, what the report
//! claims), every failed check, and the reference comparison when references were given.
//!
//! Why its own type and not [`crate::Verdict`]: a GPU report has up to 254 numbered
//! measurement blocks and a version pair rather than named registers and a TCB status;
//! `cocoon-verify gpu-report --json` and the endpoint check print this shape.

use std::collections::BTreeMap;

use serde::Serialize;

use super::reference::{compare, ReferenceMeasurement};
use super::spdm::{GpuReport, NONCE_LEN};
use super::verify::{gpu_evidence_digest, verify_gpu_evidence, GpuEvidence, GpuFacts, GpuRoot};

/// The reference comparison as printed.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceSummary {
    pub matched: Vec<u8>,
    /// Block index → what was reported and what the references allow.
    pub mismatches: Vec<MismatchSummary>,
    /// Report blocks no reference covers (not a failure by themselves).
    pub uncovered: Vec<u8>,
    /// Block indices a reference expects that the report lacks.
    pub missing: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MismatchSummary {
    pub index: u8,
    pub actual: String,
    pub expected: Vec<String>,
    pub source: String,
}

/// `cocoon-verify gpu-report --json`.
#[derive(Debug, Clone, Serialize)]
pub struct GpuVerdict {
    /// Always `"nvidia-gpu"`.
    pub tee: &'static str,
    /// True only when the chain, signature and nonce verified and, when references were
    /// given, no reference failed.
    pub verified: bool,
    /// Verification time (RFC 3339).
    pub at: String,
    pub nonce: Option<String>,
    /// `1.1` for SPDM 1.1.
    pub spdm_version: Option<String>,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    /// Block index → value (hex).
    pub measurements: BTreeMap<u8, String>,
    /// Chain subjects, leaf first.
    pub chain: Vec<String>,
    /// SHA-384 bound in the RA-TLS evidence (hex).
    pub evidence_digest: String,
    /// Present when references were given.
    pub references: Option<ReferenceSummary>,
    pub errors: Vec<String>,
    /// The verified facts, present exactly when the signature checks passed.
    #[serde(skip)]
    pub facts: Option<GpuFacts>,
}

fn spdm_version(v: u8) -> String {
    format!("{}.{}", v >> 4, v & 0x0F)
}

/// Verifies `evidence` and, when `refs` is given, compares its measurements with them.
pub fn gpu_verdict(
    evidence: &GpuEvidence,
    expected_nonce: &[u8; NONCE_LEN],
    now: i64,
    roots: &[GpuRoot],
    refs: Option<&[ReferenceMeasurement]>,
) -> GpuVerdict {
    let mut verdict = GpuVerdict {
        tee: "nvidia-gpu",
        verified: false,
        at: crate::unix_time::format_time(now),
        nonce: None,
        spdm_version: None,
        driver_version: None,
        vbios_version: None,
        measurements: BTreeMap::new(),
        chain: Vec::new(),
        evidence_digest: hex::encode(gpu_evidence_digest(evidence)),
        references: None,
        errors: Vec::new(),
        facts: None,
    };
    // What the report claims, shown even when it is refused (as the CPU verdicts do).
    if let Ok(report) = GpuReport::parse(&evidence.report) {
        fill_claims(&mut verdict, &report);
        if let Some(refs) = refs {
            let c = compare(&report, refs);
            if !c.passed() {
                verdict.errors.push(
                    crate::Error::MeasurementMismatch {
                        detail: c.failures(),
                    }
                    .to_string(),
                );
            }
            verdict.references = Some(ReferenceSummary {
                matched: c.matched.clone(),
                mismatches: c
                    .mismatches
                    .iter()
                    .map(|m| MismatchSummary {
                        index: m.block_index,
                        actual: hex::encode(&m.actual),
                        expected: m.expected.iter().map(hex::encode).collect(),
                        source: m.source.clone(),
                    })
                    .collect(),
                uncovered: c.uncovered.clone(),
                missing: c.missing.iter().map(|m| m.block_index).collect(),
            });
        }
    }
    match verify_gpu_evidence(evidence, expected_nonce, now, roots) {
        Ok(facts) => {
            verdict.chain = facts.chain_subjects.clone();
            verdict.facts = Some(facts);
        }
        // Checked first: a report whose signature fails is not compared, it is refused.
        Err(e) => verdict.errors.insert(0, e.to_string()),
    }
    verdict.verified = verdict.errors.is_empty() && verdict.facts.is_some();
    verdict
}

fn fill_claims(verdict: &mut GpuVerdict, report: &GpuReport) {
    verdict.nonce = Some(hex::encode(report.request.nonce));
    verdict.spdm_version = Some(spdm_version(report.request.version));
    verdict.driver_version = report.response.opaque.driver_version();
    verdict.vbios_version = report.response.opaque.vbios_version();
    verdict.measurements = report
        .response
        .blocks
        .iter()
        .map(|b| (b.index, hex::encode(&b.value)))
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fixtures::{AT, C2023, R2023};
    use crate::gpu::verify::nvidia_device_roots;

    #[test]
    fn gpu_verdict_accepts_refuses_and_compares() {
        let ev = GpuEvidence::from_nvidia_files(R2023, C2023).unwrap();
        let nonce: [u8; 32] = GpuReport::parse(&ev.report).unwrap().request.nonce;
        let roots = nvidia_device_roots();
        let v = gpu_verdict(&ev, &nonce, AT, &roots, None);
        assert!(v.verified, "{:?}", v.errors);
        assert_eq!(v.spdm_version.as_deref(), Some("1.1"));
        assert_eq!(v.measurements.len(), 64);
        assert_eq!(v.chain.len(), 5);
        assert!(v.references.is_none());

        let report = GpuReport::parse(&ev.report).unwrap();
        let mut refs: Vec<_> = report
            .response
            .blocks
            .iter()
            .map(|b| ReferenceMeasurement {
                block_index: b.index,
                alternatives: vec![b.value.clone()],
                source: "own".into(),
            })
            .collect();
        refs[4].alternatives = vec![vec![1; 48]];
        refs.pop();
        let v = gpu_verdict(&ev, &nonce, AT, &roots, Some(&refs));
        assert!(!v.verified);
        let r = v.references.unwrap();
        assert_eq!(r.mismatches[0].index, 5);
        assert_eq!(r.uncovered, vec![64]);
        assert!(v.errors[0].contains("block 5 is"), "{:?}", v.errors);

        let mut other = nonce;
        other[0] ^= 1;
        let v = gpu_verdict(&ev, &other, AT, &roots, None);
        assert!(!v.verified && v.facts.is_none());
        assert!(v.errors[0].contains("nonce"), "{:?}", v.errors);
        // The claims are still shown.
        assert_eq!(v.driver_version.as_deref(), Some("545.00"));
    }
}
