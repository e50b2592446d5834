//! The outcome of verifying one piece of evidence: facts plus every failed check.
//!
//! This is what `cocoon-verify --json` prints. The facts are filled in as far as the
//! evidence could be read even when verification fails, so a rejection still shows what
//! the evidence claimed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::Policy;
use crate::snp::verify::{verify_report, TrustedArk};
use crate::snp::SnpReport;
use crate::tdx::dcap::{verify_quote, TdxCollateral, TdxRoot};
use crate::tdx::TdxQuote;

/// One verification's result.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `tdx` or `sev-snp`.
    pub tee: &'static str,
    /// True only when every signature and every policy rule passed.
    pub verified: bool,
    /// Intel's TCB status name (TDX); `null` for SEV-SNP, which has none.
    pub tcb_status: Option<String>,
    pub debug: Option<bool>,
    /// `mrtd`, `rtmr0`..`rtmr3` (TDX) or `measurement` (SEV-SNP), lowercase hex.
    pub measurements: BTreeMap<&'static str, String>,
    pub report_data: Option<String>,
    pub advisories: Vec<String>,
    /// True when the evidence chains to a development root, not to Intel or AMD.
    pub simulated: bool,
    pub errors: Vec<String>,
    /// TEE-specific facts (SNP TCB, product, policy bits; TDX quote version, TD attributes).
    pub details: BTreeMap<&'static str, String>,
}

impl Verdict {
    fn new(tee: &'static str) -> Self {
        Self {
            tee,
            verified: false,
            tcb_status: None,
            debug: None,
            measurements: BTreeMap::new(),
            report_data: None,
            advisories: Vec::new(),
            simulated: false,
            errors: Vec::new(),
            details: BTreeMap::new(),
        }
    }

    fn fill_tdx(&mut self, q: &TdxQuote) {
        let b = &q.body;
        self.debug = Some(b.debug());
        self.measurements.insert("mrtd", hex::encode(b.mr_td));
        for (i, name) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().enumerate() {
            self.measurements.insert(name, hex::encode(b.rtmr[i]));
        }
        self.report_data = Some(hex::encode(b.report_data));
        self.details
            .insert("quote_version", q.header.version.to_string());
        self.details
            .insert("td_attributes", format!("{:#018x}", b.td_attributes_u64()));
        self.details
            .insert("tee_tcb_svn", hex::encode(b.tee_tcb_svn));
        self.details.insert("mr_seam", hex::encode(b.mr_seam));
    }

    fn fill_snp(&mut self, r: &SnpReport) {
        self.debug = Some(r.policy.debug_allowed());
        self.measurements
            .insert("measurement", hex::encode(r.measurement));
        self.report_data = Some(hex::encode(r.report_data));
        self.details.insert("report_version", r.version.to_string());
        self.details
            .insert("policy", format!("{:#018x}", r.policy.0));
        self.details.insert("vmpl", r.vmpl.to_string());
        self.details
            .insert("reported_tcb", r.reported_tcb.to_string());
        self.details.insert("host_data", hex::encode(r.host_data));
        self.details.insert("chip_id", hex::encode(r.chip_id));
    }
}

/// Verifies a TDX quote and applies `policy`.
pub fn tdx_verdict(
    raw: &[u8],
    collateral: &TdxCollateral,
    now: i64,
    roots: &[TdxRoot],
    policy: &Policy,
) -> Verdict {
    let mut v = Verdict::new("tdx");
    match TdxQuote::parse(raw) {
        Ok(q) => v.fill_tdx(&q),
        Err(e) => {
            v.errors.push(e.to_string());
            return v;
        }
    }
    let mut last_err = None;
    for root in roots {
        match verify_quote(raw, collateral, now, root) {
            Ok(facts) => {
                v.simulated = facts.simulated;
                v.tcb_status = Some(facts.tcb_status.clone());
                v.advisories = facts.advisory_ids.clone();
                v.errors
                    .extend(policy.check_tdx(&facts).iter().map(ToString::to_string));
                v.verified = v.errors.is_empty();
                return v;
            }
            Err(e) => last_err = Some(e),
        }
    }
    v.errors.push(
        last_err
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no trusted root configured".into()),
    );
    v
}

