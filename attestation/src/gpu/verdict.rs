//! One GPU verification's printable result: the facts (or, when refused, what the report
//! claims), every failed check, and the reference comparison when references were given.
//!
//! Why its own type and not [`crate::Verdict`]: a GPU report has up to 254 numbered
//! measurement blocks and a version pair rather than named registers and a TCB status;
//! `cocoon-verify gpu-report --json` and the endpoint check print this shape.

use std::collections::BTreeMap;

use serde::Serialize;

use super::reference::{compare, ReferenceMeasurement};
use super::rim::{Rim, RimKind};
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
    /// The RIMs whose signature verified (kind, version, active entries, signer).
    pub rims: Vec<String>,
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
        rims: Vec::new(),
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

/// Like [`gpu_verdict`], with the reference values taken from NVIDIA RIM files (`(name,
/// bytes)` each): every RIM's XML signature must verify to the pinned RIM root at `now`,
/// and a driver (VBIOS) RIM must be for the driver (VBIOS) version the report states, as
/// NVIDIA's verifier requires; a RIM that fails either check refuses the verdict and adds
/// no references.
pub fn gpu_verdict_with_rims(
    evidence: &GpuEvidence,
    expected_nonce: &[u8; NONCE_LEN],
    now: i64,
    roots: &[GpuRoot],
    rims: &[(String, Vec<u8>)],
) -> GpuVerdict {
    let mut errors = Vec::new();
    let mut verified = Vec::new();
    for (source, xml) in rims {
        match Rim::parse_verified(xml, now) {
            Ok(v) => verified.push((source, v)),
            Err(e) => errors.push(format!("RIM {source}: {e}")),
        }
    }
    let claims = GpuReport::parse(&evidence.report).ok();
    let mut refs = Vec::new();
    let mut described = Vec::new();
    for (source, v) in verified {
        let rim = &v.rim;
        let reported = claims.as_ref().and_then(|r| match rim.kind {
            RimKind::Driver => r.response.opaque.driver_version(),
            RimKind::Vbios => r.response.opaque.vbios_version(),
        });
        if let Some(reported) =
            reported.filter(|r| !r.eq_ignore_ascii_case(&rim.colloquial_version))
        {
            errors.push(format!(
                "RIM {source} is for {} {}, but the report states {} {reported}",
                rim.kind, rim.colloquial_version, rim.kind
            ));
            continue;
        }
        described.push(format!(
            "{source}: {} RIM {} ({} active, signed by {})",
            rim.kind,
            rim.colloquial_version,
            rim.active_count(),
            v.signature
                .chain_subjects
                .first()
                .map(String::as_str)
                .unwrap_or("?")
        ));
        refs.extend(rim.reference_measurements());
    }
    let mut verdict = gpu_verdict(evidence, expected_nonce, now, roots, Some(&refs));
    verdict.rims = described;
    if !errors.is_empty() {
        verdict.errors.extend(errors);
        verdict.verified = false;
    }
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

    #[test]
    fn gpu_verdict_with_nvidias_rims_matches_every_active_reference() {
        const DRIVER: &[u8] =
            include_bytes!("../../tests/fixtures/gpu/nvtrust_driver_rim_test_no_gpu.swidtag");
        const VBIOS: &[u8] = include_bytes!(
            "../../tests/fixtures/gpu/nvtrust_vbios_rim_1010_0200_882_96005E0001_test_no_gpu.swidtag"
        );
        let rims = vec![
            ("driver.swidtag".to_string(), DRIVER.to_vec()),
            ("vbios.swidtag".to_string(), VBIOS.to_vec()),
        ];
        let roots = nvidia_device_roots();
        let ev = GpuEvidence::from_nvidia_files(R2023, C2023).unwrap();
        let nonce = GpuReport::parse(&ev.report).unwrap().request.nonce;
        let v = gpu_verdict_with_rims(&ev, &nonce, AT, &roots, &rims);
        assert!(v.verified, "{:?}", v.errors);
        let r = v.references.as_ref().unwrap();
        // 21 driver + 12 VBIOS active references, all equal to their blocks; the other 31
        // blocks are covered by no RIM and listed.
        assert_eq!(r.matched.len(), 33);
        assert!(r.mismatches.is_empty() && r.missing.is_empty());
        assert_eq!(r.uncovered.len(), 31);
        assert_eq!(v.rims.len(), 2);
        assert!(
            v.rims[0].contains("driver RIM 545.00 (21 active"),
            "{:?}",
            v.rims
        );

        // The 2025 report (driver 550.90.07) with these RIMs: refused for the versions.
        let ev25 = GpuEvidence::from_nvidia_files(
            crate::gpu::fixtures::R2025,
            crate::gpu::fixtures::C2025,
        )
        .unwrap();
        let nonce25 = GpuReport::parse(&ev25.report).unwrap().request.nonce;
        let v = gpu_verdict_with_rims(&ev25, &nonce25, AT, &roots, &rims);
        assert!(!v.verified);
        let text = v.errors.join("\n");
        assert!(
            text.contains("is for driver 545.00, but the report states driver 550.90.07"),
            "{text}"
        );
        assert!(text.contains("VBIOS 96.00.9F.00.01"), "{text}");

        // At 2026-12-01 the RIM signing chain has expired (the device chain has not).
        let later = 1_796_083_200;
        let v = gpu_verdict_with_rims(&ev, &nonce, later, &roots, &rims);
        assert!(!v.verified);
        assert!(
            v.errors
                .iter()
                .any(|e| e.starts_with("RIM driver.swidtag:")),
            "{:?}",
            v.errors
        );
        assert!(v.rims.is_empty());

        // A RIM that is not one: refused, named.
        let junk = vec![("junk.xml".to_string(), b"<a/>".to_vec())];
        let v = gpu_verdict_with_rims(&ev, &nonce, AT, &roots, &junk);
        assert!(!v.verified);
        assert!(
            v.errors.iter().any(|e| e.starts_with("RIM junk.xml:")),
            "{:?}",
            v.errors
        );
    }
}
