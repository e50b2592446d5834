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

use std::collections::BTreeMap;
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

impl MinSnpTcb {
    /// No floor at all: only for old sample evidence, written into a policy by name.
    pub const NONE: MinSnpTcb = MinSnpTcb {
        bootloader: 0,
        tee: 0,
        snp: 0,
        microcode: 0,
        fmc: None,
    };

    fn as_tcb(&self) -> crate::snp::TcbVersion {
        crate::snp::TcbVersion {
            fmc: self.fmc,
            bootloader: self.bootloader,
            tee: self.tee,
            snp: self.snp,
            microcode: self.microcode,
        }
    }
}

/// The default SEV-SNP TCB floor of a product line, applied to REPORTED_TCB and
/// LAUNCH_TCB when the policy sets no `snp.min_tcb`. `None` where no floor is known (the
/// evidence is then refused until the policy names one).
///
/// Source: AMD-SB-3019 (CVE-2024-56161, the microcode signature bypass, Feb 2025),
/// whose fixed firmware also carries the BadRAM mitigation (AMD-SB-3015, CVE-2024-21944):
/// - Milan: bootloader 4, SNP 24 (0x18), microcode 219 (0xDB), as the minimum versions
///   mitigating AMD-SB-3019 are published for SEV-SNP guests (Google Cloud's bulletin
///   GCP-2025-007 quotes them). The real Milan sample report in the fixtures (bootloader
///   2, SNP 5, microcode 68, 2021 firmware, debug guest) is below it: tests that use it
///   lower the floor by name.
/// - Genoa: SNP 0x17 (23), microcode 0x54 (84) (AMD-SB-3019's Genoa values); the bulletin
///   names no bootloader/TEE floor, so those are 0. Both real Genoa reports in the
///   fixtures (SNP 25 and 23, microcode 84) meet it. Later bulletins (AMD-SB-3020,
///   AMD-SB-3027) raise Genoa further; a policy or manifest raises the floor for them.
/// - Turin: no value verified here: Turin evidence needs `snp.min_tcb` in the policy.
pub fn default_min_snp_tcb(product: &str) -> Option<MinSnpTcb> {
    match product {
        "Milan" => Some(MinSnpTcb {
            bootloader: 4,
            tee: 0,
            snp: 24,
            microcode: 219,
            fmc: None,
        }),
        "Genoa" => Some(MinSnpTcb {
            bootloader: 0,
            tee: 0,
            snp: 23,
            microcode: 84,
            fmc: None,
        }),
        _ => None,
    }
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
    /// Allowed TD_ATTRIBUTES values (the 64-bit integer in hex, e.g. `"0x10000000"`);
    /// empty means any value that passes the debug rule (which refuses every TUD bit:
    /// DEBUG and the profiling bits) and dcap-qvl's own checks.
    pub td_attributes: Vec<String>,
    /// Allowed XFAM values (64-bit integer in hex, e.g. `"0x602e7"`); empty means any.
    pub xfam: Vec<String>,
    /// Allowed MRCONFIGID values (48-byte hex). These three registers are chosen by
    /// whoever launches the TD and are not part of MRTD: empty means they must be zero.
    pub mr_config_id: Vec<String>,
    /// Allowed MROWNER values (48-byte hex); empty means it must be zero.
    pub mr_owner: Vec<String>,
    /// Allowed MROWNERCONFIG values (48-byte hex); empty means it must be zero.
    pub mr_owner_config: Vec<String>,
    /// Minimum `tcbEvaluationDataNumber` of the collateral: refuses TCB info and QE
    /// identity issued before a TCB recovery (they stay unexpired for up to 30 days).
    pub min_tcb_eval_data_number: Option<u32>,
    /// Allowed platforms by PPID (16-byte hex, from the PCK certificate); empty: any.
    pub ppid: Vec<String>,
    /// Allowed platform models by FMSPC (6-byte hex, any case); empty: any.
    pub fmspc: Vec<String>,
}

