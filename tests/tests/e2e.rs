//! The walking skeleton end to end: guest + host agent as real processes, `cocoon-verify`
//! against the host agent's port, then the official `openai` Python SDK through the relay
//! with TLS pinned to the guest's verified certificate.

use std::process::Command;

use cocoon_tests::{
    binary, cocoon_verify, python, start_appliance, start_appliance_with_tee, start_proxy,
    workspace_root,
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
        "--accept-any-image",
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
    assert_eq!(summary["certificate"]["sha256"], app.guest_pin.as_str());
    assert_eq!(summary["report_data"].as_str().unwrap().len(), 128);

    // The human summary prints the pin too.
    let text =
        cocoon_verify(&["endpoint", &url, "--allow-simulated", "--accept-any-image"]).unwrap();
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
    let out =
        cocoon_verify(&["endpoint", &url, "--allow-simulated", "--accept-any-image"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("debug"), "{stderr}");
    let allowed = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--accept-any-image",
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
    let ok = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--accept-any-image",
        "--json",
    ])
    .unwrap();
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
    assert_eq!(summary["certificate"]["sha256"], app.guest_pin.as_str());
}

#[test]
fn openai_sdk_through_the_verifying_client_proxy() {
    let app = start_appliance(&[]).expect("appliance starts");
    let upstream = format!("https://{}", app.agent_addr);
    let (_proxy, addr) =
        start_proxy(&upstream, &["--allow-simulated", "--accept-any-image"]).expect("proxy starts");
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

/// One plain-HTTP GET to a local address (the proxy's side); returns the raw response.
fn plain_get(addr: &str, path: &str) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    response
}

#[test]
fn measured_config_document_hashes_to_the_attested_digest() {
    for tee in ["simulated", "simulated-sev-snp"] {
        let app = start_appliance_with_tee(tee, &["--max-prompt-tokens", "1234"])
            .expect("appliance starts");
        let upstream = format!("https://{}", app.agent_addr);
        let summary: serde_json::Value = serde_json::from_str(&verify_ok(&[
            "endpoint",
            &upstream,
            "--allow-simulated",
            "--accept-any-image",
            "--json",
        ]))
        .unwrap();
        let (_proxy, addr) =
            start_proxy(&upstream, &["--allow-simulated", "--accept-any-image"]).expect("proxy");
        let response = plain_get(&addr, "/v1/attestation/config");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers end");
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let body = &response[split + 4..];
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha384::digest(body));
        assert_eq!(summary["config_digest"], digest.as_str(), "{tee}");
        assert!(
            head.contains(&format!("x-cocoon-config-sha384: {digest}")),
            "{head}"
        );
        let config: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(config["limits"]["max_prompt_tokens"], 1234);
        assert_eq!(config["model"]["id"], app.model_id.as_str());
        let digest_bytes = hex::decode(&digest).unwrap();
        if tee == "simulated" {
            // RTMR3 is the replay of the event log: the config digest extended into zero.
            let rtmr3 = cocoon_attestation::event_log::rtmr_extend(&[0; 48], &digest_bytes);
            assert_eq!(
                summary["measurements"]["rtmr3"],
                hex::encode(rtmr3).as_str()
            );
        } else {
            let host_data = cocoon_attestation::report_data::snp_host_data(&digest_bytes);
            assert_eq!(
                summary["measurements"]["host_data"],
                hex::encode(host_data).as_str()
            );
        }
    }
}

