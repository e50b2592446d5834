//! `cocoon-verify`: check a Cocoon endpoint's attestation before trusting it.
//!
//! Exit status: 0 when the evidence verifies, 1 when it is refused, 2 for usage errors
//! and endpoints that cannot be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// `println!` that ignores a closed stdout (`cocoon-verify … | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use cocoon_attestation::client::{connect_and_verify_session, Endpoint};
use cocoon_attestation::collateral::{
    KdsCollateral, PcsCollateral, SnpCollateral, TdxCollateralSource,
};
use cocoon_attestation::dev_pki::DevPki;
use cocoon_attestation::manifest::{Manifest, ManifestPublicKey, ManifestSigningKey};
use cocoon_attestation::policy::Policy;
use cocoon_attestation::policy_args::PolicyArgs;
use cocoon_attestation::ratls::certificate_pem;
use cocoon_attestation::snp::dev::DevSnpPki;
use cocoon_attestation::snp::verify::amd_production_arks;
use cocoon_attestation::snp::SnpReport;
use cocoon_attestation::tdx::dcap::{collateral_from_json, intel_sgx_root_ca, TdxRoot};
use cocoon_attestation::verdict::{snp_verdict, tdx_verdict, Verdict};
use cocoon_attestation::verify::{format_time, VerifiedEvidence, VerifyOptions};
use cocoon_attestation::Error;

