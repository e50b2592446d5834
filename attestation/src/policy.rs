//! The reference-value policy a verifier enforces on top of the vendor's signatures.
//!
//! Signatures prove *which hardware* said something; the policy decides whether what it
//! said is acceptable: which measurements, which TCB statuses, debug or not. Defaults are
//! the safe ones: debug refused, only `UpToDate` accepted, no migration agent. Anything
//! looser must be written into the policy by name, and every rejection names the rule and
//! shows the observed and expected values.
//!
//! Files are TOML (`.toml`) or JSON (anything else); unknown keys are errors, so a typo
//! cannot silently disable a rule.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::snp::verify::SnpFacts;
use crate::tdx::dcap::TdxFacts;
use crate::{Error, Result};

/// Intel TCB status names a policy may list.
pub const TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
];

/// TEE names a policy may list in `accepted_tees`.
pub const TEES: &[&str] = &["tdx", "sev-snp"];

/// Minimum SEV-SNP TCB component levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinSnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    #[serde(default)]
    pub fmc: Option<u8>,
}

/// Rules for TDX evidence. Empty lists mean "any value".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxRules {
    pub mrtd: Vec<String>,
    pub rtmr0: Vec<String>,
    pub rtmr1: Vec<String>,
    pub rtmr2: Vec<String>,
    pub rtmr3: Vec<String>,
    /// Minimum TEE_TCB_SVN, 16 bytes hex, compared byte by byte.
    pub min_tee_tcb_svn: Option<String>,
}

/// Rules for SEV-SNP evidence. Empty lists mean "any value".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpRules {
    pub measurement: Vec<String>,
    pub host_data: Vec<String>,
    /// Required VMPL of the report (0 = the most privileged level).
    pub vmpl: Option<u32>,
    /// Accept guests whose policy allows SMT (on by default: most hosts run SMT).
    pub allow_smt: bool,
    /// Accept guests that may be associated with a migration agent.
    pub allow_migration_agent: bool,
    pub min_tcb: Option<MinSnpTcb>,
    pub min_guest_svn: Option<u32>,
}

impl Default for SnpRules {
    fn default() -> Self {
        Self {
            measurement: Vec::new(),
            host_data: Vec::new(),
            vmpl: None,
            allow_smt: true,
            allow_migration_agent: false,
            min_tcb: None,
            min_guest_svn: None,
        }
    }
}

/// A verification policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Accept debuggable guests (TDX TD_ATTRIBUTES.DEBUG, SNP POLICY.DEBUG).
    pub allow_debug: bool,
    /// TDX TCB statuses accepted, by Intel's names. Default: `["UpToDate"]`.
    pub accepted_tcb_statuses: Vec<String>,
    /// Advisory IDs (e.g. `INTEL-SA-00615`) that reject the evidence.
    pub rejected_advisories: Vec<String>,
    /// Exact REPORTDATA required (hex, 64 bytes).
    pub report_data: Option<String>,
    /// TEEs accepted (`tdx`, `sev-snp`). Default: both.
    pub accepted_tees: Vec<String>,
    /// SHA-384 digests of the measured runtime configs accepted (hex, 48 bytes); empty
    /// means any. The digest is the one RTMR3 / HOST_DATA commit to.
    pub config_digests: Vec<String>,
    /// Accept RA-TLS evidence whose image and config are not pinned (no MRTD/RTMR0-2 or
    /// SNP MEASUREMENT, no `config_digests`): any genuine TEE running *any* software then
    /// passes. Off by default; `--accept-any-image` sets it and the CLIs say so loudly.
    pub accept_any_image: bool,
    pub tdx: TdxRules,
    pub snp: SnpRules,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_debug: false,
            accepted_tcb_statuses: vec!["UpToDate".into()],
            rejected_advisories: Vec::new(),
            report_data: None,
            accepted_tees: TEES.iter().map(|t| t.to_string()).collect(),
            config_digests: Vec::new(),
            accept_any_image: false,
            tdx: TdxRules::default(),
            snp: SnpRules::default(),
        }
    }
}

fn bad_policy(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "policy",
        detail: detail.into(),
    }
}