/// Verifies an SEV-SNP report and applies `policy`.
pub fn snp_verdict(
    raw: &[u8],
    vcek_der: &[u8],
    chain_pem: &[u8],
    now: i64,
    arks: &[TrustedArk],
    policy: &Policy,
) -> Verdict {
    let mut v = Verdict::new("sev-snp");
    match SnpReport::parse(raw) {
        Ok(r) => v.fill_snp(&r),
        Err(e) => {
            v.errors.push(e.to_string());
            return v;
        }
    }
    match verify_report(raw, vcek_der, chain_pem, now, arks) {
        Ok(facts) => {
            v.simulated = facts.simulated;
            v.details.insert("product", facts.product.to_string());
            v.details
                .insert("certified_tcb", facts.certified_tcb.to_string());
            v.errors
                .extend(policy.check_snp(&facts).iter().map(ToString::to_string));
            v.verified = v.errors.is_empty();
        }
        Err(e) => v.errors.push(e.to_string()),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::verify::amd_production_arks;
    use crate::tdx::dcap::{collateral_from_json, intel_sgx_root_ca};

    const QUOTE: &[u8] = include_bytes!("../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
    const COLLATERAL: &[u8] =
        include_bytes!("../tests/fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");
    const REPORT: &[u8] = include_bytes!("../tests/fixtures/snp/gosev_milan_attestation.bin");
    const VCEK: &[u8] = include_bytes!("../tests/fixtures/snp/gosev_milan_vcek.der");
    const MILAN: &[u8] = include_bytes!("../tests/fixtures/snp/amd_ask_ark_milan.pem");
    const TDX_AT: i64 = 1_751_328_000;

    fn intel() -> Vec<TdxRoot> {
        vec![TdxRoot {
            der: intel_sgx_root_ca(),
            simulated: false,
        }]
    }

    fn snp_at() -> i64 {
        let (_, c) = x509_parser::parse_x509_certificate(VCEK).unwrap();
        c.validity().not_before.timestamp() + 86_400
    }

    #[test]
    fn tdx_real_quote_under_default_and_pinned_policies() {
        let c = collateral_from_json(COLLATERAL).unwrap();
        let v = tdx_verdict(QUOTE, &c, TDX_AT, &intel(), &Policy::default());
        assert!(v.verified, "{:?}", v.errors);
        assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
        assert_eq!(v.debug, Some(false));
        let mrtd = hex::decode(&v.measurements["mrtd"]).unwrap();
        assert!(
            tdx_verdict(
                QUOTE,
                &c,
                TDX_AT,
                &intel(),
                &Policy::default().allow_mrtd(&mrtd)
            )
            .verified
        );
        let wrong = tdx_verdict(
            QUOTE,
            &c,
            TDX_AT,
            &intel(),
            &Policy::default().allow_mrtd(&[0; 48]),
        );
        assert!(!wrong.verified);
        assert!(wrong.errors[0].contains("tdx.mrtd"), "{:?}", wrong.errors);
        let rd = tdx_verdict(
            QUOTE,
            &c,
            TDX_AT,
            &intel(),
            &Policy::default().require_report_data(&[1; 64]),
        );
        assert!(rd.errors[0].contains("report_data"), "{:?}", rd.errors);
    }

    #[test]
    fn snp_real_report_is_refused_for_debug_unless_allowed() {
        let arks = amd_production_arks();
        let v = snp_verdict(REPORT, VCEK, MILAN, snp_at(), &arks, &Policy::default());
        assert!(!v.verified);
        assert_eq!(v.debug, Some(true));
        assert!(
            v.errors
                .iter()
                .any(|e| e.contains("debug must be off") && e.contains("0x00000000000b0000")),
            "{:?}",
            v.errors
        );
        // The sample is a 2021 debug guest, below Milan's default TCB floor: say so.
        let old_milan = || {
            Policy::default()
                .allow_debug(true)
                .min_snp_tcb(crate::policy::MinSnpTcb::NONE)
        };
        let v = snp_verdict(REPORT, VCEK, MILAN, snp_at(), &arks, &old_milan());
        assert!(v.verified, "{:?}", v.errors);
        assert_eq!(v.details["product"], "Milan");
        let m = hex::decode(&v.measurements["measurement"]).unwrap();
        let pinned = old_milan().allow_measurement(&m);
        assert!(snp_verdict(REPORT, VCEK, MILAN, snp_at(), &arks, &pinned).verified);
        let mut strict = old_milan();
        strict.snp.allow_smt = false;
        let v = snp_verdict(REPORT, VCEK, MILAN, snp_at(), &arks, &strict);
        assert!(
            v.errors.iter().any(|e| e.contains("snp.allow_smt")),
            "{:?}",
            v.errors
        );
    }
}