/// Runs `cocoon-verify` and returns its stdout, failing the test on a non-zero exit.
fn verify_ok(args: &[&str]) -> String {
    let out = cocoon_verify(args).unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn signed_manifest_selects_what_the_client_accepts() {
    let app = start_appliance(&[]).expect("appliance starts");
    let upstream = format!("https://{}", app.agent_addr);
    let dir = std::env::temp_dir().join(format!("cocoon-manifest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();

    // What the guest runs, as the image build would have computed it.
    let summary: serde_json::Value = serde_json::from_str(&verify_ok(&[
        "endpoint",
        &upstream,
        "--allow-simulated",
        "--accept-any-image",
        "--json",
    ]))
    .unwrap();
    let m = &summary["measurements"];
    let reference = |mrtd: &str| {
        serde_json::json!({
            "version": 1,
            "image": "cocoon-guest e2e",
            "release": 1,
            "not_after": "2099-01-01T00:00:00Z",
            "tdx": {"mrtd": mrtd, "rtmr0": m["rtmr0"], "rtmr1": m["rtmr1"], "rtmr2": m["rtmr2"]},
            "config_digests": [summary["config_digest"]],
        })
    };
    std::fs::write(
        path("good.json"),
        reference(m["mrtd"].as_str().unwrap()).to_string(),
    )
    .unwrap();
    std::fs::write(path("other.json"), reference(&"ab".repeat(48)).to_string()).unwrap();

    // Publisher key, and a second key nobody trusts.
    let public = verify_ok(&["manifest", "keygen", "--out", &path("publisher.pem")]);
    let public = public.trim().to_string();
    assert!(public.starts_with("ed25519:"), "{public}");
    verify_ok(&["manifest", "keygen", "--out", &path("stranger.pem")]);
    // keygen never overwrites a key.
    let again = cocoon_verify(&["manifest", "keygen", "--out", &path("publisher.pem")]).unwrap();
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    for (input, key, out) in [
        ("good.json", "publisher.pem", "good.manifest"),
        ("other.json", "publisher.pem", "other.manifest"),
        ("good.json", "stranger.pem", "forged.manifest"),
    ] {
        verify_ok(&[
            "manifest",
            "sign",
            &path(input),
            "--key",
            &path(key),
            "--out",
            &path(out),
        ]);
    }
    let shown = verify_ok(&[
        "manifest",
        "show",
        &path("good.manifest"),
        "--manifest-key",
        &public,
    ]);
    assert!(shown.contains("cocoon-guest e2e"), "{shown}");

    let with_manifest = |name: &str| {
        cocoon_verify(&[
            "endpoint",
            &upstream,
            "--allow-simulated",
            "--accept-any-image",
            "--manifest",
            &path(name),
            "--manifest-key",
            &public,
        ])
        .unwrap()
    };
    assert_eq!(with_manifest("good.manifest").status.code(), Some(0));
    let other = with_manifest("other.manifest");
    assert_eq!(other.status.code(), Some(1), "{other:?}");
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("tdx.mrtd"),
        "{other:?}"
    );
    let forged = with_manifest("forged.manifest");
    assert_eq!(forged.status.code(), Some(2), "{forged:?}");
    assert!(
        String::from_utf8_lossy(&forged.stderr).contains("no valid signature by a trusted key"),
        "{forged:?}"
    );
    // A manifest without the key that vouches for it is a usage error.
    let keyless =
        cocoon_verify(&["endpoint", &upstream, "--manifest", &path("good.manifest")]).unwrap();
    assert_eq!(keyless.status.code(), Some(2), "{keyless:?}");

    // The proxy: the listed image is served, the unlisted one never gets a listener.
    let (_proxy, addr) = start_proxy(
        &upstream,
        &[
            "--allow-simulated",
            "--accept-any-image",
            "--manifest",
            &path("good.manifest"),
            "--manifest-key",
            &public,
        ],
    )
    .expect("proxy starts with the matching manifest");
    let response = String::from_utf8_lossy(&plain_get(&addr, "/v1/models")).into_owned();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&app.model_id), "{response}");

    let refused = Command::new(binary("cocoon-client").unwrap())
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--allow-simulated",
            "--accept-any-image",
        ])
        .args([
            "--manifest",
            &path("other.manifest"),
            "--manifest-key",
            &public,
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("REFUSED") && stderr.contains("tdx.mrtd"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
