//! The walking skeleton end to end: guest + host agent as real processes, `cocoon-verify`
//! against the host agent's port, then the official `openai` Python SDK through the relay
//! with TLS pinned to the guest's verified certificate.

use std::process::Command;

use cocoon_tests::{
    binary, cocoon_verify, python, start_appliance, start_appliance_with_tee, workspace_root,
    Service,
};

#[test]
fn verify_then_openai_sdk_through_the_host_agent() {
    let mut app = start_appliance(&[]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);

    // Without --allow-simulated the simulated evidence is refused, with the reason.
    let refused = cocoon_verify(&["endpoint", &url]).unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("SIMULATED") && stderr.contains("--allow-simulated"),
        "{stderr}"
    );

    // With it: verified, JSON summary, the pin equals what the guest printed.
    let dir = std::env::temp_dir().join(format!("cocoon-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("guest.pem");
    let ok = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--json",
        "--cert-out",
        cert.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let summary: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(summary["verified"], true);
    assert_eq!(summary["simulated"], true);
    assert_eq!(summary["tee"], "tdx");
    assert_eq!(summary["debug"], false);
    assert_eq!(
        summary["tcb_status"], "UpToDate",
        "full DCAP verification against the dev root"
    );
    assert_eq!(summary["certificate_sha256"], app.guest_pin.as_str());
    assert_eq!(summary["report_data"].as_str().unwrap().len(), 128);

    // The human summary prints the pin too.
    let text = cocoon_verify(&["endpoint", &url, "--allow-simulated"]).unwrap();
    let text_out = String::from_utf8_lossy(&text.stdout);
    assert!(
        text_out.contains(&app.guest_pin) && text_out.contains("SIMULATED"),
        "{text_out}"
    );

    // The official SDK, through the host agent, TLS verified against that certificate.
    let script = workspace_root().join("tests/python/openai_e2e.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("{url}/v1"))
        .arg(&cert)
        .arg(&app.model_id)
        .output()
        .expect("python runs (make venv installs the openai SDK)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai SDK checks failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["ok"], true);
    eprintln!("openai e2e: {report}");

    assert!(app.guest.is_running() && app.agent.is_running());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn debug_guest_is_refused_and_unreachable_endpoint_exits_2() {
    let app = start_appliance(&["--simulated-debug"]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let out = cocoon_verify(&["endpoint", &url, "--allow-simulated"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("debug"), "{stderr}");
    let allowed = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--allow-debug",
        "--json",
    ])
    .unwrap();
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
    let summary: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(summary["debug"], true);
    drop(app);

    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = cocoon_verify(&[
        "endpoint",
        &format!("https://127.0.0.1:{port}"),
        "--timeout",
        "5",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let bad = cocoon_verify(&["endpoint", "http://127.0.0.1:1"]).unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("https://HOST:PORT"));
}

#[test]
fn simulated_snp_guest_verifies_through_the_dev_amd_chain() {
    let app = start_appliance_with_tee("simulated-sev-snp", &[]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let refused = cocoon_verify(&["endpoint", &url]).unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let ok = cocoon_verify(&["endpoint", &url, "--allow-simulated", "--json"]).unwrap();
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let summary: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(summary["tee"], "sev-snp");
    assert_eq!(summary["simulated"], true);
    assert_eq!(summary["debug"], false);
    assert_eq!(
        summary["measurements"]["measurement"]
            .as_str()
            .unwrap()
            .len(),
        96
    );
    assert_eq!(summary["certificate_sha256"], app.guest_pin.as_str());
}

fn start_proxy(upstream: &str, extra: &[&str]) -> anyhow::Result<(Service, String)> {
    let mut cmd = Command::new(binary("cocoon-client")?);
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream])
        .args(extra);
    let (proxy, rest) = Service::start(
        "cocoon-client",
        cmd,
        "cocoon-client: listening on http://",
        std::time::Duration::from_secs(60),
    )?;
    let addr = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((proxy, addr))
}

#[test]
fn openai_sdk_through_the_verifying_client_proxy() {
    let app = start_appliance(&[]).expect("appliance starts");
    let upstream = format!("https://{}", app.agent_addr);
    let (_proxy, addr) = start_proxy(&upstream, &["--allow-simulated"]).expect("proxy starts");
    let script = workspace_root().join("tests/python/openai_e2e.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{addr}/v1"))
        .arg("none")
        .arg(&app.model_id)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "openai SDK through cocoon-client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --allow-simulated the proxy refuses to start: nothing is ever forwarded.
    let refused = start_proxy(&upstream, &[]);
    assert!(
        refused.is_err(),
        "a proxy that cannot verify must not listen"
    );
}
