//! Verification throughput on one core, on the real fixtures, against the libraries we wrap.
//!
//! TDX: quotes verified per second by our `tdx::dcap::verify_quote` and by `dcap-qvl`'s
//! `QuoteVerifier` called directly, with the collateral parsed once beforehand; the ratio
//! is the wrapper's overhead (it also parses the quote into our typed form).
//!
//! SEV-SNP: reports verified per second by our `snp::verify::verify_report` (PEM chain,
//! dates, trusted ARK, chain, report signature, TCB and hwID extensions) and by the `sev`
//! crate's `(&Chain, &AttestationReport).verify()` (chain and report signature only), both
//! starting from the same bytes (report, VCEK DER, ASK/ARK) on every call.
//!
//! Each pair is timed in alternating rounds so that machine noise hits both sides alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use cocoon_attestation::snp::verify::{amd_production_arks, verify_report};
use cocoon_attestation::tdx::dcap::{
    collateral_from_json, intel_sgx_root_ca, verify_quote, TdxRoot,
};
use sev::certs::snp::{Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

const TDX_QUOTE: &[u8] =
    include_bytes!("../../../attestation/tests/fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../../attestation/tests/fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");
/// 2025-07-01T00:00:00Z, inside the collateral's validity.
const TDX_NOW: i64 = 1_751_328_000;

const SNP_REPORT: &[u8] =
    include_bytes!("../../../attestation/tests/fixtures/snp/gosev_milan_attestation.bin");
const SNP_VCEK: &[u8] =
    include_bytes!("../../../attestation/tests/fixtures/snp/gosev_milan_vcek.der");
const SNP_CHAIN: &[u8] =
    include_bytes!("../../../attestation/tests/fixtures/snp/amd_ask_ark_milan.pem");
/// 2023-06-01T00:00:00Z, inside the VCEK's validity.
const SNP_NOW: i64 = 1_685_577_600;

#[derive(Parser)]
#[command(
    name = "cocoon-verify-bench",
    about = "TDX quote and SEV-SNP report verifications per second on one core"
)]
struct Args {
    /// Timed verifications per implementation.
    #[arg(long, default_value_t = 200)]
    iterations: u32,
    /// Untimed verifications per implementation before timing.
    #[arg(long, default_value_t = 10)]
    warmup: u32,
    /// Alternating rounds the timed verifications are split into.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
}

struct Pair {
    ours: Duration,
    peer: Duration,
    n: u32,
}

impl Pair {
    fn rate(d: Duration, n: u32) -> f64 {
        f64::from(n) / d.as_secs_f64()
    }

    fn print(&self, title: &str, ours: &str, peer: &str) {
        let (a, b) = (Self::rate(self.ours, self.n), Self::rate(self.peer, self.n));
        println!("{title} ({} verifications each)", self.n);
        println!("  {ours:<44} {a:>9.1} /s  {:>8.1} µs each", 1e6 / a);
        println!("  {peer:<44} {b:>9.1} /s  {:>8.1} µs each", 1e6 / b);
        println!(
            "  ratio ours/peer (time per verification)     {:>9.3}  ({:+.1}% overhead)",
            b / a,
            (b / a - 1.0) * 100.0
        );
    }
}

