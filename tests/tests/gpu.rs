//! The GPU in the client's proof (issue 19), against the real guest binary with the
//! development GPU (`--gpu simulated`: real-format H100 SPDM reports signed by the
//! development GPU PKI; the engine runs on the CPU):
//!
//! - the guest binds the digest of its GPU evidence in its RA-TLS evidence, serves the
//!   evidence at `GET /v1/attestation/gpu`, and clients verify it (nonce from the TLS
//!   key, chain to a trusted GPU root) on every attested connection;
//! - `cocoon-verify endpoint` shows it, `--require-gpu` refuses a CPU guest, RIMs whose
//!   signature cannot be verified refuse, NVIDIA's root alone refuses the development GPU;
//! - a misconfigured GPU stops the guest before it serves, naming the failing check.

use std::time::Duration;

use cocoon_attestation::gpu::{gpu_nonce_for_key, GpuEvidenceDocument};
use cocoon_attestation::ratls::parse_certificate;
use cocoon_client::{open_attested_session, Endpoint};
use cocoon_tests::{
    cocoon_verify, dev_attestor, dev_attestor_with, guest_exit_output, start_guest, GuestProcess,
};

const WAIT: Duration = Duration::from_secs(60);

/// A simulated guest serving from the development GPU, and its endpoint.
fn start_gpu_guest() -> (GuestProcess, Endpoint) {
    let guest = start_guest(
        "simulated",
        true,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--gpu", "simulated"],
    )
    .unwrap();
    let endpoint = Endpoint::parse(&format!("https://{}", guest.addr)).unwrap();
    (guest, endpoint)
}

fn fixture(name: &str) -> String {
    cocoon_tests::workspace_root()
        .join("attestation/tests/fixtures/gpu")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn gpu_evidence_is_bound_served_and_verified_by_clients() {
    let (guest, endpoint) = start_gpu_guest();
    let mut connection = open_attested_session(&endpoint, &dev_attestor(), WAIT)
        .await
        .unwrap();
    let gpu = connection.verified.gpu.clone().expect("the GPU check ran");
    assert!(gpu.verified, "{:?}", gpu.errors);
    assert_eq!(gpu.devices.len(), 1);
    assert_eq!(
        connection
            .verified
            .certificate
            .gpu_evidence_digest
            .as_deref(),
        Some(gpu.evidence_digest.as_str())
    );
    // The served evidence is for this very key.
    let (status, body) = connection
        .get(&endpoint, "/v1/attestation/gpu", &[], 1 << 20)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let doc = GpuEvidenceDocument::parse(&body).unwrap();
    let cert = parse_certificate(&connection.verified.certificate_der).unwrap();
    assert_eq!(doc.nonce, hex::encode(gpu_nonce_for_key(&cert.spki_der)));
    assert_eq!(doc.evidence_digest, gpu.evidence_digest);
    // The measured config records the requirement.
    let (_, config) = connection
        .get(&endpoint, "/v1/attestation/config", &[], 1 << 20)
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        config["gpu"],
        serde_json::json!({"vendor": "nvidia", "protected_pcie": false, "confidential": true})
    );

    // The KV cache is sized from the GPU's free memory (80 GiB less 512 MiB on the
    // development GPU), not left unbounded.
    let (_, health) = connection
        .get(&endpoint, "/healthz", &[], 1 << 20)
        .await
        .unwrap();
    let health: serde_json::Value = serde_json::from_slice(&health).unwrap();
    let capacity = health["kv_cache"]["capacity_tokens"].as_u64();
    assert!(capacity.is_some_and(|c| c > 100_000), "{health}");

    // The CLI: verified with the GPU shown; NVIDIA's root alone is not enough for a
    // development GPU; RIMs whose signer has expired refuse.
    let url = format!("https://{}", guest.addr);
    let base = [
        "endpoint",
        url.as_str(),
        "--allow-simulated",
        "--accept-any-image",
        "--offline",
    ];
    let out = cocoon_verify(&[&base[..], &["--json", "--require-gpu"]].concat()).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["gpu"]["verified"], true);
    assert_eq!(json["gpu_evidence_digest"], gpu.evidence_digest.as_str());
    let out = cocoon_verify(&base).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT compared (no --gpu-rim given)"), "{text}");
    let driver_rim = fixture("nvtrust_driver_rim_test_no_gpu.swidtag");
    let out = cocoon_verify(&[&base[..], &["--gpu-rim", driver_rim.as_str()]].concat()).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GPU evidence") && err.contains("RIM"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gpu_required_by_policy_refuses_a_cpu_guest_and_a_foreign_gpu_root() {
    let cpu = start_guest("simulated", true, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let endpoint = Endpoint::parse(&format!("https://{}", cpu.addr)).unwrap();
    // Without the rule a CPU guest passes, and says it has no GPU.
    let connection = open_attested_session(&endpoint, &dev_attestor(), WAIT)
        .await
        .unwrap();
    assert!(connection.verified.gpu.is_none());
    let strict = dev_attestor_with(cocoon_attestation::Policy {
        accept_any_image: true,
        require_gpu: true,
        ..Default::default()
    });
    let err = open_attested_session(&endpoint, &strict, WAIT)
        .await
        .err()
        .expect("a CPU guest under require_gpu");
    assert!(err.to_string().contains("require_gpu"), "{err}");

    // A development GPU, checked by a client that trusts the development TEE roots but
    // only NVIDIA's GPU root: refused, naming the root.
    let (_guest, endpoint) = start_gpu_guest();
    let anchors = cocoon_attestation::TrustAnchors::vendor().with_tdx_root(
        cocoon_attestation::tdx::dcap::TdxRoot {
            der: cocoon_attestation_dev::DevPki::dev().unwrap().root_der(),
            simulated: true,
        },
    );
    let verifier = cocoon_attestation::Verifier::new(
        anchors,
        cocoon_attestation::Policy {
            accept_any_image: true,
            ..Default::default()
        },
    )
    .with_collateral(std::sync::Arc::new(cocoon_attestation_dev::DevCollateral));
    let attestor = cocoon_client::Attestor::offline(verifier);
    let err = open_attested_session(&endpoint, &attestor, WAIT)
        .await
        .err()
        .expect("a development GPU under NVIDIA's root only");
    let err = err.to_string();
    assert!(
        err.contains("GPU 0") && err.contains("pinned root"),
        "{err}"
    );
}

#[test]
fn gpu_misconfigured_machine_stops_the_guest_naming_the_check() {
    for (fault, check) in [
        ("no-driver", "driver"),
        ("no-device", "device"),
        ("cc-unsupported", "cc_mode"),
        ("cc-off", "cc_mode"),
        ("dev-tools", "dev_tools"),
        ("protected-pcie", "protected_pcie"),
        ("stale-report", "evidence"),
        ("foreign-chain", "evidence"),
        ("not-ready", "ready_state"),
    ] {
        let out = guest_exit_output(&["--gpu", "simulated", "--simulated-gpu-fault", fault]);
        assert!(!out.status.success(), "{fault}: the guest served");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("GPU check '{check}' failed")),
            "{fault}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "{fault}"
        );
    }
    // Real NVML on a machine without the NVIDIA driver: the driver check, not a crash.
    let out = guest_exit_output(&["--gpu", "nvidia"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    if !std::path::Path::new("/dev/nvidia0").exists() {
        assert!(stderr.contains("GPU check 'driver' failed"), "{stderr}");
    }
}