fn check_hex_list(name: &str, values: &[String], len: usize) -> Result<()> {
    for v in values {
        let bytes =
            hex::decode(v).map_err(|e| bad_policy(format!("{name}: '{v}' is not hex: {e}")))?;
        if bytes.len() != len {
            return Err(bad_policy(format!(
                "{name}: '{v}' has {} bytes, expected {len}",
                bytes.len()
            )));
        }
    }
    Ok(())
}

fn listed(allowed: &[String], observed: &[u8]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&hex::encode(observed)))
}

fn rule_err(rule: &'static str, observed: String, expected: String) -> Error {
    Error::Policy {
        rule,
        observed,
        expected,
    }
}

impl Policy {
    /// Parses a TOML or JSON policy and checks its values.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad_policy(format!("cannot read {}: {e}", path.display())))?;
        let policy: Policy = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| bad_policy(format!("{}: {e}", path.display())))?
        } else {
            serde_json::from_str(&text)
                .map_err(|e| bad_policy(format!("{}: {e}", path.display())))?
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks names and hex lengths.
    pub fn validate(&self) -> Result<()> {
        for s in &self.accepted_tcb_statuses {
            if !TCB_STATUSES.contains(&s.as_str()) {
                return Err(bad_policy(format!(
                    "accepted_tcb_statuses: unknown status '{s}' (known: {})",
                    TCB_STATUSES.join(", ")
                )));
            }
        }
        for t in &self.accepted_tees {
            if !TEES.contains(&t.as_str()) {
                return Err(bad_policy(format!(
                    "accepted_tees: unknown TEE '{t}' (known: {})",
                    TEES.join(", ")
                )));
            }
        }
        for (name, list) in [
            ("config_digests", &self.config_digests),
            ("tdx.mrtd", &self.tdx.mrtd),
            ("tdx.rtmr0", &self.tdx.rtmr0),
            ("tdx.rtmr1", &self.tdx.rtmr1),
            ("tdx.rtmr2", &self.tdx.rtmr2),
            ("tdx.rtmr3", &self.tdx.rtmr3),
            ("snp.measurement", &self.snp.measurement),
        ] {
            check_hex_list(name, list, 48)?;
        }
        check_hex_list("snp.host_data", &self.snp.host_data, 32)?;
        if let Some(rd) = &self.report_data {
            check_hex_list("report_data", std::slice::from_ref(rd), 64)?;
        }
        if let Some(svn) = &self.tdx.min_tee_tcb_svn {
            check_hex_list("tdx.min_tee_tcb_svn", std::slice::from_ref(svn), 16)?;
        }
        Ok(())
    }

    /// Builder: accept debuggable guests.
    pub fn allow_debug(mut self, allow: bool) -> Self {
        self.allow_debug = allow;
        self
    }

    /// Builder: also accept this TCB status.
    pub fn accept_tcb_status(mut self, status: &str) -> Self {
        self.accepted_tcb_statuses.push(status.to_string());
        self
    }

    /// Builder: require this MRTD (may be called several times).
    pub fn allow_mrtd(mut self, mrtd: &[u8]) -> Self {
        self.tdx.mrtd.push(hex::encode(mrtd));
        self
    }

    /// Builder: require this SNP MEASUREMENT (may be called several times).
    pub fn allow_measurement(mut self, measurement: &[u8]) -> Self {
        self.snp.measurement.push(hex::encode(measurement));
        self
    }

    /// Builder: require exactly this REPORTDATA.
    pub fn require_report_data(mut self, report_data: &[u8]) -> Self {
        self.report_data = Some(hex::encode(report_data));
        self
    }

    /// The rule on the measured runtime config, which both TEEs share: `None` when the
    /// digest is acceptable.
    pub fn check_config_digest(&self, config_digest: &[u8]) -> Option<Error> {
        (!listed(&self.config_digests, config_digest)).then(|| {
            rule_err(
                "config_digests",
                hex::encode(config_digest),
                format!("one of [{}]", self.config_digests.join(", ")),
            )
        })
    }

    /// The reference values this policy leaves open for `tee` (`tdx` or `sev-snp`): what
    /// an operator could change without the verifier noticing.
    pub fn unpinned(&self, tee: &str) -> Vec<&'static str> {
        let mut open = Vec::new();
        let image: &[(&'static str, &Vec<String>)] = match tee {
            "tdx" => &[
                ("tdx.mrtd", &self.tdx.mrtd),
                ("tdx.rtmr0", &self.tdx.rtmr0),
                ("tdx.rtmr1", &self.tdx.rtmr1),
                ("tdx.rtmr2", &self.tdx.rtmr2),
            ],
            _ => &[("snp.measurement", &self.snp.measurement)],
        };
        for (name, list) in image {
            if list.is_empty() {
                open.push(*name);
            }
        }
        if self.config_digests.is_empty() {
            open.push("config_digests");
        }
        open
    }

    /// Refuses RA-TLS evidence checked against no reference values, unless
    /// `accept_any_image` says otherwise.
    pub fn check_reference_values(&self, tee: &str) -> Option<Error> {
        let open = self.unpinned(tee);
        (!open.is_empty() && !self.accept_any_image).then(|| {
            rule_err(
                "reference values",
                format!("nothing pinned for {}", open.join(", ")),
                "a signed manifest (--manifest) or policy pins for the image and the config, \
                 or --accept-any-image to accept any software in a genuine TEE"
                    .into(),
            )
        })
    }

    fn check_tee(&self, tee: &str, errors: &mut Vec<Error>) {
        if !self.accepted_tees.iter().any(|t| t == tee) {
            errors.push(rule_err(
                "accepted_tees",
                tee.to_string(),
                format!("one of [{}]", self.accepted_tees.join(", ")),
            ));
        }
    }

    fn check_common(
        &self,
        debug: bool,
        debug_what: String,
        report_data: &[u8],
        errors: &mut Vec<Error>,
    ) {
        if debug && !self.allow_debug {
            errors.push(rule_err(
                "debug must be off",
                debug_what,
                "debug bit clear (or allow_debug = true)".into(),
            ));
        }
        if let Some(rd) = &self.report_data {
            if !rd.eq_ignore_ascii_case(&hex::encode(report_data)) {
                errors.push(rule_err(
                    "report_data",
                    hex::encode(report_data),
                    rd.clone(),
                ));
            }
        }
    }

    /// Every rule a verified TDX quote breaks (empty when it is acceptable).
    pub fn check_tdx(&self, facts: &TdxFacts) -> Vec<Error> {
        let mut errors = Vec::new();
        self.check_tee("tdx", &mut errors);
        let body = &facts.quote.body;
        self.check_common(
            body.debug(),
            format!(
                "TD_ATTRIBUTES = {:#018x} (DEBUG set)",
                body.td_attributes_u64()
            ),
            &body.report_data,
            &mut errors,
        );
        if !self
            .accepted_tcb_statuses
            .iter()
            .any(|s| s == &facts.tcb_status)
        {
            errors.push(rule_err(
                "accepted_tcb_statuses",
                facts.tcb_status.clone(),
                format!("one of [{}]", self.accepted_tcb_statuses.join(", ")),
            ));
        }
        for id in &facts.advisory_ids {
            if self
                .rejected_advisories
                .iter()
                .any(|r| r.eq_ignore_ascii_case(id))
            {
                errors.push(rule_err(
                    "rejected_advisories",
                    id.clone(),
                    "not listed in rejected_advisories".into(),
                ));
            }
        }
        let registers: [(&'static str, &[String], &[u8]); 5] = [
            ("tdx.mrtd", &self.tdx.mrtd, &body.mr_td),
            ("tdx.rtmr0", &self.tdx.rtmr0, &body.rtmr[0]),
            ("tdx.rtmr1", &self.tdx.rtmr1, &body.rtmr[1]),
            ("tdx.rtmr2", &self.tdx.rtmr2, &body.rtmr[2]),
            ("tdx.rtmr3", &self.tdx.rtmr3, &body.rtmr[3]),
        ];
        for (rule, allowed, observed) in registers {
            if !listed(allowed, observed) {
                errors.push(rule_err(
                    rule,
                    hex::encode(observed),
                    format!("one of [{}]", allowed.join(", ")),
                ));
            }
        }
        if let Some(min) = self
            .tdx
            .min_tee_tcb_svn
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
        {
            if body
                .tee_tcb_svn
                .iter()
                .zip(&min)
                .any(|(have, need)| have < need)
            {
                errors.push(rule_err(
                    "tdx.min_tee_tcb_svn",
                    hex::encode(body.tee_tcb_svn),
                    format!(">= {}", hex::encode(&min)),
                ));
            }
        }
        errors
    }

    /// Every rule a verified SNP report breaks (empty when it is acceptable).
    pub fn check_snp(&self, facts: &SnpFacts) -> Vec<Error> {
        let mut errors = Vec::new();
        self.check_tee("sev-snp", &mut errors);
        let r = &facts.report;
        self.check_common(
            r.policy.debug_allowed(),
            format!("POLICY = {:#018x} (DEBUG set)", r.policy.0),
            &r.report_data,
            &mut errors,
        );
        if !listed(&self.snp.measurement, &r.measurement) {
            errors.push(rule_err(
                "snp.measurement",
                hex::encode(r.measurement),
                format!("one of [{}]", self.snp.measurement.join(", ")),
            ));
        }
        if !listed(&self.snp.host_data, &r.host_data) {
            errors.push(rule_err(
                "snp.host_data",
                hex::encode(r.host_data),
                format!("one of [{}]", self.snp.host_data.join(", ")),
            ));
        }
        if let Some(vmpl) = self.snp.vmpl {
            if r.vmpl != vmpl {
                errors.push(rule_err("snp.vmpl", r.vmpl.to_string(), vmpl.to_string()));
            }
        }
        if r.policy.smt_allowed() && !self.snp.allow_smt {
            errors.push(rule_err(
                "snp.allow_smt",
                "POLICY.SMT set".into(),
                "SMT not allowed".into(),
            ));
        }
        if r.policy.migrate_ma_allowed() && !self.snp.allow_migration_agent {
            errors.push(rule_err(
                "snp.allow_migration_agent",
                "POLICY.MIGRATE_MA set".into(),
                "no migration agent (or allow_migration_agent = true)".into(),
            ));
        }
        if let Some(min) = &self.snp.min_tcb {
            let min_tcb = crate::snp::TcbVersion {
                fmc: min.fmc,
                bootloader: min.bootloader,
                tee: min.tee,
                snp: min.snp,
                microcode: min.microcode,
            };
            if !r.reported_tcb.at_least(&min_tcb) {
                errors.push(rule_err(
                    "snp.min_tcb",
                    r.reported_tcb.to_string(),
                    format!(">= {min_tcb}"),
                ));
            }
        }
        if let Some(min) = self.snp.min_guest_svn {
            if r.guest_svn < min {
                errors.push(rule_err(
                    "snp.min_guest_svn",
                    r.guest_svn.to_string(),
                    format!(">= {min}"),
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_policy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy.toml");
        let p = Policy::from_file(&path).unwrap();
        assert_eq!(p.tdx.mrtd.len(), 1);
        assert_eq!(p.snp.min_tcb.as_ref().map(|t| t.microcode), Some(68));
    }

    #[test]
    fn defaults_are_strict() {
        let p = Policy::default();
        assert!(!p.allow_debug);
        assert_eq!(p.accepted_tcb_statuses, vec!["UpToDate"]);
        assert!(!p.snp.allow_migration_agent);
    }

    #[test]
    fn parses_toml_and_json_and_rejects_typos_and_bad_values() {
        let dir = std::env::temp_dir().join(format!("cocoon-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("p.toml");
        std::fs::write(&toml_path, "allow_debug = true\naccepted_tcb_statuses = [\"UpToDate\", \"OutOfDate\"]\n[snp]\nvmpl = 0\n").unwrap();
        let p = Policy::from_file(&toml_path).unwrap();
        assert!(p.allow_debug);
        assert_eq!(p.snp.vmpl, Some(0));
        assert!(p.snp.allow_smt, "unset keys keep their defaults");

        let json_path = dir.join("p.json");
        std::fs::write(&json_path, r#"{"alow_debug": true}"#).unwrap();
        let err = Policy::from_file(&json_path).unwrap_err().to_string();
        assert!(err.contains("alow_debug"), "{err}");
        std::fs::write(&json_path, r#"{"accepted_tcb_statuses": ["Fine"]}"#).unwrap();
        assert!(Policy::from_file(&json_path)
            .unwrap_err()
            .to_string()
            .contains("unknown status"));
        std::fs::write(&json_path, r#"{"tdx": {"mrtd": ["abcd"]}}"#).unwrap();
        assert!(Policy::from_file(&json_path)
            .unwrap_err()
            .to_string()
            .contains("expected 48"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