/// Runs `ours` and `peer` `warmup` times each, then `iterations` times each in
/// alternating rounds.
fn time_pair(
    args: &Args,
    mut ours: impl FnMut() -> anyhow::Result<()>,
    mut peer: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Pair> {
    for _ in 0..args.warmup {
        ours()?;
        peer()?;
    }
    let rounds = args.rounds.clamp(1, args.iterations.max(1));
    let per_round = args.iterations.div_ceil(rounds);
    let (mut t_ours, mut t_peer, mut n) = (Duration::ZERO, Duration::ZERO, 0);
    while n < args.iterations {
        let k = per_round.min(args.iterations - n);
        let start = Instant::now();
        for _ in 0..k {
            ours()?;
        }
        t_ours += start.elapsed();
        let start = Instant::now();
        for _ in 0..k {
            peer()?;
        }
        t_peer += start.elapsed();
        n += k;
    }
    Ok(Pair {
        ours: t_ours,
        peer: t_peer,
        n,
    })
}

/// The ASK and ARK of a PEM pair, as DER (ARK is the self-signed one).
fn split_ask_ark(pem: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut ask = None;
    let mut ark = None;
    for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let item = item.context("ASK/ARK PEM")?;
        let cert = item.parse_x509().context("ASK/ARK certificate")?;
        if cert.subject() == cert.issuer() {
            ark = Some(item.contents.clone());
        } else {
            ask = Some(item.contents.clone());
        }
    }
    match (ask, ark) {
        (Some(ask), Some(ark)) => Ok((ask, ark)),
        _ => bail!("expected one ASK and one ARK"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    // TDX: collateral parsed once, as a verifier with cached collateral would.
    let collateral = collateral_from_json(TDX_COLLATERAL)?;
    let root = TdxRoot {
        der: intel_sgx_root_ca(),
        simulated: false,
    };
    let direct = dcap_qvl::verify::QuoteVerifier::new(root.der.clone()).allow_debug(true);
    let now = u64::try_from(TDX_NOW)?;
    let ours = verify_quote(TDX_QUOTE, &collateral, TDX_NOW, &root)?;
    let theirs = direct
        .verify(TDX_QUOTE, &collateral, now)
        .map_err(|e| anyhow::anyhow!("dcap-qvl: {e:#}"))?;
    if ours.tcb_status != theirs.status {
        bail!(
            "TCB status differs: {} vs {}",
            ours.tcb_status,
            theirs.status
        );
    }
    println!(
        "TDX quote v4 ({} bytes), TCB status {}; SEV-SNP Milan report ({} bytes)",
        TDX_QUOTE.len(),
        ours.tcb_status,
        SNP_REPORT.len()
    );
    let tdx = time_pair(
        &args,
        || {
            black_box(verify_quote(
                black_box(TDX_QUOTE),
                &collateral,
                TDX_NOW,
                &root,
            )?);
            Ok(())
        },
        || {
            black_box(
                direct
                    .verify(black_box(TDX_QUOTE), &collateral, now)
                    .map_err(|e| anyhow::anyhow!("dcap-qvl: {e:#}"))?,
            );
            Ok(())
        },
    )?;

    // SEV-SNP.
    let arks = amd_production_arks();
    let (ask_der, ark_der) = split_ask_ark(SNP_CHAIN)?;
    let sev_verify = || -> anyhow::Result<()> {
        let chain = Chain::from_der(&ark_der, &ask_der, black_box(SNP_VCEK))?;
        let report = AttestationReport::from_bytes(black_box(SNP_REPORT))?;
        (&chain, &report).verify()?;
        black_box(report);
        Ok(())
    };
    let facts = verify_report(SNP_REPORT, SNP_VCEK, SNP_CHAIN, SNP_NOW, &arks)?;
    sev_verify().context("sev crate")?;
    println!(
        "SNP product {}, reported TCB {}",
        facts.product, facts.report.reported_tcb
    );
    let snp = time_pair(
        &args,
        || {
            black_box(verify_report(
                black_box(SNP_REPORT),
                SNP_VCEK,
                SNP_CHAIN,
                SNP_NOW,
                &arks,
            )?);
            Ok(())
        },
        sev_verify,
    )?;

    println!();
    tdx.print(
        "TDX DCAP quote verification, collateral pre-parsed, 1 core",
        "cocoon tdx::dcap::verify_quote",
        "dcap-qvl QuoteVerifier::verify (direct)",
    );
    println!();
    snp.print(
        "SEV-SNP report verification, 1 core",
        "cocoon snp::verify::verify_report",
        "sev (&Chain, &AttestationReport).verify()",
    );
    Ok(())
}
