//! `cocoon-verify endpoint`: the certificate's evidence and fresh session-bound evidence,
//! through the same pipeline as hardware evidence, with collateral fetched as needed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cocoon_attestation::ratls::certificate_pem;
use cocoon_attestation::unix_time::format_time;
use cocoon_attestation::{Error, Verified};
use cocoon_client::args::{attestor, CollateralArgs, PolicyArgs};
use cocoon_client::{open_attested_session, Endpoint};

use crate::output::say;

pub async fn run(
    url: &str,
    accept: &PolicyArgs,
    collateral: &CollateralArgs,
    json: bool,
    cert_out: Option<PathBuf>,
    timeout: Duration,
) -> Result<ExitCode, ExitCode> {
    let (attestor, _) = attestor(accept, collateral).map_err(|e| {
        eprintln!("cocoon-verify: {e}");
        ExitCode::from(2)
    })?;
    if let Some(warning) = attestor.any_image_warning() {
        eprintln!("cocoon-verify: {warning}");
    }
    let result = match Endpoint::parse(url) {
        Ok(endpoint) => match open_attested_session(&endpoint, &attestor, timeout).await {
            Ok(mut connection) => {
                let config = fetch_config(&mut connection, &endpoint).await;
                Ok((connection.verified, config))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let (verified, config) = match result {
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
            return Err(ExitCode::from(code));
        }
    };
    let evidence = &verified.certificate;
    // What a publisher registers for this guest (`cocoon-client registry add`), and the
    // registry that already vouched for it (with --registry).
    let registry_values = config
        .as_ref()
        .and_then(|doc| cocoon_client::registry::required_values(evidence, doc).ok())
        .unwrap_or_default();
    let registry_name = attestor.registry.as_ref().map(|r| r.name());
    if let Some(path) = cert_out {
        if let Err(e) = std::fs::write(&path, certificate_pem(&verified.certificate_der)) {
            eprintln!("cocoon-verify: cannot write {}: {e}", path.display());
            return Err(ExitCode::from(2));
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
            map.insert("config".into(), config.clone().unwrap_or_default());
            map.insert(
                "gpu".into(),
                serde_json::to_value(&verified.gpu).unwrap_or_default(),
            );
            map.insert(
                "registry_values".into(),
                serde_json::to_value(&registry_values).unwrap_or_default(),
            );
            map.insert(
                "registry".into(),
                registry_name.clone().map(Into::into).unwrap_or_default(),
            );
            map.insert("errors".into(), serde_json::json!([]));
        }
        say!("{value}");
    } else {
        print_summary(url, evidence);
        say!(
            "  session        fresh evidence over a random nonce and this TLS session's exporter verified (report data {}…)",
            &verified.session.report_data[..16.min(verified.session.report_data.len())]
        );
        print_gpu(&verified.gpu, !attestor.gpu_rims.is_empty());
        if let Some(name) = &registry_name {
            say!("  registry       image, model and price table registered in {name}");
        }
        for value in &registry_values {
            say!(
                "  registry value {} {} ({})",
                value.kind,
                hex::encode(value.value),
                value.what
            );
        }
        match &config {
            Some(doc) => say!(
                "  served config  (its SHA-384 is the attested config digest)\n{}",
                serde_json::to_string_pretty(doc).unwrap_or_default()
            ),
            None => say!("  served config  (not available)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The served config, checked against the attested digest ([`cocoon_client::config`]);
/// `None` (with the reason on stderr) when it cannot be had or does not match.
async fn fetch_config(
    connection: &mut cocoon_client::AttestedConnection,
    endpoint: &Endpoint,
) -> Option<serde_json::Value> {
    match cocoon_client::config::fetch_config(connection, endpoint).await {
        Ok(config) => Some(config.json),
        Err(e) => {
            eprintln!("cocoon-verify: the served config is not shown: {e}");
            None
        }
    }
}

fn print_gpu(gpu: &Option<cocoon_attestation::gpu::ServedGpuCheck>, with_rims: bool) {
    let Some(gpu) = gpu else {
        say!("  gpu            none bound (the guest serves from the CPU)");
        return;
    };
    say!(
        "  gpu evidence   {} device(s), bound digest {}…",
        gpu.devices.len(),
        &gpu.evidence_digest[..16.min(gpu.evidence_digest.len())]
    );
    for (index, verdict) in &gpu.devices {
        say!(
            "  gpu {index:<10} driver {} vbios {}, chain to '{}'",
            verdict.driver_version.as_deref().unwrap_or("?"),
            verdict.vbios_version.as_deref().unwrap_or("?"),
            verdict.chain.last().map(String::as_str).unwrap_or("?")
        );
        match &verdict.references {
            Some(r) if with_rims => say!(
                "  gpu {index:<10} {} measurements match the RIMs, {} not covered by any RIM given: {:?}",
                r.matched.len(),
                r.uncovered.len(),
                r.uncovered
            ),
            _ => say!(
                "  gpu {index:<10} {} measurements signed by the GPU, NOT compared (no --gpu-rim given)",
                verdict.measurements.len()
            ),
        }
    }
}

fn print_summary(url: &str, e: &Verified) {
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
    for (name, value) in &e.details {
        say!("  {name:<14} {value}");
    }
    if let Some(digest) = &e.config_digest {
        say!("  config digest  {digest}");
    }
    if let Some(key) = &e.receipt_key {
        say!("  receipt key    {key} (signs usage receipts)");
    }
    say!("  report data    {} (binds the TLS key)", e.report_data);
    if let Some(vtpm) = &e.vtpm {
        crate::commands::tpm::print_vtpm(vtpm);
    }
    if let Some(cert) = &e.certificate {
        say!(
            "  certificate    valid {} .. {}",
            format_time(cert.not_before),
            format_time(cert.not_after)
        );
        say!("  sha256 pin     {}", cert.sha256);
    }
}
