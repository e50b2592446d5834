//! `cocoon-verify`: check a Cocoon endpoint's attestation before trusting it.
//!
//! Exit status: 0 when the evidence verifies, 1 when it is refused, 2 for usage errors
//! and endpoints that cannot be reached. Every command verifies through the one pipeline
//! (`cocoon_attestation::Verifier`); this binary parses arguments and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cocoon_client::args::{CollateralArgs, PolicyArgs};

mod commands;
mod output;

use commands::{endpoint, evidence, gpu, manifest, onchain, receipt, tpm};

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
    /// Connect to https://HOST:PORT, check the evidence in its TLS certificate and fresh
    /// evidence bound to the session, and print a summary, the config document the guest
    /// serves and the certificate's SHA-256 pin.
    Endpoint {
        /// The endpoint, e.g. https://127.0.0.1:8443 (the host agent's public port).
        url: String,
        #[command(flatten)]
        accept: PolicyArgs,
        #[command(flatten)]
        collateral: CollateralArgs,
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
    TdxQuote(evidence::TdxQuoteArgs),
    /// Verify an SEV-SNP attestation report with its VCEK and the ASK/ARK chain (files, a bundle, or AMD KDS).
    SnpReport(evidence::SnpReportArgs),
    /// Verify recorded NVIDIA GPU attestation evidence (hex SPDM request + response, PEM
    /// device chain) against the pinned NVIDIA Device Identity CA, for a nonce, at a time.
    GpuReport(gpu::GpuReportArgs),
    /// Verify vTPM evidence recorded on a cloud VM: Azure confidential VMs (SEV-SNP or TDX:
    /// the TPM quote with the AK from the HCL report, nonce, PCR digest, the hardware
    /// report's binding of that AK, the hardware report itself) or Google Compute Engine
    /// (the AK certificate to Google's pinned root, every bank's quote); then the PCR rules
    /// (--vtpm-pcr).
    TpmQuote(tpm::TpmQuoteArgs),
    /// Check a usage receipt (JWS from the x-cocoon-receipt header or the final
    /// `cocoon.receipt` SSE event) against the receipt key a verified endpoint attested
    /// (`receipt_key` in `endpoint --json`); prints the receipt as JSON.
    ///
    /// With --onchain, also check that the receipt was settled on TON: its inclusion
    /// proof (`cocoon-host-agent receipts proof`) must lead to the receipts root the
    /// escrow recorded for the key, and the escrow's total for those receipts must be
    /// what the guest's receipts say.
    Receipt {
        /// The receipt (JWS compact), or a file holding it.
        receipt: String,
        /// The attested receipt key, hex (32 bytes).
        #[arg(long, value_name = "HEX")]
        receipt_key: String,
        /// Check the receipt's settlement on chain (needs --proof and --ton-api).
        #[arg(long, requires = "proof")]
        onchain: bool,
        /// The inclusion proof (JSON) from `cocoon-host-agent receipts proof`.
        #[arg(long, value_name = "FILE", requires = "onchain")]
        proof: Option<PathBuf>,
        #[command(flatten)]
        chain: onchain::TonApiArgs,
        /// With --onchain: print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// From the chain alone: the tokens served and charged per model and guest key in a
    /// time range, over the escrows that paid an operator's payout address (or the given
    /// escrows). Counts only charges the escrow paid whose voucher the guest signed.
    Audit(onchain::AuditArgs),
    /// Signed image manifests: make a signing key, sign reference values, check a manifest.
    #[command(subcommand)]
    Manifest(manifest::ManifestCommand),
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
    let result = match cli.command {
        Command::Endpoint {
            url,
            accept,
            collateral,
            json,
            cert_out,
            timeout,
        } => runtime.block_on(endpoint::run(
            &url,
            &accept,
            &collateral,
            json,
            cert_out,
            std::time::Duration::from_secs(timeout),
        )),
        Command::TdxQuote(args) => evidence::tdx_quote(&runtime, &args),
        Command::SnpReport(args) => evidence::snp_report(&runtime, &args),
        Command::GpuReport(args) => gpu::run(&args),
        Command::TpmQuote(args) => tpm::run(&args),
        Command::Manifest(command) => manifest::run(command),
        Command::Receipt {
            receipt,
            receipt_key,
            onchain: _,
            proof,
            chain,
            json,
        } => Ok(runtime.block_on(receipt::run(
            &receipt,
            &receipt_key,
            proof.as_deref(),
            &chain,
            json,
        ))),
        Command::Audit(args) => Ok(runtime.block_on(onchain::audit(&args))),
    };
    result.unwrap_or_else(|code| code)
}
