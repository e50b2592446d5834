//! `cocoon-verify tpm-quote`: vTPM evidence recorded on a cloud VM, checked offline.
//!
//! Azure confidential VMs (the JSON Azure vTPM attesters write, versions 0-2): the TPM
//! quote's signature by the AK the HCL report's runtime data names, the nonce, the PCR
//! digest, the hardware REPORTDATA's commitment to that runtime data, then the hardware
//! report itself (SEV-SNP: VCEK → ASK → pinned ARK; TDX: the TD quote with DCAP
//! collateral) under the policy, and the policy's PCR rules.
//!
//! Google Compute Engine (go-tpm-tools' `Attestation` protobuf): the AK certificate to
//! Google's pinned EK/AK root, the AK it certifies, every bank's quote. Such evidence
//! carries no TEE report, so it is refused unless `--accept-vtpm-without-tee` asks for the
//! vTPM part alone.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cocoon_attestation::collateral::SnpCollateral;
use cocoon_attestation::pem::certificate_pem;
use cocoon_attestation::vtpm::azure::AzureEvidence;
use cocoon_attestation::vtpm::hcl::HclReportType;
use cocoon_attestation::{CollateralStore, Verdict, VtpmFacts};

use super::evidence::{usage, verifier, JudgeArgs};
use crate::output::{finish, print_verdict_text, read_input, say, state_word};

/// `tpm-quote` arguments.
#[derive(clap::Args)]
pub struct TpmQuoteArgs {
    /// The evidence file: Azure's JSON (tpm_quote {signature, message, pcrs}, hcl_report,
    /// and vcek (SEV-SNP) or td_quote (TDX)), or a GCE attestation (go-tpm-tools protobuf).
    evidence: PathBuf,
    /// The nonce the quote must carry as qualifying data, hex.
    #[arg(
        long,
        value_name = "HEX",
        conflicts_with = "nonce_text",
        required_unless_present = "nonce_text"
    )]
    nonce: Option<String>,
    /// The nonce as text (its UTF-8 bytes).
    #[arg(long, value_name = "TEXT")]
    nonce_text: Option<String>,
    /// SEV-SNP: AMD's ASK and ARK, PEM (the VCEK comes from the evidence).
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    /// TDX: DCAP collateral bundle for the TD quote.
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
    /// DANGER: accept GCE vTPM evidence that carries no TEE report (a Google vTPM is the
    /// hypervisor's: it shows the boot chain Google's host measured, not confidentiality).
    #[arg(long)]
    accept_vtpm_without_tee: bool,
}

