//! `cocoon-verify`: check a Cocoon endpoint's attestation before trusting it.
//!
//! Exit status: 0 when the evidence verifies, 1 when it is refused, 2 for usage errors
//! and endpoints that cannot be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cocoon_attestation::client::{connect_attested, Endpoint};
use cocoon_attestation::ratls::certificate_pem;
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
        /// Accept a guest launched with the DEBUG attribute (its memory is readable).
        #[arg(long)]
        allow_debug: bool,
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
            allow_debug,
            json,
            cert_out,
            timeout,
        } => runtime.block_on(endpoint(
            &url,
            VerifyOptions {
                allow_simulated,
                allow_debug,
            },
            json,
            cert_out,
            Duration::from_secs(timeout),
        )),
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
        Ok(endpoint) => connect_attested(&endpoint, options, timeout).await,
        Err(e) => Err(e),
    };
    let (stream, evidence) = match result {
        Ok(ok) => ok,
        Err(e) => {
            let code = match e {
                Error::Rejected(_) => 1,
                _ => 2,
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "endpoint": url, "verified": false, "errors": [e.to_string()] })
                );
            }
            eprintln!("cocoon-verify: {url}: REFUSED: {e}");
            return ExitCode::from(code);
        }
    };
    if let Some(path) = cert_out {
        let der = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let written = match der {
            Some(der) => std::fs::write(&path, certificate_pem(&der)).map_err(|e| e.to_string()),
            None => Err("the server sent no certificate".into()),
        };
        if let Err(e) = written {
            eprintln!("cocoon-verify: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if json {
        let mut value = serde_json::to_value(&evidence).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("endpoint".into(), url.into());
            map.insert("verified".into(), true.into());
            map.insert("errors".into(), serde_json::json!([]));
        }
        println!("{value}");
    } else {
        print_summary(url, &evidence);
    }
    ExitCode::SUCCESS
}

fn print_summary(url: &str, e: &VerifiedEvidence) {
    if e.simulated {
        println!("{url}: VERIFIED, but the evidence is SIMULATED (development key, no TEE)");
    } else {
        println!("{url}: VERIFIED");
    }
    let tee = if e.simulated {
        format!("{} (simulated)", e.tee)
    } else {
        e.tee.to_string()
    };
    println!("  tee            {tee}");
    println!("  debug          {}", if e.debug { "ON" } else { "off" });
    println!("  mrtd           {}", e.measurements.mrtd);
    println!("  rtmr0          {}", e.measurements.rtmr0);
    println!("  rtmr1          {}", e.measurements.rtmr1);
    println!("  rtmr2          {}", e.measurements.rtmr2);
    println!("  rtmr3          {}", e.measurements.rtmr3);
    println!("  config digest  {}", e.config_digest);
    println!("  report data    {} (binds the TLS key)", e.report_data);
    println!(
        "  certificate    valid {} .. {}",
        format_time(e.not_before),
        format_time(e.not_after)
    );
    println!("  sha256 pin     {}", e.certificate_sha256);
}
