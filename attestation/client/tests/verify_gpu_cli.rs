//! `cocoon-verify gpu-report` on the real nvtrust H100 evidence: accepted for its nonce
//! inside the chain's validity, refused (exit 1, reason on stderr and in JSON) when
//! tampered, for another nonce or at a time outside the chain's window; exit 2 for
//! unreadable files and malformed arguments.

use std::path::PathBuf;
use std::process::Output;

const NONCE_2023: &str = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
const NONCE_2025: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
const AT: &str = "2024-06-01T00:00:00Z";

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gpu")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn tmp(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("cocoon-verify-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn cocoon_verify(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cocoon-verify"))
        .args(args)
        .output()
        .unwrap()
}

fn gpu(
    report: &str,
    chain: &str,
    nonce: &str,
    extra: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec![
        "gpu-report",
        report,
        "--chain",
        chain,
        "--nonce",
        nonce,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = cocoon_verify(&args);
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn r2023() -> (String, String) {
    (
        fixture("nvtrust2023_h100_attestation_report.hex.txt"),
        fixture("nvtrust2023_h100_cert_chain.pem"),
    )
}

#[test]
fn gpu_cli_real_reports_verify() {
    let (report, chain) = r2023();
    let (code, json, stderr) = gpu(&report, &chain, NONCE_2023, &["--at", AT]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["verified"], true);
    assert_eq!(json["tee"], "nvidia-gpu");
    assert_eq!(json["nonce"], NONCE_2023);
    assert_eq!(json["spdm_version"], "1.1");
    assert_eq!(json["driver_version"], "545.00");
    assert_eq!(json["vbios_version"], "96.00.5E.00.01");
    assert_eq!(json["measurements"].as_object().unwrap().len(), 64);
    assert_eq!(json["chain"].as_array().unwrap().len(), 5);
    assert!(json["chain"][4]
        .as_str()
        .unwrap()
        .contains("NVIDIA Device Identity CA"));
    assert_eq!(json["errors"], serde_json::json!([]));
    assert_eq!(json["evidence_digest"].as_str().unwrap().len(), 96);

    // The 2025 report, without --at (now: the chain is valid until 9999), text output.
    let out = cocoon_verify(&[
        "gpu-report",
        &fixture("nvtrust2025_h100_attestation_report.hex.txt"),
        "--chain",
        &fixture("nvtrust2025_h100_cert_chain.pem"),
        "--nonce",
        NONCE_2025,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("VERIFIED"), "{stdout}");
    assert!(
        stdout.contains("550.90.07") && stdout.contains("96.00.9F.00.01"),
        "{stdout}"
    );
}

#[test]
fn gpu_cli_refusals_exit_1_with_the_reason() {
    let (report, chain) = r2023();
    // Another nonce.
    let mut other = NONCE_2023.to_string();
    other.replace_range(0..2, "00");
    let (code, json, stderr) = gpu(&report, &chain, &other, &["--at", AT]);
    assert_eq!(code, Some(1));
    assert_eq!(json["verified"], false);
    assert!(stderr.contains("is not the expected nonce"), "{stderr}");
    // Outside the chain's validity (before the FMC leaf's notBefore, 2022-03-01).
    let (code, _, stderr) = gpu(
        &report,
        &chain,
        NONCE_2023,
        &["--at", "2022-01-01T00:00:00Z"],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not valid at"), "{stderr}");
    // Tampered: a measurement hex digit, a signature hex digit, truncated.
    let text = std::fs::read_to_string(&report).unwrap();
    let flip = |pos: usize| {
        let mut b = text.clone().into_bytes();
        b[pos] = if b[pos] == b'0' { b'1' } else { b'0' };
        b
    };
    let measurement = 2 * (37 + 8 + 7 + 3);
    for (name, bytes) in [
        ("measurement", flip(measurement)),
        ("signature", flip(text.len() - 10)),
        ("truncated", text.as_bytes()[..text.len() - 2].to_vec()),
        ("odd", text.as_bytes()[..text.len() - 1].to_vec()),
    ] {
        let path = tmp(&format!("gpu-{name}.hex"), &bytes);
        let (code, json, stderr) = gpu(&path, &chain, NONCE_2023, &["--at", AT]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert_eq!(json["verified"], false, "{name}");
        assert!(!json["errors"].as_array().unwrap().is_empty(), "{name}");
    }
    // The other GPU's chain.
    let (code, _, stderr) = gpu(
        &report,
        &fixture("nvtrust2025_h100_cert_chain.pem"),
        NONCE_2023,
        &["--at", AT],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("signature"), "{stderr}");
    // A chain without the root.
    let pem = std::fs::read_to_string(&chain).unwrap();
    let cut = pem.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    let path = tmp("gpu-no-root.pem", &pem.as_bytes()[..cut]);
    let (code, _, stderr) = gpu(&report, &path, NONCE_2023, &["--at", AT]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not at a pinned root"), "{stderr}");
}

#[test]
fn gpu_cli_usage_errors_exit_2() {
    let (report, chain) = r2023();
    let (code, _, stderr) = gpu("/nonexistent", &chain, NONCE_2023, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot read report"), "{stderr}");
    let (code, _, stderr) = gpu(&report, "/nonexistent", NONCE_2023, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot read certificate chain"), "{stderr}");
    for nonce in ["zz", "4cff"] {
        let (code, _, _) = gpu(&report, &chain, nonce, &[]);
        assert_eq!(code, Some(2), "{nonce}");
    }
    let (code, _, _) = gpu(&report, &chain, NONCE_2023, &["--at", "yesterday"]);
    assert_eq!(code, Some(2));
}

/// `--rim`: NVIDIA's driver and VBIOS RIMs for the 2023 report: verified, 33 references
/// matched; the 2025 report against them and an expired RIM chain: refused with the reason.
#[test]
fn gpu_cli_rims_give_reference_values() {
    let (report, chain) = r2023();
    let driver = fixture("nvtrust_driver_rim_test_no_gpu.swidtag");
    let vbios = fixture("nvtrust_vbios_rim_1010_0200_882_96005E0001_test_no_gpu.swidtag");
    let rims = ["--rim", driver.as_str(), "--rim", vbios.as_str()];
    let mut extra = vec!["--at", AT];
    extra.extend_from_slice(&rims);
    let (code, json, stderr) = gpu(&report, &chain, NONCE_2023, &extra);
    assert_eq!(code, Some(0), "{stderr} {json}");
    assert_eq!(json["references"]["matched"].as_array().unwrap().len(), 33);
    assert_eq!(
        json["references"]["uncovered"].as_array().unwrap().len(),
        31
    );
    assert_eq!(json["rims"].as_array().unwrap().len(), 2);

    let r2025 = fixture("nvtrust2025_h100_attestation_report.hex.txt");
    let c2025 = fixture("nvtrust2025_h100_cert_chain.pem");
    let (code, json, stderr) = gpu(&r2025, &c2025, NONCE_2025, &extra);
    assert_eq!(code, Some(1), "{stderr} {json}");
    assert!(
        stderr.contains("but the report states driver 550.90.07"),
        "{stderr}"
    );

    let mut late = vec!["--at", "2026-12-01T00:00:00Z"];
    late.extend_from_slice(&rims);
    let (code, _, stderr) = gpu(&report, &chain, NONCE_2023, &late);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("RIM "), "{stderr}");

    let (code, _, stderr) = gpu(
        &report,
        &chain,
        NONCE_2023,
        &["--rim", "/nonexistent/rim.xml"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot read RIM"), "{stderr}");
}
