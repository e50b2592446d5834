//! The on-chain registry end to end with real processes (issue 20, part 1): a local chain
//! (the committed registry code and wallet v5r1 in the in-process executor) served over
//! the TON HTTP API on loopback, a publisher that deploys its registry and adds and removes
//! values with `cocoon-client registry` from its own wallet, and a simulated guest checked
//! by `cocoon-verify endpoint --registry` and `cocoon-client proxy --registry`.
//!
//! What must hold: with no registry deployed, or nothing registered, the guest is refused
//! naming the registry (an unreachable API is an error, exit 2, never an acceptance);
//! once the values `cocoon-verify endpoint --json` printed for it are registered, it is
//! accepted with no manifest and no --accept-any-image; with its model removed, or its
//! image unregistered, it is refused again naming the registry and what is missing; the
//! registry's history shows every change; a guest started with `--registry` finds itself
//! registered and says so.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use cocoon_billing::local_chain::LocalChain;
use cocoon_billing::ton_http::{spawn_server, ServerLimits};
use cocoon_client::keys::read_account_key;
use cocoon_client::wallet::OwnerWallet;
use cocoon_tests::{binary, cocoon_verify, scratch_dir, start_guest, start_proxy};

const TON: u128 = 1_000_000_000;

fn client(args: &[&str]) -> Output {
    Command::new(binary("cocoon-client").unwrap())
        .args(args)
        .output()
        .expect("running cocoon-client")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn publisher(command: &str, key: &Path, api: &str, extra: &[&str]) -> Output {
    let key = key.to_str().unwrap();
    let mut args = vec![
        "registry",
        command,
        "--account-key",
        key,
        "--ton-network",
        "local",
        "--ton-api",
        api,
    ];
    args.extend_from_slice(extra);
    client(&args)
}

/// `cocoon-verify endpoint` with the registry as the only source of reference values.
fn verify_with_registry(url: &str, registry: &str, api: &str) -> Output {
    cocoon_verify(&[
        "endpoint",
        url,
        "--allow-simulated",
        "--registry",
        registry,
        "--registry-api",
        api,
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onchain_registry_accepts_registered_guests_and_refuses_removed_or_unregistered() {
    let dir = scratch_dir("registry-onchain").unwrap();
    // The chain, over the TON HTTP API on loopback.
    let mut chain = LocalChain::with_default_config().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    chain.set_now(u32::try_from(now).unwrap()).unwrap();
    let chain = Arc::new(Mutex::new(chain));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = spawn_server(listener, chain.clone(), ServerLimits::default()).unwrap();
    let api = server.base_url();

    // The publisher's key and its funded wallet.
    let key_file = dir.join("publisher.pem");
    let made = client(&["account", "keygen", "--out", key_file.to_str().unwrap()]);
    assert!(made.status.success(), "{}", text(&made));
    let key = read_account_key(&key_file).unwrap();
    let wallet = OwnerWallet::new(&key, "local").unwrap();
    chain
        .lock()
        .unwrap()
        .airdrop(&wallet.address(), 10 * TON)
        .unwrap();

    let address = client(&[
        "registry",
        "address",
        "--account-key",
        key_file.to_str().unwrap(),
    ]);
    assert!(address.status.success(), "{}", text(&address));
    let registry = String::from_utf8_lossy(&address.stdout).trim().to_string();
    // A simulated guest.
    let guest = start_guest("simulated", true, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let url = format!("https://{}", guest.addr);

    // No registry deployed yet: refused (exit 1) naming it; an API that cannot be reached
    // is exit 2, never an acceptance.
    let refused = verify_with_registry(&url, &registry, &api);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        stderr.contains(&registry) && stderr.contains("no registry contract is deployed"),
        "{stderr}"
    );
    let unreachable = verify_with_registry(&url, &registry, "http://127.0.0.1:9");
    assert_eq!(unreachable.status.code(), Some(2), "{}", text(&unreachable));

    let deployed = publisher("deploy", &key_file, &api, &[]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    assert!(
        String::from_utf8_lossy(&deployed.stdout).contains(&registry),
        "{}",
        text(&deployed)
    );

    // The values a publisher would register for the guest.
    let verified = cocoon_verify(&[
        "endpoint",
        &url,
        "--allow-simulated",
        "--accept-any-image",
        "--json",
    ])
    .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    let json: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    let values = json["registry_values"].as_array().unwrap().clone();
    let kinds: Vec<&str> = values.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["image-tdx", "model-sha256", "price-table"],
        "{json}"
    );
    let value_of = |kind: &str| {
        values
            .iter()
            .find(|v| v["kind"] == kind)
            .and_then(|v| v["value"].as_str())
            .unwrap()
            .to_string()
    };
    assert_eq!(value_of("model-sha256"), json["config"]["model"]["sha256"]);
    let values_file = dir.join("guest.json");
    std::fs::write(&values_file, &verified.stdout).unwrap();

    // Nothing registered yet: refused (exit 1), naming the registry and each value.
    let refused = verify_with_registry(&url, &registry, &api);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(stderr.contains(&registry), "{stderr}");
    for kind in ["image-tdx", "model-sha256", "price-table"] {
        assert!(
            stderr.contains(&format!("{kind} {} is not registered", value_of(kind))),
            "{stderr}"
        );
    }

    // Registered (one transfer, three requests): accepted with no manifest, no policy and
    // no --accept-any-image.
    let added = publisher(
        "add",
        &key_file,
        &api,
        &["--from-verify", values_file.to_str().unwrap()],
    );
    assert!(added.status.success(), "{}", text(&added));
    let accepted = verify_with_registry(&url, &registry, &api);
    assert!(accepted.status.success(), "{}", text(&accepted));
    let stdout = String::from_utf8_lossy(&accepted.stdout).to_string();
    assert!(stdout.contains("registered in registry"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&accepted.stderr).contains("WARNING"),
        "{}",
        text(&accepted)
    );
    // The proxy starts in front of it (it verifies the guest first).
    let (mut proxy, _) = start_proxy(
        &url,
        &[
            "--allow-simulated",
            "--registry",
            &registry,
            "--registry-api",
            &api,
        ],
    )
    .unwrap();
    proxy.kill();

    // The guest's own look-up at start (`--registry`): it finds itself registered.
    let log = dir.join("guest-registry.log");
    let mut cmd =
        cocoon_tests::simulated_guest_command(&["--registry", &registry, "--registry-api", &api]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut own = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let found = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("this guest's image, model and price table are registered") {
            break true;
        }
        if std::time::Instant::now() > deadline || own.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = own.kill();
    let _ = own.wait();
    assert!(
        found,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The model withdrawn: refused, naming the registry and the removal.
    let model = format!("model-sha256:{}", value_of("model-sha256"));
    let removed = publisher("remove", &key_file, &api, &["--value", &model]);
    assert!(removed.status.success(), "{}", text(&removed));
    let refused = verify_with_registry(&url, &registry, &api);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(stderr.contains(&registry), "{stderr}");
    assert!(
        stderr.contains(&format!("{model} was removed at")) || stderr.contains("was removed at"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("image-tdx"),
        "only the model is missing: {stderr}"
    );

    // Model back, image unregistered: refused naming the image.
    let readded = publisher("add", &key_file, &api, &["--value", &model]);
    assert!(readded.status.success(), "{}", text(&readded));
    let image = format!("image-tdx:{}", value_of("image-tdx"));
    let removed = publisher("remove", &key_file, &api, &["--value", &image]);
    assert!(removed.status.success(), "{}", text(&removed));
    let refused = verify_with_registry(&url, &registry, &api);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(stderr.contains(&registry), "{stderr}");
    assert!(stderr.contains("image (tdx"), "{stderr}");
    // ... and the proxy refuses to start in front of it.
    let mut cmd = Command::new(binary("cocoon-client").unwrap());
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", &url])
        .args([
            "--allow-simulated",
            "--registry",
            &registry,
            "--registry-api",
            &api,
        ]);
    let proxy_out = cocoon_tests::run_to_exit(cmd, std::time::Duration::from_secs(60)).unwrap();
    assert!(!proxy_out.status.success(), "{}", text(&proxy_out));
    assert!(
        String::from_utf8_lossy(&proxy_out.stderr).contains(&registry),
        "{}",
        text(&proxy_out)
    );

    // A publisher mistake is explained before anything is sent.
    let again = publisher("remove", &key_file, &api, &["--value", &image]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already removed"));

    // The history: 3 adds, remove, add, remove.
    let listed = client(&[
        "registry",
        "list",
        "--registry",
        &registry,
        "--ton-api",
        &api,
        "--json",
    ]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listing: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let actions: Vec<&str> = listing["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["add", "add", "add", "remove", "add", "remove"]);
    assert_eq!(listing["registered"].as_array().unwrap().len(), 2);

    drop(guest);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn onchain_registry_flag_is_refused_where_there_is_no_live_guest() {
    let fixtures = cocoon_tests::workspace_root().join("attestation/tests/fixtures/tdx");
    let quote = fixtures.join("dcapqvl_tdx_quote_v4.bin");
    let collateral = fixtures.join("dcapqvl_tdx_quote_v4.collateral.json");
    let out = cocoon_verify(&[
        "tdx-quote",
        quote.to_str().unwrap(),
        "--collateral",
        collateral.to_str().unwrap(),
        "--at",
        "2025-07-01T00:00:00Z",
        "--registry",
        "0:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    ])
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cocoon-verify endpoint URL --registry"),
        "{}",
        text(&out)
    );
}
