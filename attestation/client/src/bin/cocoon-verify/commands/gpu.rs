//! `cocoon-verify gpu-report`: recorded NVIDIA GPU evidence (NVIDIA's sample format: hex of
//! the SPDM request followed by the response, and the PEM device chain), verified offline
//! against the pinned NVIDIA device root at a given time, for a given nonce.

use std::path::PathBuf;
use std::process::ExitCode;

use cocoon_attestation::gpu::{self, GpuEvidence, GpuVerdict};

use crate::output::{finish, parse_rfc3339, read_input, say, state_word};

/// `gpu-report` arguments.
#[derive(clap::Args)]
pub struct GpuReportArgs {
    /// The attestation report: hex of the SPDM GET_MEASUREMENTS request followed by the
    /// MEASUREMENTS response.
    report: PathBuf,
    /// The device certificate chain, PEM, leaf first (ending at NVIDIA Device Identity CA).
    #[arg(long, value_name = "CHAIN.pem")]
    chain: PathBuf,
    /// The nonce the verifier asked for (64 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_nonce)]
    nonce: [u8; 32],
    /// Verification time (RFC 3339, e.g. 2024-06-01T00:00:00Z); default: now.
    #[arg(long, value_parser = parse_rfc3339)]
    at: Option<i64>,
    /// A reference-integrity manifest (NVIDIA's signed SWID tag XML: driver or VBIOS),
    /// repeatable. Its signature must verify to the pinned NVIDIA RIM root at the
    /// verification time and its version must be the report's; then every active
    /// reference must match its measurement block, and blocks no RIM covers are listed.
    #[arg(long, value_name = "FILE")]
    rim: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_nonce(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("'{s}' is not hex ({e})"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "the nonce must be 32 bytes (64 hex digits), got {}",
            bytes.len()
        )
    })
}

pub fn run(args: &GpuReportArgs) -> Result<ExitCode, ExitCode> {
    let report_hex = read_input(&args.report, "report")?;
    let chain_pem = read_input(&args.chain, "certificate chain")?;
    let at = match args.at {
        Some(t) => t,
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    let source = args.report.display().to_string();
    let evidence = match GpuEvidence::from_nvidia_files(&report_hex, &chain_pem) {
        Ok(e) => e,
        Err(e) => {
            // The files were read but do not hold a report and a chain: refused.
            if args.json {
                say!(
                    "{}",
                    serde_json::json!({"tee": "nvidia-gpu", "verified": false, "errors": [e.to_string()]})
                );
            } else {
                say!("{source}: REFUSED");
            }
            eprintln!("cocoon-verify: {source}: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let roots = gpu::nvidia_device_roots();
    let verdict = if args.rim.is_empty() {
        gpu::gpu_verdict(&evidence, &args.nonce, at, &roots, None)
    } else {
        let mut rims = Vec::new();
        for path in &args.rim {
            let xml = read_input(path, "RIM")?;
            rims.push((path.display().to_string(), xml));
        }
        gpu::gpu_verdict_with_rims(&evidence, &args.nonce, at, &roots, &rims)
    };
    Ok(print(&verdict, args.json, &source))
}

fn print(verdict: &GpuVerdict, json: bool, source: &str) -> ExitCode {
    if json {
        say!("{}", serde_json::to_string(verdict).unwrap_or_default());
    } else {
        let state = state_word(verdict.verified);
        say!("{source}: {state}");
        say!("  tee            {}", verdict.tee);
        say!("  at             {}", verdict.at);
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        say!("  nonce          {}", opt(&verdict.nonce));
        say!("  spdm           {}", opt(&verdict.spdm_version));
        say!("  driver         {}", opt(&verdict.driver_version));
        say!("  vbios          {}", opt(&verdict.vbios_version));
        say!("  blocks         {}", verdict.measurements.len());
        for (i, subject) in verdict.chain.iter().enumerate() {
            say!("  chain[{i}]       {subject}");
        }
        say!("  evidence sha384 {}", verdict.evidence_digest);
        for rim in &verdict.rims {
            say!("  rim            {rim}");
        }
        if let Some(r) = &verdict.references {
            say!(
                "  references     {} matched, {} differ, {} missing",
                r.matched.len(),
                r.mismatches.len(),
                r.missing.len()
            );
            if !r.uncovered.is_empty() {
                let list: Vec<String> = r.uncovered.iter().map(u8::to_string).collect();
                say!("  uncovered      {}", list.join(","));
            }
        }
    }
    finish(source, &verdict.errors, verdict.verified)
}
