//! Evidence checked the way hardware evidence is: a guest's TDX quote chains to a test
//! root that the client passes as an anchor (`--dangerous-trust-tdx-root`), and the
//! collateral comes from a PCCS on loopback in Intel's wire format, fetched by the client
//! because its verifier has none. No development collateral, no `--allow-simulated`: the
//! same code path as a real TD with Intel PCS. Then the cases a client must refuse: stale
//! collateral, a revoked PCK certificate, a TCB status the policy does not accept, and a
//! root the client did not pass; each is refused with the reason named, by `cocoon-verify
//! endpoint` and by `cocoon-client proxy`. SEV-SNP evidence without a certificate table
//! takes the same path with a VCEK from a KDS on loopback.

use cocoon_attestation::ratls::certificate_pem;
use cocoon_attestation_dev::collateral_servers::PcsServer;
use cocoon_attestation_dev::DevPki;
use cocoon_tests::{cocoon_verify, scratch_dir, start_appliance, start_proxy};

use cocoon_client::fetcher::unix_now as now;

/// `cocoon-verify endpoint URL --pccs PCCS [--dangerous-trust-tdx-root ROOT] --json`:
/// exit code, stdout JSON (or null), stderr.
fn verify(url: &str, pccs: &str, root: Option<&str>) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec![
        "endpoint",
        url,
        "--pccs",
        pccs,
        "--accept-any-image",
        "--json",
    ];
    if let Some(root) = root {
        args.extend(["--dangerous-trust-tdx-root", root]);
    }
    let out = cocoon_verify(&args).unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tdx_evidence_verifies_with_fetched_collateral_and_bad_collateral_is_refused() {
    let app = start_appliance(&[]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let dir = scratch_dir("hardware-path").unwrap();
    let pki = DevPki::dev().unwrap();
    let root = dir.join("test-root.pem");
    std::fs::write(&root, certificate_pem(&pki.root_der())).unwrap();
    let root = root.to_str().unwrap();
    let pccs = PcsServer::start(pki.collateral(now()).unwrap()).unwrap();

    // Accepted: the anchor the client passed, collateral fetched from the PCCS.
    let (code, json, stderr) = verify(&url, pccs.url(), Some(root));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["verified"], true);
    assert_eq!(json["tcb_status"], "UpToDate");
    assert_eq!(json["simulated"], true, "a test root is not Intel's");
    assert_eq!(json["certificate"]["sha256"], app.guest_pin.as_str());
    assert!(pccs.hits() >= 4, "TCB info, QE identity, two CRLs fetched");
    assert!(
        json["config"]["model"].is_object(),
        "the served config document is shown: {json}"
    );

    // Finding 3: nothing pins the image or the config (no manifest, no policy pins, no
    // --accept-any-image): refused, naming what is open; with the flag, a loud warning.
    let out = cocoon_verify(&[
        "endpoint",
        &url,
        "--pccs",
        pccs.url(),
        "--dangerous-trust-tdx-root",
        root,
    ])
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reference values") && stderr.contains("tdx.mrtd"),
        "{stderr}"
    );
    let (_, _, stderr) = verify(&url, pccs.url(), Some(root));
    assert!(stderr.contains("WARNING: --accept-any-image"), "{stderr}");

    // The root the client did not pass: refused before any collateral is looked at.
    let (code, _, stderr) = verify(&url, pccs.url(), None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not among the anchors"), "{stderr}");

    // Stale collateral (issued 60 days ago, nextUpdate 30 days ago).
    pccs.replace(pki.collateral(now() - 60 * 86_400).unwrap());
    let (code, _, stderr) = verify(&url, pccs.url(), Some(root));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("expired") || stderr.contains("nextUpdate"),
        "stale collateral must be named: {stderr}"
    );

    // The platform's PCK certificate revoked in the PCK CRL.
    pccs.replace(pki.collateral_revoking_pck(now()).unwrap());
    let (code, _, stderr) = verify(&url, pccs.url(), Some(root));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("revoked"), "{stderr}");

    // A TCB status the default policy refuses (every level marked OutOfDate).
    pccs.replace(
        pki.collateral_with_tcb_info(now(), |tcb_info| {
            if let Some(levels) = tcb_info["tcbLevels"].as_array_mut() {
                for level in levels {
                    level["tcbStatus"] = "OutOfDate".into();
                }
            }
        })
        .unwrap(),
    );
    let (code, _, stderr) = verify(&url, pccs.url(), Some(root));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("OutOfDate") && stderr.contains("accepted_tcb_statuses"),
        "{stderr}"
    );

    // A PCCS that is down: a clear refusal, never an acceptance.
    let (code, _, stderr) = verify(&url, "http://127.0.0.1:1", Some(root));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");

    // The proxy takes the same arguments and the same path: it serves with good
    // collateral and refuses to start with revoked collateral.
    pccs.replace(pki.collateral(now()).unwrap());
    let upstream = url.clone();
    let good = [
        "--pccs",
        pccs.url(),
        "--dangerous-trust-tdx-root",
        root,
        "--accept-any-image",
    ];
    let (_proxy, _addr) = start_proxy(&upstream, &good).expect("proxy starts");
    pccs.replace(pki.collateral_revoking_pck(now()).unwrap());
    let refused = start_proxy(&upstream, &good);
    assert!(
        refused.is_err(),
        "the proxy must not start on revoked collateral"
    );
}

/// SEV-SNP evidence without a certificate table (a host that attaches none): the client
/// fetches the VCEK and chain from a KDS on loopback, proves them with the AMD root key it
/// was given, and verifies; a KDS that is down, or a root not passed, is a refusal.
#[test]
fn snp_evidence_without_certificates_verifies_with_a_vcek_from_the_kds() {
    use cocoon_attestation_dev::collateral_servers::kds_server;
    use cocoon_attestation_dev::DevSnpPki;
    let app = cocoon_tests::start_appliance_with_tee(
        "simulated-sev-snp",
        &["--simulated-snp-without-certificates"],
    )
    .expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    let dir = scratch_dir("hardware-path-snp").unwrap();
    let pki = DevSnpPki::dev().unwrap();
    let ark = dir.join("test-ark.pem");
    std::fs::write(&ark, certificate_pem(&pki.trusted_ark().der)).unwrap();
    let ark = ark.to_str().unwrap();
    let kds = kds_server(pki).unwrap();
    let run = |kds_url: &str, with_ark: bool| {
        let mut args = vec![
            "endpoint",
            &url,
            "--kds",
            kds_url,
            "--accept-any-image",
            "--json",
        ];
        if with_ark {
            args.extend(["--dangerous-trust-amd-ark", ark]);
        }
        cocoon_verify(&args).unwrap()
    };
    let out = run(kds.url(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tee"], "sev-snp");
    assert_eq!(json["certificate"]["sha256"], app.guest_pin.as_str());
    assert!(kds.hits() >= 2, "VCEK and chain fetched: {}", kds.hits());

    let out = run("http://127.0.0.1:1", true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");

    let out = run(kds.url(), false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a trusted AMD root"), "{stderr}");
}