pub fn run(args: &TpmQuoteArgs) -> Result<ExitCode, ExitCode> {
    let source = args.evidence.display().to_string();
    let bytes = read_input(&args.evidence, "vTPM evidence")?;
    let nonce = match (&args.nonce, &args.nonce_text) {
        (Some(hex_nonce), _) => {
            hex::decode(hex_nonce).map_err(|e| usage(format!("--nonce: not hex: {e}")))?
        }
        (None, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => return Err(usage("give --nonce HEX or --nonce-text TEXT")),
    };
    let store = Arc::new(CollateralStore::new());
    let verifier = verifier(&args.judge.accept, store.clone())?;
    let policy = verifier.policy();
    let refused = |errors: Vec<String>| {
        let verdict = Verdict::refused_with("vtpm", errors);
        print(&verdict, None, args.judge.json, &source)
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(gce(args, &bytes, &nonce, policy, &source));
    }
    let evidence = match AzureEvidence::from_json(&bytes) {
        Ok(e) => e,
        Err(e) => return Ok(refused(vec![e.to_string()])),
    };
    let checked = match evidence.check(&nonce) {
        Ok(c) => c,
        Err(e) => return Ok(refused(vec![e.to_string()])),
    };
    let verdict = match checked.hcl.report_type {
        HclReportType::SevSnp => {
            let Some(chain) = &args.chain else {
                return Err(usage(
                    "SEV-SNP evidence: give --chain (AMD's ASK and ARK, PEM)",
                ));
            };
            let Some(vcek) = &evidence.vcek_der else {
                return Ok(refused(vec!["the evidence carries no VCEK".into()]));
            };
            let certificates = SnpCollateral {
                vcek: certificate_pem(vcek),
                cert_chain: String::from_utf8_lossy(&read_input(chain, "certificate chain")?)
                    .into_owned(),
            };
            verifier.snp_report_verdict(
                &checked.hcl.hardware_report,
                Some(&certificates),
                args.judge.at,
            )
        }
        HclReportType::Tdx => {
            let Some(collateral) = &args.collateral else {
                return Err(usage(
                    "TDX evidence: give --collateral (the TD quote's DCAP bundle)",
                ));
            };
            store.add_tdx_bundle_file(collateral).map_err(usage)?;
            let raw = evidence.td_quote.clone().unwrap_or_default();
            verifier.tdx_quote_verdict(&raw, args.judge.at)
        }
    };
    let mut verdict = verdict;
    let pcr_errors: Vec<String> = policy
        .vtpm
        .check(Some(&checked.quote))
        .iter()
        .map(ToString::to_string)
        .collect();
    if !pcr_errors.is_empty() {
        verdict.verified = false;
        verdict.errors.extend(pcr_errors);
    }
    let facts = VtpmFacts::of("azure-hcl", &checked.quote);
    Ok(print(&verdict, Some(&facts), args.judge.json, &source))
}

fn print(verdict: &Verdict, vtpm: Option<&VtpmFacts>, json: bool, source: &str) -> ExitCode {
    if json {
        let value = serde_json::json!({ "hardware": verdict, "vtpm": vtpm });
        say!("{value}");
    } else {
        print_verdict_text(verdict, source);
        if let Some(facts) = vtpm {
            print_vtpm(facts);
        }
    }
    finish(source, &verdict.errors, verdict.verified)
}

/// The vTPM lines of a summary.
pub fn print_vtpm(vtpm: &VtpmFacts) {
    say!(
        "  vtpm           quote verified; AK bound by {} (AK SHA-256 {})",
        vtpm.binding,
        vtpm.ak_sha256
    );
    say!(
        "  vtpm firmware  {} clock {} ms",
        vtpm.firmware_version,
        vtpm.clock_ms
    );
    for (index, value) in &vtpm.pcrs {
        say!("  pcr{index:<11} {value}");
    }
}

/// GCE: go-tpm-tools' `Attestation` protobuf.
fn gce(
    args: &TpmQuoteArgs,
    bytes: &[u8],
    nonce: &[u8],
    policy: &cocoon_attestation::Policy,
    source: &str,
) -> ExitCode {
    use cocoon_attestation::vtpm::google::GceAttestation;
    let checked = GceAttestation::from_protobuf(bytes).and_then(|a| a.check(nonce, args.judge.at));
    let (mut errors, facts, chain) = match &checked {
        Ok(c) => {
            let sha256 = c.quotes.iter().find(|q| {
                q.quote
                    .selections
                    .iter()
                    .any(|s| s.hash == cocoon_attestation::vtpm::SHA256_BANK)
            });
            let errors: Vec<String> = policy
                .vtpm
                .check(sha256)
                .iter()
                .map(ToString::to_string)
                .collect();
            let facts = sha256.map(|q| VtpmFacts::of("gce-ak-certificate", q));
            (errors, facts, c.chain.clone())
        }
        Err(e) => (vec![e.to_string()], None, Vec::new()),
    };
    if !args.accept_vtpm_without_tee {
        errors.push(
            "the evidence carries no TEE report: a GCE vTPM is Google's hypervisor's and \
             proves nothing about confidentiality alone (pass --accept-vtpm-without-tee to \
             check the vTPM part alone)"
                .into(),
        );
    }
    let verified = errors.is_empty();
    if args.judge.json {
        let value = serde_json::json!({
            "verified": verified,
            "tee": null,
            "errors": errors,
            "vtpm": facts,
            "ak_certificate_chain": chain
                .iter()
                .map(|(subject, issuer)| serde_json::json!({"subject": subject, "issuer": issuer}))
                .collect::<Vec<_>>(),
        });
        say!("{value}");
    } else {
        say!("{source}: {}", state_word(verified));
        say!("  tee            none (a GCE vTPM: Google's hypervisor's)");
        for (i, (subject, _)) in chain.iter().enumerate() {
            say!("  ak chain {i}     {subject}");
        }
        if let Some(facts) = &facts {
            print_vtpm(facts);
        }
    }
    finish(source, &errors, verified)
}