/// Rules for SEV-SNP evidence. Empty lists mean "any value".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpRules {
    pub measurement: Vec<String>,
    pub host_data: Vec<String>,
    /// Required VMPL of the report (0 = the most privileged level, the default: a report
    /// from a less privileged level does not speak for the guest's firmware and kernel).
    pub vmpl: Option<u32>,
    /// Accept guests whose policy allows SMT (on by default: most hosts run SMT).
    pub allow_smt: bool,
    /// Accept guests that may be associated with a migration agent.
    pub allow_migration_agent: bool,
    /// Floor for REPORTED_TCB and LAUNCH_TCB. Unset: the product's default
    /// ([`default_min_snp_tcb`]); products without a default are refused.
    pub min_tcb: Option<MinSnpTcb>,
    pub min_guest_svn: Option<u32>,
    /// Require PLATFORM_INFO.ALIAS_CHECK_COMPLETE (bit 5, the BadRAM mitigation:
    /// memory alias checking ran and found none) in reports of version 3 and later; a
    /// version 2 report predates the bit. Default: true.
    pub require_alias_check: bool,
    /// Require PLATFORM_INFO.TSME_EN (bit 1). Default: false.
    pub require_tsme: bool,
    /// Require POLICY.SINGLE_SOCKET (bit 20): the guest may run on one socket only.
    /// Default: false.
    pub require_single_socket: bool,
    /// Minimum firmware ABI the guest's POLICY demands (`"major.minor"`, e.g. `"1.55"`):
    /// a guest launched with a lower ABI_MAJOR/ABI_MINOR accepts older firmware.
    pub min_abi: Option<String>,
    /// Allowed chips by CHIP_ID (64-byte hex); empty: any. VLEK-signed reports and
    /// reports with MASK_CHIP_ID carry a zero CHIP_ID, which a non-empty list refuses.
    pub chip_id: Vec<String>,
}

impl Default for SnpRules {
    fn default() -> Self {
        Self {
            measurement: Vec::new(),
            host_data: Vec::new(),
            vmpl: Some(0),
            allow_smt: true,
            allow_migration_agent: false,
            min_tcb: None,
            min_guest_svn: None,
            require_alias_check: true,
            require_tsme: false,
            require_single_socket: false,
            min_abi: None,
            chip_id: Vec::new(),
        }
    }
}

/// Rules for vTPM evidence ([`crate::vtpm`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VtpmRules {
    /// Refuse evidence without a vTPM quote.
    pub require: bool,
    /// SHA-256-bank PCRs that must be quoted, index (as text, e.g. `"7"`) → accepted
    /// values (hex, 32 bytes); an empty list only requires the PCR to be quoted.
    pub pcrs: BTreeMap<String, Vec<String>>,
}

impl VtpmRules {
    /// The required PCR indices with their accepted values, checked for shape.
    pub fn parsed(&self) -> Result<Vec<(u8, &[String])>> {
        self.pcrs
            .iter()
            .map(|(index, values)| {
                let i: u8 = index.parse().ok().filter(|i| *i <= 23).ok_or_else(|| {
                    bad_policy(format!("vtpm.pcrs: '{index}' is not a PCR index 0-23"))
                })?;
                check_hex_list(&format!("vtpm.pcrs.{index}"), values, 32)?;
                Ok((i, values.as_slice()))
            })
            .collect()
    }

