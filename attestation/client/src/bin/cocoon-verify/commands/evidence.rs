//! `cocoon-verify tdx-quote` and `snp-report`: bare evidence at a given time, through the
//! same [`Verifier`] as endpoint checks, with every failed check printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cocoon_attestation::collateral::SnpCollateral;
use cocoon_attestation::fetch::{KdsCollateral, PcsCollateral, TdxCollateralFetch};
use cocoon_attestation::pem::{certificate_pem, der_or_pem};
use cocoon_attestation::snp::SnpReport;
use cocoon_attestation::{CollateralStore, Verifier};
use cocoon_client::args::PolicyArgs;

use crate::output::{parse_rfc3339, read_input, report_verdict};

/// When and by what rules bare evidence is judged, and how the verdict is printed.
#[derive(clap::Args)]
pub struct JudgeArgs {
    /// Verification time (RFC 3339, e.g. 2025-07-01T00:00:00Z).
    #[arg(long, value_parser = parse_rfc3339)]
    pub(crate) at: i64,
    #[command(flatten)]
    pub(crate) accept: PolicyArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `tdx-quote` arguments.
#[derive(clap::Args)]
pub struct TdxQuoteArgs {
    /// The binary quote.
    quote: PathBuf,
    /// DCAP collateral bundle (JSON: PCK CRL + chain, root CA CRL, TCB info, QE identity).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "pccs",
        conflicts_with = "pccs"
    )]
    collateral: Option<PathBuf>,
    /// Fetch the collateral from Intel PCS (https://api.trustedservices.intel.com) or a PCCS.
    #[arg(long, value_name = "URL")]
    pccs: Option<String>,
    /// Cache fetched collateral here until its earliest nextUpdate.
    #[arg(long, value_name = "DIR", requires = "pccs")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
}

/// `snp-report` arguments.
#[derive(clap::Args)]
pub struct SnpReportArgs {
    /// The binary report (1184 bytes).
    report: PathBuf,
    /// The VCEK (or VLEK) certificate, DER or PEM (with --chain).
    #[arg(long, value_name = "FILE", requires = "chain", conflicts_with_all = ["bundle", "kds"])]
    vcek: Option<PathBuf>,
    /// ASK and ARK certificates, PEM (AMD's cert_chain).
    #[arg(long, value_name = "FILE", requires = "vcek")]
    chain: Option<PathBuf>,
    /// A collateral bundle: JSON {"vcek": PEM, "cert_chain": PEM}.
    #[arg(long, value_name = "FILE", conflicts_with = "kds")]
    bundle: Option<PathBuf>,
    /// Fetch the VCEK and chain from AMD KDS (https://kdsintf.amd.com) or a mirror.
    #[arg(long, value_name = "URL", required_unless_present_any = ["vcek", "bundle"])]
    kds: Option<String>,
    /// CPU line for --kds when the report (version 2) does not name it: Milan, Genoa, Turin.
    #[arg(long, requires = "kds")]
    product: Option<String>,
    /// Cache fetched certificates here until they expire (with --kds).
    #[arg(long, value_name = "DIR", requires = "kds")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
}

pub(crate) fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("cocoon-verify: {e}");
    ExitCode::from(2)
}

/// The verifier the policy arguments select, reading collateral from `store`.
pub(crate) fn verifier(
    accept: &PolicyArgs,
    store: Arc<CollateralStore>,
) -> Result<Verifier, ExitCode> {
    if accept.registry.is_some() {
        // The registry's model and price values come from the config a live guest serves.
        eprintln!(
            "cocoon-verify: --registry checks a live guest (its evidence and attested config): \
             use `cocoon-verify endpoint URL --registry ADDRESS`"
        );
        return Err(ExitCode::from(2));
    }
    let (policy, _) = accept.load().map_err(usage)?;
    Ok(Verifier::new(accept.anchors().map_err(usage)?, policy).with_collateral(store))
}

pub fn tdx_quote(
    runtime: &tokio::runtime::Runtime,
    args: &TdxQuoteArgs,
) -> Result<ExitCode, ExitCode> {
    let raw = read_input(&args.quote, "quote")?;
    let store = Arc::new(CollateralStore::new());
    match (&args.collateral, &args.pccs) {
        (Some(path), _) => store.add_tdx_bundle_file(path).map_err(usage)?,
        (None, Some(url)) => {
            let source = PcsCollateral::new(url.clone(), args.cache_dir.clone());
            let fetched = runtime
                .block_on(source.tdx_collateral(&raw, args.judge.at))
                .map_err(usage)?;
            store.add_tdx(fetched).map_err(usage)?;
        }
        (None, None) => {
            eprintln!("cocoon-verify: give --collateral FILE or --pccs URL");
            return Err(ExitCode::from(2));
        }
    }
    let verdict = verifier(&args.judge.accept, store)?.tdx_quote_verdict(&raw, args.judge.at);
    Ok(report_verdict(
        &verdict,
        args.judge.json,
        &args.quote.display().to_string(),
    ))
}

pub fn snp_report(
    runtime: &tokio::runtime::Runtime,
    args: &SnpReportArgs,
) -> Result<ExitCode, ExitCode> {
    let raw = read_input(&args.report, "report")?;
    let certificates = match (&args.vcek, &args.chain, &args.bundle, &args.kds) {
        (Some(vcek), Some(chain), _, _) => SnpCollateral {
            vcek: certificate_pem(&der_or_pem(read_input(vcek, "VCEK")?)),
            cert_chain: String::from_utf8_lossy(&read_input(chain, "certificate chain")?)
                .into_owned(),
        },
        (_, _, Some(bundle), _) => SnpCollateral::from_bundle_file(bundle).map_err(usage)?,
        (_, _, _, Some(url)) => {
            let parsed = SnpReport::parse(&raw).map_err(usage)?;
            let kds = KdsCollateral::new(url.clone(), args.cache_dir.clone());
            runtime
                .block_on(kds.snp_collateral(&parsed, args.product.as_deref(), args.judge.at))
                .map_err(usage)?
        }
        _ => {
            eprintln!("cocoon-verify: give --vcek and --chain, --bundle, or --kds");
            return Err(ExitCode::from(2));
        }
    };
    let verdict = verifier(&args.judge.accept, Arc::new(CollateralStore::new()))?
        .snp_report_verdict(&raw, Some(&certificates), args.judge.at);
    Ok(report_verdict(
        &verdict,
        args.judge.json,
        &args.report.display().to_string(),
    ))
}