#[derive(Parser)]
#[command(
    name = "cocoon-verify",
    version,
    about = "Verify the attestation of a Cocoon confidential inference endpoint",
    long_about = "Verify the attestation of a Cocoon confidential inference endpoint.\n\n\
        Exit status: 0 verified, 1 refused (the reason is printed), 2 usage error or \
        endpoint unreachable."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to https://HOST:PORT, check the evidence in its TLS certificate, and print
    /// a summary and the certificate's SHA-256 pin.
    Endpoint {
        /// The endpoint, e.g. https://127.0.0.1:8443 (the host agent's public port).
        url: String,
        /// Accept SIMULATED evidence (development key, no TEE). For development only.
        #[arg(long)]
        allow_simulated: bool,
        #[command(flatten)]
        accept: PolicyArgs,
        /// Print one JSON object instead of the text summary.
        #[arg(long)]
        json: bool,
        /// Write the verified certificate (PEM) here, for SDKs that pin a CA file.
        #[arg(long, value_name = "FILE")]
        cert_out: Option<PathBuf>,
        /// Give up connecting after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Verify a TDX quote (v4/v5) with DCAP collateral (a bundle file, or fetched from PCS/PCCS) at a given time.
    TdxQuote {
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
        /// Verification time (RFC 3339, e.g. 2025-07-01T00:00:00Z).
        #[arg(long, value_parser = parse_rfc3339)]
        at: i64,
        #[command(flatten)]
        accept: PolicyArgs,
        /// Also trust the development root (SIMULATED evidence, no TEE). Development only.
        #[arg(long)]
        allow_simulated: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify an SEV-SNP attestation report with its VCEK and the ASK/ARK chain (files, a bundle, or AMD KDS).
    SnpReport {
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
        /// Verification time (RFC 3339).
        #[arg(long, value_parser = parse_rfc3339)]
        at: i64,
        #[command(flatten)]
        accept: PolicyArgs,
        /// Also trust the development root (SIMULATED evidence, no TEE). Development only.
        #[arg(long)]
        allow_simulated: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check a usage receipt (JWS from the x-cocoon-receipt header or the final
    /// `cocoon.receipt` SSE event) against the receipt key a verified endpoint attested
    /// (`receipt_key` in `endpoint --json`); prints the receipt as JSON.
    Receipt {
        /// The receipt (JWS compact), or a file holding it.
        receipt: String,
        /// The attested receipt key, hex (32 bytes).
        #[arg(long, value_name = "HEX")]
        receipt_key: String,
    },
    /// Signed image manifests: make a signing key, sign reference values, check a manifest.
    #[command(subcommand)]
    Manifest(ManifestCommand),
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Make an Ed25519 signing key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a manifest (the JSON reference values) into a DSSE envelope.
    Sign {
        /// The unsigned manifest: {"version":1,"image":..,"release":N,"not_after":"RFC 3339","tdx":{..},"sev_snp":{..},"config_digests":[..]}.
        manifest: PathBuf,
        /// The signing key (PKCS#8 PEM, from `manifest keygen` or `openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the signed manifest.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a signed manifest's signature and print its reference values as JSON.
    Show {
        /// The signed manifest (DSSE envelope).
        manifest: PathBuf,
        /// Public key trusted to sign it: ed25519:BASE64, or a file holding it (repeatable).
        #[arg(long, value_name = "KEY", required = true)]
        manifest_key: Vec<String>,
    },
}

fn manifest_command(command: ManifestCommand) -> Result<ExitCode, ExitCode> {
    let usage = |e: cocoon_attestation::Error| {
        eprintln!("cocoon-verify: {e}");
        ExitCode::from(2)
    };
    match command {
        ManifestCommand::Keygen { out } => {
            let (key, pem) = ManifestSigningKey::generate().map_err(usage)?;
            write_new_private_file(&out, pem.as_bytes()).map_err(|e| {
                eprintln!("cocoon-verify: cannot write {}: {e}", out.display());
                ExitCode::from(2)
            })?;
            eprintln!("cocoon-verify: private key written to {}", out.display());
            say!("{}", key.public_key());
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Sign { manifest, key, out } => {
            let text = read_input(&manifest, "manifest")?;
            let parsed = Manifest::from_json(&text).map_err(|e| {
                eprintln!("cocoon-verify: {}: {e}", manifest.display());
                ExitCode::from(2)
            })?;
            let pem = String::from_utf8_lossy(&read_input(&key, "signing key")?).into_owned();
            let key = ManifestSigningKey::from_pem(&pem).map_err(usage)?;
            let envelope = parsed.sign(&key).map_err(usage)?;
            std::fs::write(&out, envelope).map_err(|e| {
                eprintln!("cocoon-verify: cannot write {}: {e}", out.display());
                ExitCode::from(2)
            })?;
            eprintln!(
                "cocoon-verify: {} signed by {} -> {}",
                manifest.display(),
                key.public_key(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Show {
            manifest,
            manifest_key,
        } => {
            let keys = ManifestPublicKey::from_args(&manifest_key).map_err(usage)?;
            match Manifest::open_file(&manifest, &keys) {
                Ok(m) => {
                    say!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("cocoon-verify: REFUSED: {e}");
                    Err(ExitCode::from(1))
                }
            }
        }
    }
}

fn check_receipt(receipt: &str, receipt_key: &str) -> ExitCode {
    let key = match hex::decode(receipt_key.trim()) {
        Ok(k) if k.len() == 32 => k,
        _ => {
            eprintln!("cocoon-verify: --receipt-key must be 32 bytes, hex-encoded");
            return ExitCode::from(2);
        }
    };
    let jws = if receipt.matches('.').count() == 2 {
        receipt.to_string()
    } else {
        match std::fs::read_to_string(receipt) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("cocoon-verify: {receipt} is neither a JWS nor a readable file: {e}");
                return ExitCode::from(2);
            }
        }
    };
    match cocoon_attestation::receipt::verify_receipt(&jws, &key) {
        Ok(r) => {
            say!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cocoon-verify: REFUSED: {e}");
            ExitCode::from(1)
        }
    }
}

/// Creates `path` with mode 0600, refusing to replace an existing file.
fn write_new_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("'{s}' is not an RFC 3339 time ({e})"))
}

/// Reads an input file; a failure is a usage error (exit 2).
fn read_input(path: &std::path::Path, what: &str) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("cocoon-verify: cannot read {what} {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn load_policy(accept: &PolicyArgs) -> Result<Policy, ExitCode> {
    accept.load().map(|(policy, _)| policy).map_err(|e| {
        eprintln!("cocoon-verify: {e}");
        ExitCode::from(2)
    })
}

/// DER as is, or the first certificate of a PEM file.
fn der_or_pem(bytes: Vec<u8>) -> Vec<u8> {
    match x509_parser::pem::parse_x509_pem(&bytes) {
        Ok((_, pem)) => pem.contents,
        Err(_) => bytes,
    }
}

fn report_verdict(verdict: &Verdict, json: bool, source: &str) -> ExitCode {
    if json {
        say!("{}", serde_json::to_string(verdict).unwrap_or_default());
    } else {
        let state = if verdict.verified {
            "VERIFIED"
        } else {
            "REFUSED"
        };
        let sim = if verdict.simulated {
            " (SIMULATED: development root, no TEE)"
        } else {
            ""
        };
        say!("{source}: {state}{sim}");
        say!("  tee            {}", verdict.tee);
        if let Some(s) = &verdict.tcb_status {
            say!("  tcb status     {s}");
        }
        if let Some(d) = verdict.debug {
            say!("  debug          {}", if d { "ON" } else { "off" });
        }
        for (k, v) in &verdict.measurements {
            say!("  {k:<14} {v}");
        }
        if let Some(rd) = &verdict.report_data {
            say!("  report data    {rd}");
        }
        if !verdict.advisories.is_empty() {
            say!("  advisories     {}", verdict.advisories.join(", "));
        }
        for (k, v) in &verdict.details {
            say!("  {k:<14} {v}");
        }
    }
    for e in &verdict.errors {
        eprintln!("cocoon-verify: {source}: {e}");
    }
    if verdict.verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn tdx_quote(
    runtime: &tokio::runtime::Runtime,
    quote: &std::path::Path,
    source: CollateralArg,
    at: i64,
    accept: &PolicyArgs,
    allow_simulated: bool,
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let raw = read_input(quote, "quote")?;
    let collateral = match source {
        CollateralArg::File(path) => {
            let bytes = read_input(&path, "collateral")?;
            collateral_from_json(&bytes).map_err(|e| {
                eprintln!("cocoon-verify: {}: {e}", path.display());
                ExitCode::from(2)
            })?
        }
        CollateralArg::Pccs { url, cache_dir } => {
            let source = PcsCollateral::new(url, cache_dir);
            runtime
                .block_on(source.tdx_collateral(&raw, at))
                .map_err(|e| {
                    eprintln!("cocoon-verify: {e}");
                    ExitCode::from(2)
                })?
        }
    };
    let policy = load_policy(accept)?;
    let mut roots = vec![TdxRoot {
        der: intel_sgx_root_ca(),
        simulated: false,
    }];
    if allow_simulated {
        let der = dev_or_exit(DevPki::dev().map(|pki| pki.root_der()))?;
        roots.push(TdxRoot {
            der,
            simulated: true,
        });
    }
    let verdict = tdx_verdict(&raw, &collateral, at, &roots, &policy);
    Ok(report_verdict(&verdict, json, &quote.display().to_string()))
}

/// The development roots cannot fail to build unless the crypto backend does.
fn dev_or_exit<T>(r: cocoon_attestation::Result<T>) -> Result<T, ExitCode> {
    r.map_err(|e| {
        eprintln!("cocoon-verify: cannot build the development root: {e}");
        ExitCode::from(2)
    })
}

/// Where `tdx-quote` takes its collateral from.
enum CollateralArg {
    File(PathBuf),
    Pccs {
        url: String,
        cache_dir: Option<PathBuf>,
    },
}

/// Where `snp-report` takes the VCEK and chain from.
enum SnpSource {
    Files {
        vcek: PathBuf,
        chain: PathBuf,
    },
    Bundle(PathBuf),
    Kds {
        url: String,
        product: Option<String>,
        cache_dir: Option<PathBuf>,
    },
}

fn snp_report(
    runtime: &tokio::runtime::Runtime,
    report: &std::path::Path,
    source: SnpSource,
    at: i64,
    accept: &PolicyArgs,
    allow_simulated: bool,
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let raw = read_input(report, "report")?;
    let usage = |e: cocoon_attestation::Error| {
        eprintln!("cocoon-verify: {e}");
        ExitCode::from(2)
    };
    let (vcek_der, chain_pem) = match source {
        SnpSource::Files { vcek, chain } => (
            der_or_pem(read_input(&vcek, "VCEK")?),
            read_input(&chain, "certificate chain")?,
        ),
        SnpSource::Bundle(path) => {
            let c = SnpCollateral::from_bundle_file(&path).map_err(usage)?;
            (c.vcek_der().map_err(usage)?, c.cert_chain.into_bytes())
        }
        SnpSource::Kds {
            url,
            product,
            cache_dir,
        } => {
            let parsed = SnpReport::parse(&raw).map_err(usage)?;
            let kds = KdsCollateral::new(url, cache_dir);
            let c = runtime
                .block_on(kds.snp_collateral(&parsed, product.as_deref(), at))
                .map_err(usage)?;
            (c.vcek_der().map_err(usage)?, c.cert_chain.into_bytes())
        }
    };
    let policy = load_policy(accept)?;
    let mut arks = amd_production_arks();
    if allow_simulated {
        arks.push(dev_or_exit(DevSnpPki::dev().map(DevSnpPki::trusted_ark))?);
    }
    let verdict = snp_verdict(&raw, &vcek_der, &chain_pem, at, &arks, &policy);
    Ok(report_verdict(
        &verdict,
        json,
        &report.display().to_string(),
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cocoon-verify: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Endpoint {
            url,
            allow_simulated,
            accept,
            json,
            cert_out,
            timeout,
        } => {
            let policy = match load_policy(&accept) {
                Ok(p) => p,
                Err(code) => return code,
            };
            runtime.block_on(endpoint(
                &url,
                VerifyOptions {
                    allow_simulated,
                    policy,
                },
                json,
                cert_out,
                Duration::from_secs(timeout),
            ))
        }
        Command::TdxQuote {
            quote,
            collateral,
            pccs,
            cache_dir,
            at,
            accept,
            allow_simulated,
            json,
        } => {
            let source = match (collateral, pccs) {
                (Some(path), _) => CollateralArg::File(path),
                (None, Some(url)) => CollateralArg::Pccs { url, cache_dir },
                (None, None) => {
                    eprintln!("cocoon-verify: give --collateral FILE or --pccs URL");
                    return ExitCode::from(2);
                }
            };
            tdx_quote(&runtime, &quote, source, at, &accept, allow_simulated, json)
                .unwrap_or_else(|code| code)
        }
        Command::SnpReport {
            report,
            vcek,
            chain,
            bundle,
            kds,
            product,
            cache_dir,
            at,
            accept,
            allow_simulated,
            json,
        } => {
            let source = match (vcek, chain, bundle, kds) {
                (Some(vcek), Some(chain), _, _) => SnpSource::Files { vcek, chain },
                (_, _, Some(bundle), _) => SnpSource::Bundle(bundle),
                (_, _, _, Some(url)) => SnpSource::Kds {
                    url,
                    product,
                    cache_dir,
                },
                _ => {
                    eprintln!("cocoon-verify: give --vcek and --chain, --bundle, or --kds");
                    return ExitCode::from(2);
                }
            };
            snp_report(
                &runtime,
                &report,
                source,
                at,
                &accept,
                allow_simulated,
                json,
            )
            .unwrap_or_else(|code| code)
        }
        Command::Manifest(command) => manifest_command(command).unwrap_or_else(|code| code),
        Command::Receipt {
            receipt,
            receipt_key,
        } => check_receipt(&receipt, &receipt_key),
    }
}

async fn endpoint(
    url: &str,
    options: VerifyOptions,
    json: bool,
    cert_out: Option<PathBuf>,
    timeout: Duration,
) -> ExitCode {
    let result = match Endpoint::parse(url) {
        Ok(endpoint) => connect_and_verify_session(&endpoint, options, timeout).await,
        Err(e) => Err(e),
    };
    let verified = match result {
        Ok(ok) => ok,
        Err(e) => {
            let code = match e {
                Error::Rejected(_) => 1,
                _ => 2,
            };
            if json {
                say!(
                    "{}",
                    serde_json::json!({ "endpoint": url, "verified": false, "errors": [e.to_string()] })
                );
            }
            eprintln!("cocoon-verify: {url}: REFUSED: {e}");
            return ExitCode::from(code);
        }
    };
    let evidence = &verified.certificate;
    if let Some(path) = cert_out {
        if let Err(e) = std::fs::write(&path, certificate_pem(&verified.certificate_der)) {
            eprintln!("cocoon-verify: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if json {
        let mut value = serde_json::to_value(evidence).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("endpoint".into(), url.into());
            map.insert("verified".into(), true.into());
            map.insert("session_bound".into(), true.into());
            map.insert(
                "session_report_data".into(),
                verified.session.report_data.clone().into(),
            );
            map.insert("errors".into(), serde_json::json!([]));
        }
        say!("{value}");
    } else {
        print_summary(url, evidence);
        say!(
            "  session        fresh evidence over a random nonce and this TLS session's exporter verified (report data {}…)",
            &verified.session.report_data[..16]
        );
    }
    ExitCode::SUCCESS
}

fn print_summary(url: &str, e: &VerifiedEvidence) {
    if e.simulated {
        say!("{url}: VERIFIED, but the evidence is SIMULATED (development root, no TEE)");
    } else {
        say!("{url}: VERIFIED");
    }
    let tee = if e.simulated {
        format!("{} (simulated)", e.tee)
    } else {
        e.tee.to_string()
    };
    say!("  tee            {tee}");
    if let Some(status) = &e.tcb_status {
        say!("  tcb status     {status}");
    }
    say!("  debug          {}", if e.debug { "ON" } else { "off" });
    for (name, value) in &e.measurements {
        say!("  {name:<14} {value}");
    }
    say!("  config digest  {}", e.config_digest);
    if let Some(key) = &e.receipt_key {
        say!("  receipt key    {key} (signs usage receipts)");
    }
    say!("  report data    {} (binds the TLS key)", e.report_data);
    say!(
        "  certificate    valid {} .. {}",
        format_time(e.not_before),
        format_time(e.not_after)
    );
    say!("  sha256 pin     {}", e.certificate_sha256);
}
