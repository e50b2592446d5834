//! Replay and relay attacks against the attested channel, end to end with real
//! processes and real TLS: both must fail closed, with a message that says why.

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::event_log::RuntimeEventLog;
use cocoon_attestation::ratls::{
    build_certificate, parse_certificate, CertificateParams, SubjectAltName, TlsKey,
};
use cocoon_client::{connect_attested, Endpoint};
use cocoon_guest::identity::GuestIdentity;
use cocoon_guest::tee::{ConfigRegister, EvidenceProvider, SimulatedTee};
use cocoon_tests::{cocoon_verify, start_appliance};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// `cocoon-verify endpoint URL --allow-simulated EXTRA…`, off the async runtime.
async fn verify_endpoint(url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "endpoint".to_string(),
        url.to_string(),
        "--allow-simulated".into(),
        "--accept-any-image".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cocoon_verify(&args).unwrap()
    })
    .await
    .unwrap()
}

fn allow() -> cocoon_client::Attestor {
    cocoon_tests::dev_attestor()
}

/// Fetches the genuine guest's certificate over an attested connection.
async fn genuine_certificate(addr: &str) -> Vec<u8> {
    let endpoint = Endpoint::parse(&format!("https://{addr}")).unwrap();
    let (tls, _) = connect_attested(&endpoint, &allow(), Duration::from_secs(10))
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// Serves `config` on a loopback port; each connection is handed to `relay_to` (if any)
/// after the TLS handshake, otherwise held open briefly and closed.
async fn serve(config: Arc<rustls::ServerConfig>, relay_to: Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let relay_to = relay_to.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut client_side)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                if let Some(upstream) = relay_to {
                    // The man in the middle: his own attested TLS towards the genuine guest.
                    let endpoint = Endpoint::parse(&format!("https://{upstream}")).unwrap();
                    if let Ok((mut guest_side, _)) =
                        connect_attested(&endpoint, &allow(), Duration::from_secs(10)).await
                    {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(60),
                            tokio::io::copy_bidirectional(&mut client_side, &mut guest_side),
                        )
                        .await;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    });
    addr
}

fn server_config(cert_der: Vec<u8>, key: &TlsKey) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
        )
        .unwrap();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_evidence_under_another_key_is_refused() {
    let app = start_appliance(&[]).expect("appliance starts");
    let genuine = genuine_certificate(&app.guest_addr).await;
    let captured = parse_certificate(&genuine).unwrap().evidence;

    // The attacker's own key, with guest A's captured evidence in the certificate.
    let key = TlsKey::generate().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let forged = build_certificate(
        &key,
        &CertificateParams {
            common_name: "cocoon-guest",
            subject_alt_names: &[SubjectAltName::parse("127.0.0.1")],
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::hours(1),
            evidence: &captured,
        },
    )
    .unwrap();
    let addr = serve(server_config(forged, &key), None).await;
    let out = verify_endpoint(&format!("https://{addr}"), &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("report data does not bind"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaying_man_in_the_middle_is_detected_by_the_session_check() {
    let app = start_appliance(&[]).expect("appliance starts");
    let genuine = genuine_certificate(&app.guest_addr).await;
    let genuine_evidence = parse_certificate(&genuine).unwrap().evidence;
    let config_digest: [u8; 48] = genuine_evidence.config_digest.try_into().unwrap();
    // He claims the genuine guest's receipt key too, so nothing but the session binding
    // can tell him apart.
    let receipt_key: [u8; 32] = genuine_evidence
        .receipt_key
        .expect("the guest binds a receipt key")
        .try_into()
        .unwrap();

    // The MITM has a perfectly valid (simulated) attested certificate for his own key,
    // claiming the genuine guest's config, and relays every byte to the genuine guest.
    let tee = SimulatedTee::new(false).unwrap();
    let register = tee.extend_config_register(&config_digest).unwrap();
    assert_eq!(register, ConfigRegister::TdxRtmr(3));
    let event_log = RuntimeEventLog::config(3, &config_digest)
        .to_cbor()
        .unwrap();
    let mitm = GuestIdentity::create(
        &tee,
        &config_digest,
        &event_log,
        &receipt_key,
        &[SubjectAltName::parse("127.0.0.1")],
        time::Duration::hours(1),
        None,
    )
    .unwrap();
    let addr = serve(mitm.server_config.clone(), Some(app.guest_addr.clone())).await;

    // The certificate alone does not reveal him...
    let endpoint = Endpoint::parse(&format!("https://{addr}")).unwrap();
    assert!(
        connect_attested(&endpoint, &allow(), Duration::from_secs(10))
            .await
            .is_ok()
    );
    // ...the session-bound evidence does: the genuine guest's answer binds its own key and
    // the exporter of the MITM's session, not ours.
    let out = verify_endpoint(&format!("https://{addr}"), &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("session-bound evidence") && stderr.contains("report data does not bind"),
        "{stderr}"
    );

    // Talking to the genuine guest directly passes both checks.
    let direct = verify_endpoint(&format!("https://{}", app.agent_addr), &["--json"]).await;
    assert_eq!(direct.status.code(), Some(0), "{direct:?}");
    let json: serde_json::Value = serde_json::from_slice(&direct.stdout).unwrap();
    assert_eq!(json["session_bound"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_measured_config_and_expired_certificates_are_refused() {
    let app = start_appliance(&[]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    // A policy that lists another measured config (RTMR3) than the guest runs.
    let dir = std::env::temp_dir().join(format!("cocoon-attacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("rtmr3.toml");
    std::fs::write(
        &policy,
        format!("[tdx]\nrtmr3 = [\"{}\"]\n", "ab".repeat(48)),
    )
    .unwrap();
    let out = verify_endpoint(&url, &["--policy", policy.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tdx.rtmr3"), "{stderr}");
    drop(app);

    // A guest whose certificate has already expired (validity of zero hours).
    let app = start_appliance(&["--cert-validity-hours", "0"]).expect("appliance starts");
    let url = format!("https://{}", app.agent_addr);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = verify_endpoint(&url, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not valid at"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
