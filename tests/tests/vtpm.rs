//! vTPM end to end, through the binaries: a guest started with `--tee simulated-vtpm`
//! against swtpm (a real TPM 2.0 implementation, started by the test) behind the host
//! agent, verified by `cocoon-verify endpoint` with the vTPM flags; and `cocoon-verify
//! tpm-quote` on evidence recorded on real Azure confidential VMs.

use std::path::PathBuf;

use cocoon_attestation_dev::swtpm::Swtpm;
use cocoon_tests::{binary, cocoon_verify, model_path, start_appliance_with_tee};
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

const GENOA_NONCE: &str = "0218488bae25d2509232bf676f1a66a30d7372add909109b36016ef136f2938ca05475f8b46094de6b64270ea35d950f";

#[test]
fn vtpm_simulated_guest_verifies_through_cocoon_verify_endpoint() {
    // Declared first, dropped last: the guest keeps its connection to the vTPM.
    let swtpm = Swtpm::start().expect("swtpm starts");
    let vtpm = swtpm.endpoint_arg();
    let app =
        start_appliance_with_tee("simulated-vtpm", &["--vtpm", &vtpm]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let base = ["endpoint", &url, "--allow-simulated", "--accept-any-image"];

    let out =
        cocoon_verify(&[&base[..], &["--require-vtpm", "--vtpm-pcr", "15", "--json"]].concat())
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["tee"], "sev-snp");
    assert_eq!(summary["vtpm"]["binding"], "report-data");
    let pcrs = summary["vtpm"]["pcrs"].as_object().expect("PCR map");
    assert_eq!(pcrs.len(), 24, "all 24 SHA-256 PCRs quoted by default");
    // PCR 15 holds exactly one extension: SHA-256 of the attested config digest.
    let config = hex::decode(summary["config_digest"].as_str().unwrap()).unwrap();
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(Sha256::digest(&config));
    let pcr15 = hex::encode(h.finalize());
    assert_eq!(pcrs["15"], pcr15.as_str());

    // Pinned to its value: verified; to another value: refused naming the rule.
    let pinned = format!("15={pcr15}");
    let out = cocoon_verify(&[&base[..], &["--vtpm-pcr", &pinned]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("AK bound by report-data"), "{text}");
    assert!(text.contains(&pcr15), "{text}");
    let wrong = format!("15={}", "00".repeat(32));
    let out = cocoon_verify(&[&base[..], &["--vtpm-pcr", &wrong]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vtpm.pcrs"),
        "{out:?}"
    );
    // A malformed PCR rule is a usage error.
    let out = cocoon_verify(&[&base[..], &["--vtpm-pcr", "24"]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn vtpm_simulated_azure_guest_verifies_through_its_hcl_report() {
    let swtpm = Swtpm::start().expect("swtpm starts");
    let vtpm = swtpm.endpoint_arg();
    let app = start_appliance_with_tee("simulated-azure-sev-snp", &["--vtpm", &vtpm])
        .expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let out = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--accept-any-image",
        "--require-vtpm",
        "--vtpm-pcr",
        "15",
        "--json",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["tee"], "sev-snp");
    assert_eq!(summary["vtpm"]["binding"], "azure-hcl");
    // HOST_DATA is the paravisor's, not the config's: the config is in PCR 15.
    let config = hex::decode(summary["config_digest"].as_str().unwrap()).unwrap();
    let configs_host_data = hex::encode(Sha256::digest(&config));
    assert_ne!(
        summary["measurements"]["host_data"],
        configs_host_data.as_str()
    );
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(Sha256::digest(&config));
    assert_eq!(
        summary["vtpm"]["pcrs"]["15"],
        hex::encode(h.finalize()).as_str()
    );
}

#[test]
fn vtpm_required_but_absent_is_refused() {
    let app = start_appliance_with_tee("simulated-sev-snp", &[]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let out = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--accept-any-image",
        "--require-vtpm",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no vTPM quote"),
        "{out:?}"
    );
}

#[test]
fn vtpm_guest_without_its_tpm_does_not_start() {
    // --tee simulated-vtpm without --vtpm, and with a socket nobody serves: the guest
    // exits at start, saying why.
    for (extra, says) in [
        (&[][..], "needs --vtpm"),
        (
            &["--vtpm", "unix:/nonexistent/cocoon-swtpm.sock"][..],
            "vTPM unix:/nonexistent/cocoon-swtpm.sock: connect",
        ),
    ] {
        let out = std::process::Command::new(binary("cocoon-guest").unwrap())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tee",
                "simulated-vtpm",
                "--model",
            ])
            .arg(model_path().unwrap())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn vtpm_tpm_quote_cli_on_recorded_azure_evidence() {
    let genoa = fixture("vtpm/azure_snp_genoa_evidence_v0.json");
    let chain = fixture("snp/amd_ask_ark_genoa.pem");
    let at = "2026-01-01T00:00:00Z";
    let base = [
        "tpm-quote",
        &genoa,
        "--nonce",
        GENOA_NONCE,
        "--chain",
        &chain,
        "--at",
        at,
    ];
    let out = cocoon_verify(&[&base[..], &["--json"]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["hardware"]["verified"], true);
    assert_eq!(json["hardware"]["tee"], "sev-snp");
    assert_eq!(json["vtpm"]["binding"], "azure-hcl");
    let pcr0 = json["vtpm"]["pcrs"]["0"].as_str().unwrap().to_string();
    assert!(pcr0.starts_with("afd689d0"), "{pcr0}");

    // PCR rules apply: the recorded PCR 0 passes, another value is refused.
    let ok = format!("0={pcr0}");
    let out = cocoon_verify(&[&base[..], &["--vtpm-pcr", &ok]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let bad = format!("0={}", "11".repeat(32));
    let out = cocoon_verify(&[&base[..], &["--vtpm-pcr", &bad]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Another nonce: refused, naming the qualifying data.
    let milan = fixture("vtpm/azure_snp_milan_evidence_v1.json");
    let milan_chain = fixture("snp/amd_ask_ark_milan.pem");
    let out = cocoon_verify(&[
        "tpm-quote",
        &milan,
        "--nonce-text",
        "challengf",
        "--chain",
        &milan_chain,
        "--at",
        at,
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("qualifying data"),
        "{out:?}"
    );
    // The right one, at a time the VCEK was not yet valid: refused by the chain check.
    let out = cocoon_verify(&[
        "tpm-quote",
        &milan,
        "--nonce-text",
        "challenge",
        "--chain",
        &milan_chain,
        "--at",
        "2015-01-01T00:00:00Z",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Usage errors: no chain for SEV-SNP evidence, an unreadable file.
    let out = cocoon_verify(&["tpm-quote", &genoa, "--nonce", GENOA_NONCE, "--at", at]).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = cocoon_verify(&[
        "tpm-quote",
        "/nonexistent.json",
        "--nonce",
        "00",
        "--at",
        at,
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn vtpm_tpm_quote_cli_on_recorded_gce_attestation() {
    let gce = fixture("vtpm/gce_cos85_nonce9009.pb");
    let at = "2026-01-01T00:00:00Z";
    // No TEE report in it: refused by default, saying why.
    let out = cocoon_verify(&["tpm-quote", &gce, "--nonce", "9009", "--at", at]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no TEE report"),
        "{out:?}"
    );
    let out = cocoon_verify(&[
        "tpm-quote",
        &gce,
        "--nonce",
        "9009",
        "--at",
        at,
        "--accept-vtpm-without-tee",
        "--json",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vtpm"]["binding"], "gce-ak-certificate");
    assert_eq!(json["ak_certificate_chain"].as_array().unwrap().len(), 3);
    assert_eq!(json["vtpm"]["pcrs"].as_object().unwrap().len(), 24);
    // Another nonce: refused even with the flag.
    let out = cocoon_verify(&[
        "tpm-quote",
        &gce,
        "--nonce",
        "9010",
        "--at",
        at,
        "--accept-vtpm-without-tee",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