    /// Every rule a verified quote (or its absence) breaks.
    pub fn check(&self, quote: Option<&crate::vtpm::VerifiedQuote>) -> Vec<Error> {
        let mut errors = Vec::new();
        let Some(quote) = quote else {
            if self.require || !self.pcrs.is_empty() {
                errors.push(rule_err(
                    "vtpm.require",
                    "no vTPM quote in the evidence".into(),
                    "a vTPM quote (a guest with a vTPM, started with --vtpm)".into(),
                ));
            }
            return errors;
        };
        let rules = match self.parsed() {
            Ok(rules) => rules,
            Err(e) => return vec![e],
        };
        for (index, accepted) in rules {
            match quote.sha256_pcr(index) {
                None => errors.push(rule_err(
                    "vtpm.pcrs",
                    format!("PCR {index} not quoted"),
                    format!("PCR {index} (SHA-256 bank) in the quote"),
                )),
                Some(value) if !listed(accepted, value) => errors.push(rule_err(
                    "vtpm.pcrs",
                    format!("PCR {index} = {}", hex::encode(value)),
                    format!("one of [{}]", accepted.join(", ")),
                )),
                Some(_) => {}
            }
        }
        errors
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
    /// Refuse a guest whose RA-TLS evidence binds no GPU evidence (a CPU-only guest, or
    /// one whose GPU is outside the proof). When the evidence binds GPU evidence, clients
    /// verify it whether or not this is set.
    pub require_gpu: bool,
    pub vtpm: VtpmRules,
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
            require_gpu: false,
            vtpm: VtpmRules::default(),
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

/// A 64-bit value written in hex, with or without `0x`.
pub fn parse_u64_hex(text: &str) -> std::result::Result<u64, String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|e| format!("'{text}' is not a 64-bit hex value: {e}"))
}

/// `"major.minor"`, each 0..=255.
fn parse_abi(text: &str) -> std::result::Result<(u8, u8), String> {
    let (major, minor) = text
        .split_once('.')
        .ok_or_else(|| format!("'{text}' is not major.minor"))?;
    let number = |n: &str| n.parse::<u8>().map_err(|e| format!("'{text}': {e}"));
    Ok((number(major)?, number(minor)?))
}

fn listed_u64(allowed: &[String], observed: u64) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| parse_u64_hex(a).is_ok_and(|v| v == observed))
}

/// Empty list: the value must be zero; otherwise it must be listed.
fn zero_or_listed(allowed: &[String], observed: &[u8]) -> bool {
    if allowed.is_empty() {
        observed.iter().all(|b| *b == 0)
    } else {
        listed(allowed, observed)
    }
}

fn listed(allowed: &[String], observed: &[u8]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&hex::encode(observed)))
}

