//! The OpenAI surface end to end: every parameter through the official `openai` SDK,
//! and `schemathesis` (property-based, from the served OpenAPI document) against a
//! real guest, which must never answer with a server error or off its own document.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cocoon_tests::{cocoon_verify, python, start_appliance, workspace_root, Service};

/// Verifies the endpoint (simulated evidence allowed) and writes its certificate.
fn verified_cert(url: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join("guest.pem");
    let cert = cert.to_str().unwrap().to_string();
    let out = cocoon_verify(&[
        "endpoint",
        url,
        "--allow-simulated",
        "--accept-any-image",
        "--cert-out",
        &cert,
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    cert
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openai_sdk_covers_every_parameter() {
    let app = start_appliance(&["--max-prompt-tokens", "300"]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let dir = std::env::temp_dir().join(format!("cocoon-surface-{}", std::process::id()));
    let cert = verified_cert(&url, &dir);
    let out = Command::new(python())
        .arg(workspace_root().join("tests/python/openai_surface.py"))
        .args([&format!("{url}/v1"), &cert, &app.model_id, "300"])
        .output()
        .expect("python runs (make venv installs the openai SDK)");
    assert_success("openai SDK surface checks", &out);
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["context_length"], "context_length_exceeded");
    assert_eq!(report["tools"], "unsupported_parameter");
    eprintln!("openai surface: {report}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn schemathesis_finds_no_server_error_against_openapi_json() {
    // Small token limits keep each generated request cheap on a CPU.
    let cmd = cocoon_tests::simulated_guest_command(&[
        "--default-max-tokens",
        "2",
        "--max-tokens-limit",
        "4",
        "--max-prompt-tokens",
        "256",
        "--allow-anonymous",
    ]);
    let (_guest, rest) = Service::start(
        "cocoon-guest",
        cmd,
        "cocoon-guest: listening on https://",
        Duration::from_secs(600),
    )
    .expect("guest starts");
    let addr = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let url = format!("https://{addr}");
    let dir = std::env::temp_dir().join(format!("cocoon-schemathesis-{}", std::process::id()));
    let cert = verified_cert(&url, &dir);
    let out = Command::new(python().with_file_name("schemathesis"))
        .args(["run", &format!("{url}/openapi.json"), "--tls-verify", &cert])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection"])
        .args(["--max-examples", "20", "--seed", "1", "--workers", "1"])
        // A request may queue behind 64 sequences (8 prompts x n = 8) on a busy CPU:
        // slow is not wrong; a hang would still end at the server's own time limit.
        .args(["--request-timeout", "300"])
        .args(["--generation-database", "none", "--no-color"])
        .current_dir(&dir)
        .output()
        .expect("schemathesis runs (make venv installs it)");
    assert_success("schemathesis", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("10 selected / 10 total"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains(" passed") && !summary.contains("failed") && !summary.contains("errored"),
        "{stdout}"
    );
    eprintln!("schemathesis: {}", summary.trim());
    let _ = std::fs::remove_dir_all(dir);
}
