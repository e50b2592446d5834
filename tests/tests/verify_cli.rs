//! `cocoon-verify tdx-quote` and `snp-report` on the real public vectors: accepted inside
//! their collateral windows, refused (exit 1, reason in stderr and JSON) when tampered,
//! out of window or against policy, exit 2 on unreadable input.

use std::path::PathBuf;

use cocoon_tests::{cocoon_verify, workspace_root};

fn fixture(rel: &str) -> String {
    workspace_root()
        .join("attestation/tests/fixtures")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cocoon-verify-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const TDX_AT: &str = "2025-07-01T00:00:00Z";
const SNP_AT: &str = "2023-06-01T00:00:00Z";

fn tdx(quote: &str, at: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let collateral = fixture("tdx/dcapqvl_tdx_quote_v4.collateral.json");
    let mut args = vec![
        "tdx-quote",
        quote,
        "--collateral",
        &collateral,
        "--at",
        at,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = cocoon_verify(&args).unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn snp(report: &str, at: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let vcek = fixture("snp/gosev_milan_vcek.der");
    let chain = fixture("snp/amd_ask_ark_milan.pem");
    let mut args = vec![
        "snp-report",
        report,
        "--vcek",
        &vcek,
        "--chain",
        &chain,
        "--at",
        at,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = cocoon_verify(&args).unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tdx_real_quote_accepted_in_window_refused_otherwise() {
    let quote = fixture("tdx/dcapqvl_tdx_quote_v4.bin");
    let (code, json, stderr) = tdx(&quote, TDX_AT, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["tee"], "tdx");
    assert_eq!(json["verified"], true);
    assert_eq!(json["tcb_status"], "UpToDate");
    assert_eq!(json["debug"], false);
    assert_eq!(json["simulated"], false);
    assert_eq!(json["advisories"], serde_json::json!([]));
    assert_eq!(json["errors"], serde_json::json!([]));
    // The registers as Intel's layout places them (offset 48 + 136 for MRTD).
    let raw = std::fs::read(&quote).unwrap();
    assert_eq!(json["measurements"]["mrtd"], hex(&raw[48 + 136..48 + 184]));
    assert_eq!(json["measurements"]["rtmr3"], hex(&raw[48 + 472..48 + 520]));
    assert_eq!(json["report_data"], hex(&raw[568..632]));

    let (code, json, stderr) = tdx(&quote, "2031-01-01T00:00:00Z", &[]);
    assert_eq!(code, Some(1));
    assert_eq!(json["verified"], false);
    assert!(stderr.contains("Expired"), "{stderr}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tdx_tampered_quotes_are_refused() {
    let raw = std::fs::read(fixture("tdx/dcapqvl_tdx_quote_v4.bin")).unwrap();
    // body field (MRTD), REPORTDATA, the quote signature, the QE report inside the
    // certification data, and the TD_ATTRIBUTES debug bit.
    for (name, offset, mask) in [
        ("mrtd", 48 + 136, 0x01u8),
        ("reportdata", 600, 0x80),
        ("signature", 48 + 584 + 4 + 5, 0x01),
        ("qe-report", 48 + 584 + 4 + 128 + 6 + 20, 0x01),
        ("debug-bit", 48 + 120, 0x01),
    ] {
        let mut bad = raw.clone();
        bad[offset] ^= mask;
        let path = tmp(&format!("tdx-{name}.bin"), &bad);
        let (code, json, stderr) = tdx(path.to_str().unwrap(), TDX_AT, &[]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert_eq!(json["verified"], false, "{name}");
        assert!(!json["errors"].as_array().unwrap().is_empty(), "{name}");
    }
    let path = tmp("tdx-truncated.bin", &raw[..700]);
    let (code, _, stderr) = tdx(path.to_str().unwrap(), TDX_AT, &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn tdx_policy_file_pins_and_refuses_by_rule() {
    let quote = fixture("tdx/dcapqvl_tdx_quote_v4.bin");
    let policy = tmp("mrtd.toml", b"[tdx]\nmrtd = [\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\"]\n");
    let (code, json, stderr) = tdx(&quote, TDX_AT, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("tdx.mrtd") && stderr.contains("91eb2b44"),
        "{stderr}"
    );
    assert_eq!(json["verified"], false);
    // The documented example policy pins this quote's MRTD: accepted.
    let example = workspace_root().join("attestation/examples/policy.toml");
    let (code, json, stderr) = tdx(&quote, TDX_AT, &["--policy", example.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["verified"], true);
    let broken = tmp("broken.json", b"{\"allow_debugg\": true}");
    let out = cocoon_verify(&[
        "tdx-quote",
        &quote,
        "--collateral",
        &fixture("tdx/dcapqvl_tdx_quote_v4.collateral.json"),
        "--at",
        TDX_AT,
        "--policy",
        broken.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad policy file is a usage error"
    );
}

#[test]
fn snp_real_report_needs_a_debug_policy_and_tampering_fails() {
    let report = fixture("snp/gosev_milan_attestation.bin");
    let (code, json, stderr) = snp(&report, SNP_AT, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(json["tee"], "sev-snp");
    assert_eq!(json["debug"], true);
    assert!(stderr.contains("debug must be off"), "{stderr}");
    assert_eq!(json["measurements"]["measurement"], "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01");

    // A 2021 debug guest: below Milan's default TCB floor too, so the policy lowers it by name.
    let allow = tmp(
        "allow-debug.toml",
        b"allow_debug = true\n[snp]\nmin_tcb = { bootloader = 0, tee = 0, snp = 0, microcode = 0 }\n",
    );
    let (code, json, stderr) = snp(&report, SNP_AT, &["--policy", allow.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["verified"], true);
    assert_eq!(json["details"]["product"], "Milan");

    let raw = std::fs::read(&report).unwrap();
    for (name, offset) in [("measurement", 0x90usize), ("signature", 0x2A0 + 3)] {
        let mut bad = raw.clone();
        bad[offset] ^= 1;
        let path = tmp(&format!("snp-{name}.bin"), &bad);
        let (code, _, stderr) = snp(
            path.to_str().unwrap(),
            SNP_AT,
            &["--policy", allow.to_str().unwrap()],
        );
        assert_eq!(code, Some(1), "{name}: {stderr}");
    }
    // The same certificates as one JSON bundle.
    let vcek_pem = cocoon_attestation::ratls::certificate_pem(
        &std::fs::read(fixture("snp/gosev_milan_vcek.der")).unwrap(),
    );
    let chain_pem = std::fs::read_to_string(fixture("snp/amd_ask_ark_milan.pem")).unwrap();
    let bundle = tmp(
        "snp-bundle.json",
        serde_json::json!({"vcek": vcek_pem, "cert_chain": chain_pem})
            .to_string()
            .as_bytes(),
    );
    let out = cocoon_verify(&[
        "snp-report",
        &report,
        "--bundle",
        bundle.to_str().unwrap(),
        "--at",
        SNP_AT,
        "--policy",
        allow.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Outside the VCEK's validity window.
    let (code, _, stderr) = snp(
        &report,
        "2040-01-01T00:00:00Z",
        &["--policy", allow.to_str().unwrap()],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not valid at"), "{stderr}");
    // The wrong product's chain.
    let out = cocoon_verify(&[
        "snp-report",
        &report,
        "--vcek",
        &fixture("snp/gosev_milan_vcek.der"),
        "--chain",
        &fixture("snp/amd_ask_ark_genoa.pem"),
        "--at",
        SNP_AT,
        "--policy",
        allow.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unreadable_input_is_a_usage_error() {
    let out = cocoon_verify(&[
        "snp-report",
        "/nonexistent",
        "--vcek",
        "x",
        "--chain",
        "y",
        "--at",
        SNP_AT,
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read report"));
    let out =
        cocoon_verify(&["tdx-quote", "q", "--collateral", "c", "--at", "not-a-time"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn simulated_snp_report_needs_allow_simulated() {
    use cocoon_attestation_dev::DevSnpPki;
    let pki = DevSnpPki::dev().unwrap();
    let report = tmp(
        "dev-snp.bin",
        &pki.report(&[1; 64], &[2; 48], &[3; 32], false),
    );
    let vcek = tmp("dev-vcek.der", pki.vcek_der());
    let chain = tmp("dev-chain.pem", pki.chain_pem().as_bytes());
    let args = |extra: &'static [&'static str]| {
        let mut v: Vec<String> = [
            "snp-report",
            report.to_str().unwrap(),
            "--vcek",
            vcek.to_str().unwrap(),
            "--chain",
            chain.to_str().unwrap(),
            "--at",
            "2030-01-01T00:00:00Z",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        cocoon_verify(&refs).unwrap()
    };
    let out = run(args(&[]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a trusted AMD root"));
    let out = run(args(&["--allow-simulated"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["simulated"], true);
    assert_eq!(json["tee"], "sev-snp");
}