/// Adds a `rule` error when `observed` is not in a non-empty `allowed` list.
fn require_listed(
    errors: &mut Vec<Error>,
    rule: &'static str,
    allowed: &[String],
    observed: &[u8],
) {
    if !listed(allowed, observed) {
        errors.push(rule_err(
            rule,
            hex::encode(observed),
            format!("one of [{}]", allowed.join(", ")),
        ));
    }
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
        self.vtpm.parsed()?;
        for (name, list) in [
            ("tdx.mr_config_id", &self.tdx.mr_config_id),
            ("tdx.mr_owner", &self.tdx.mr_owner),
            ("tdx.mr_owner_config", &self.tdx.mr_owner_config),
        ] {
            check_hex_list(name, list, 48)?;
        }
        check_hex_list("tdx.ppid", &self.tdx.ppid, 16)?;
        check_hex_list("tdx.fmspc", &self.tdx.fmspc, 6)?;
        check_hex_list("snp.chip_id", &self.snp.chip_id, 64)?;
        if let Some(abi) = &self.snp.min_abi {
            parse_abi(abi).map_err(|e| bad_policy(format!("snp.min_abi: {e}")))?;
        }
        for (name, list) in [
            ("tdx.td_attributes", &self.tdx.td_attributes),
            ("tdx.xfam", &self.tdx.xfam),
        ] {
            for v in list {
                parse_u64_hex(v).map_err(|e| bad_policy(format!("{name}: {e}")))?;
            }
        }
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

    /// Builder: the SEV-SNP TCB floor (replaces the product defaults).
    pub fn min_snp_tcb(mut self, min: MinSnpTcb) -> Self {
        self.snp.min_tcb = Some(min);
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

    /// The GPU rule: `None` when the evidence binds GPU evidence or the policy does not
    /// require it.
    pub fn check_gpu_bound(&self, gpu_evidence_digest: Option<&[u8]>) -> Option<Error> {
        (self.require_gpu && gpu_evidence_digest.is_none()).then(|| {
            rule_err(
                "require_gpu",
                "no GPU evidence bound in the RA-TLS evidence (a CPU-only guest)".into(),
                "a bound GPU evidence digest (a guest serving from an attested GPU)".into(),
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
                "TD_ATTRIBUTES = {:#018x} ({} set: the TD is under debug)",
                body.td_attributes_u64(),
                body.debug_bits().join(", ")
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
        if !listed_u64(&self.tdx.td_attributes, body.td_attributes_u64()) {
            errors.push(rule_err(
                "tdx.td_attributes",
                format!("{:#x}", body.td_attributes_u64()),
                format!("one of [{}]", self.tdx.td_attributes.join(", ")),
            ));
        }
        if !listed_u64(&self.tdx.xfam, body.xfam_u64()) {
            errors.push(rule_err(
                "tdx.xfam",
                format!("{:#x}", body.xfam_u64()),
                format!("one of [{}]", self.tdx.xfam.join(", ")),
            ));
        }
        let owner: [(&'static str, &[String], &[u8]); 3] = [
            (
                "tdx.mr_config_id",
                &self.tdx.mr_config_id,
                &body.mr_config_id,
            ),
            ("tdx.mr_owner", &self.tdx.mr_owner, &body.mr_owner),
            (
                "tdx.mr_owner_config",
                &self.tdx.mr_owner_config,
                &body.mr_owner_config,
            ),
        ];
        for (rule, allowed, observed) in owner {
            if !zero_or_listed(allowed, observed) {
                let expected = if allowed.is_empty() {
                    "all zero (or pinned in the policy)".to_string()
                } else {
                    format!("one of [{}]", allowed.join(", "))
                };
                errors.push(rule_err(rule, hex::encode(observed), expected));
            }
        }
        if let Some(min) = self.tdx.min_tcb_eval_data_number {
            if facts.tcb_eval_data_number < min {
                errors.push(rule_err(
                    "tdx.min_tcb_eval_data_number",
                    facts.tcb_eval_data_number.to_string(),
                    format!(">= {min}"),
                ));
            }
        }
        require_listed(&mut errors, "tdx.ppid", &self.tdx.ppid, &facts.ppid);
        require_listed(&mut errors, "tdx.fmspc", &self.tdx.fmspc, &facts.fmspc);
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

    /// PLATFORM_INFO, as far as the report's version defines its bits.
    fn check_snp_platform(&self, r: &crate::snp::SnpReport, errors: &mut Vec<Error>) {
        use crate::snp::report::{
            PLATFORM_ALIAS_CHECK_COMPLETE, PLATFORM_SMT_EN, PLATFORM_TSME_EN,
        };
        if r.platform_info & PLATFORM_SMT_EN != 0 && !self.snp.allow_smt {
            errors.push(rule_err(
                "snp.allow_smt",
                "PLATFORM_INFO.SMT_EN set".into(),
                "SMT not enabled on the platform".into(),
            ));
        }
        if self.snp.require_alias_check
            && r.version >= 3
            && r.platform_info & PLATFORM_ALIAS_CHECK_COMPLETE == 0
        {
            errors.push(rule_err(
                "snp.require_alias_check",
                format!(
                    "PLATFORM_INFO = {:#x}: ALIAS_CHECK_COMPLETE clear (no BadRAM alias check)",
                    r.platform_info
                ),
                "ALIAS_CHECK_COMPLETE set (or require_alias_check = false)".into(),
            ));
        }
        if self.snp.require_tsme && r.platform_info & PLATFORM_TSME_EN == 0 {
            errors.push(rule_err(
                "snp.require_tsme",
                format!("PLATFORM_INFO = {:#x}: TSME_EN clear", r.platform_info),
                "TSME_EN set".into(),
            ));
        }
    }

    /// The TCB floor, on REPORTED_TCB and LAUNCH_TCB.
    fn check_snp_tcb(&self, facts: &SnpFacts, errors: &mut Vec<Error>) {
        let r = &facts.report;
        // CPUID (signed, version >= 3) names the product; version 2 reports have only the
        // ARK that anchors the chain ("Milan", or "Milan (development root)").
        let product = r.product().unwrap_or_else(|| {
            facts
                .product
                .split_whitespace()
                .next()
                .unwrap_or(facts.product)
        });
        let (floor, source) = match &self.snp.min_tcb {
            Some(min) => (min.clone(), "snp.min_tcb"),
            None => match default_min_snp_tcb(product) {
                Some(min) => (min, "the product's default floor"),
                None => {
                    errors.push(rule_err(
                        "snp.min_tcb",
                        format!("{product}: no default TCB floor is known for it"),
                        "a floor named in the policy (snp.min_tcb)".into(),
                    ));
                    return;
                }
            },
        };
        let floor = floor.as_tcb();
        for (name, tcb) in [
            ("REPORTED_TCB", r.reported_tcb),
            ("LAUNCH_TCB", r.launch_tcb),
        ] {
            if !tcb.at_least(&floor) {
                errors.push(rule_err(
                    "snp.min_tcb",
                    format!("{name} {tcb} ({product})"),
                    format!(">= {floor} ({source})"),
                ));
            }
        }
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
        require_listed(
            &mut errors,
            "snp.measurement",
            &self.snp.measurement,
            &r.measurement,
        );
        require_listed(
            &mut errors,
            "snp.host_data",
            &self.snp.host_data,
            &r.host_data,
        );
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
        if self.snp.require_single_socket && !r.policy.single_socket() {
            errors.push(rule_err(
                "snp.require_single_socket",
                format!("POLICY = {:#018x}: SINGLE_SOCKET clear", r.policy.0),
                "SINGLE_SOCKET set".into(),
            ));
        }
        if let Some(Ok(min)) = self.snp.min_abi.as_deref().map(parse_abi) {
            let have = (r.policy.abi_major(), r.policy.abi_minor());
            if have < min {
                errors.push(rule_err(
                    "snp.min_abi",
                    format!("POLICY ABI {}.{}", have.0, have.1),
                    format!(">= {}.{}", min.0, min.1),
                ));
            }
        }
        if r.policy.migrate_ma_allowed() && !self.snp.allow_migration_agent {
            errors.push(rule_err(
                "snp.allow_migration_agent",
                "POLICY.MIGRATE_MA set".into(),
                "no migration agent (or allow_migration_agent = true)".into(),
            ));
        }
        self.check_snp_platform(r, &mut errors);
        self.check_snp_tcb(facts, &mut errors);
        require_listed(&mut errors, "snp.chip_id", &self.snp.chip_id, &r.chip_id);
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
        assert_eq!(p.snp.min_tcb.as_ref().map(|t| t.microcode), Some(219));
        assert_eq!(p.tdx.xfam, vec!["0x602e7"]);
    }

    #[test]
    fn defaults_are_strict() {
        let p = Policy::default();
        assert!(!p.allow_debug);
        assert_eq!(p.accepted_tcb_statuses, vec!["UpToDate"]);
        assert!(!p.snp.allow_migration_agent);
        assert_eq!(p.snp.vmpl, Some(0));
        assert!(p.snp.require_alias_check);
        assert_eq!(p.snp.min_tcb, None, "the per-product floors apply");
        assert!(default_min_snp_tcb("Milan").is_some() && default_min_snp_tcb("Genoa").is_some());
        assert_eq!(default_min_snp_tcb("Turin"), None);
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
