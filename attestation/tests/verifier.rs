//! The one pipeline, end to end on certificates and bare evidence: development evidence
//! through development anchors, real Intel and AMD evidence through the vendor anchors,
//! and the verifier-side review findings that live in the pipeline itself (3: reference
//! values; 12: server name; 18: session evidence matches the certificate's; 19: no
//! resumption, outcome per certificate).

use std::sync::Arc;

use cocoon_attestation::event_log::rtmr_extend;
use cocoon_attestation::evidence::{EvidenceKind, EvidencePayload, PAYLOAD_VERSION};
use cocoon_attestation::policy::MinSnpTcb;
use cocoon_attestation::ratls::TlsKey;
use cocoon_attestation::report_data::{certificate_binding, session_binding};
use cocoon_attestation::tls::{AttestedClientVerifier, AttestedServerVerifier};
use cocoon_attestation::{CollateralStore, Error, Policy, TrustAnchors, Verifier};
use cocoon_attestation_dev::{
    test_certificate, DevCollateral, DevPki, DevTdMeasurements, SimulatedTdConfig, SimulatedTdx,
};
use time::OffsetDateTime;

const T0: i64 = 1_800_000_000;
const CONFIG: [u8; 48] = [9; 48];

fn any_image() -> Policy {
    Policy {
        accept_any_image: true,
        ..Default::default()
    }
}

fn dev_verifier(policy: Policy) -> Verifier {
    cocoon_attestation_dev::verifier(policy).unwrap()
}

fn certificate(tee: &SimulatedTdx, debug: bool, key: &TlsKey, bound: &TlsKey) -> Vec<u8> {
    let rd = certificate_binding(bound.spki_der(), &CONFIG);
    let t0 = OffsetDateTime::from_unix_timestamp(T0).unwrap();
    let td = SimulatedTdConfig {
        config_digest: CONFIG.to_vec(),
        debug,
    };
    test_certificate(key, tee, &rd, &td, t0, t0 + time::Duration::hours(1)).unwrap()
}

fn good_certificate() -> (Vec<u8>, TlsKey) {
    let key = TlsKey::generate().unwrap();
    let der = certificate(&SimulatedTdx::dev().unwrap(), false, &key, &key);
    (der, key)
}

#[test]
fn development_evidence_verifies_only_through_development_anchors() {
    let (der, _) = good_certificate();
    let v = dev_verifier(any_image())
        .verify_certificate(&der, T0 + 10)
        .unwrap();
    assert!(v.simulated);
    assert_eq!(v.tee, "tdx");
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(
        v.config_digest.as_deref(),
        Some(hex::encode(CONFIG).as_str())
    );
    assert!(v.certificate.is_some());

    // Vendor anchors only (the default of every client): refused, naming the root.
    let vendor =
        Verifier::new(TrustAnchors::vendor(), any_image()).with_collateral(Arc::new(DevCollateral));
    let err = vendor.verify_certificate(&der, T0 + 10).unwrap_err();
    assert!(matches!(err, Error::UntrustedAnchor { .. }), "{err}");
    assert!(err.to_string().contains("SIMULATED"), "{err}");

    // The development anchor without collateral: refused, asking for collateral.
    let no_collateral = Verifier::new(
        TrustAnchors::vendor().with(cocoon_attestation_dev::anchors().unwrap()),
        any_image(),
    );
    let err = no_collateral.verify_certificate(&der, T0 + 10).unwrap_err();
    assert!(matches!(err, Error::Collateral(_)), "{err}");

    // With collateral in a store (as a fetcher leaves it), it verifies.
    let store = Arc::new(CollateralStore::new());
    store
        .add_tdx(DevPki::dev().unwrap().collateral(T0).unwrap())
        .unwrap();
    let stored = Verifier::new(
        TrustAnchors::vendor().with(cocoon_attestation_dev::anchors().unwrap()),
        any_image(),
    )
    .with_collateral(store);
    assert!(stored.verify_certificate(&der, T0 + 10).is_ok());
}

#[test]
fn binding_debug_expiry_and_impostors_are_refused() {
    let key = TlsKey::generate().unwrap();
    let other = TlsKey::generate().unwrap();
    let verifier = dev_verifier(any_image());
    let der = certificate(&SimulatedTdx::dev().unwrap(), false, &key, &other);
    let err = verifier.verify_certificate(&der, T0 + 10).unwrap_err();
    assert!(matches!(err, Error::ReportDataMismatch { .. }), "{err}");

    let impostor = SimulatedTdx::from_seed(b"impostor").unwrap();
    let der = certificate(&impostor, false, &key, &key);
    let err = verifier.verify_certificate(&der, T0 + 10).unwrap_err();
    assert!(matches!(err, Error::UntrustedAnchor { .. }), "{err}");

    let der = certificate(&SimulatedTdx::dev().unwrap(), true, &key, &key);
    let err = verifier.verify_certificate(&der, T0 + 10).unwrap_err();
    assert!(err.to_string().contains("debug"), "{err}");
    let debug_ok = dev_verifier(Policy {
        allow_debug: true,
        ..any_image()
    });
    assert!(debug_ok.verify_certificate(&der, T0 + 10).unwrap().debug);

    let (der, _) = good_certificate();
    let err = verifier.verify_certificate(&der, T0 + 7200).unwrap_err();
    assert!(matches!(err, Error::CertificateExpired { .. }), "{err}");
    assert!(verifier.verify_certificate(&der, T0 - 1).is_err());
}

/// Finding 3: with nothing pinned, RA-TLS evidence is refused naming what is open; pins
/// (or the explicit risk flag) make it acceptable.
#[test]
fn unpinned_reference_values_are_refused_unless_any_image_is_accepted() {
    let (der, _) = good_certificate();
    let err = dev_verifier(Policy::default())
        .verify_certificate(&der, T0 + 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reference values"), "{err}");
    for open in ["tdx.mrtd", "tdx.rtmr0", "tdx.rtmr2", "config_digests"] {
        assert!(err.contains(open), "{open} must be named: {err}");
    }
    let seen = dev_verifier(any_image())
        .verify_certificate(&der, T0 + 10)
        .unwrap();
    let mut pinned = Policy::default();
    for (name, list) in [
        ("mrtd", &mut pinned.tdx.mrtd),
        ("rtmr0", &mut pinned.tdx.rtmr0),
        ("rtmr1", &mut pinned.tdx.rtmr1),
        ("rtmr2", &mut pinned.tdx.rtmr2),
    ] {
        list.push(seen.measurements[name].clone());
    }
    pinned.config_digests.push(hex::encode(CONFIG));
    assert!(dev_verifier(pinned)
        .verify_certificate(&der, T0 + 10)
        .is_ok());
}

/// Finding 18: session evidence must come from the same kind of TEE with the same
/// measurements as the certificate's, not merely carry the same key and config digest.
#[test]
fn session_evidence_with_other_measurements_is_refused() {
    let (der, key) = good_certificate();
    let (nonce, exporter) = ([1u8; 32], [2u8; 32]);
    let expected = session_binding(key.spki_der(), &CONFIG, &nonce, &exporter);
    let td = SimulatedTdConfig {
        config_digest: CONFIG.to_vec(),
        debug: false,
    };
    let payload = |quote: Vec<u8>| EvidencePayload {
        version: PAYLOAD_VERSION,
        kind: EvidenceKind::Tdx,
        evidence: quote,
        event_log: td.event_log().unwrap(),
        config_digest: CONFIG.to_vec(),
        gpu_evidence_digest: None,
        receipt_key: None,
        snp_certificates: None,
        vtpm: None,
    };
    let verifier = dev_verifier(any_image());
    let same = SimulatedTdx::dev().unwrap().quote(&expected, &td).unwrap();
    let ok = payload(same).to_cbor().unwrap();
    assert!(verifier
        .verify_session_evidence(&der, &ok, &nonce, &exporter, T0 + 10)
        .is_ok());

    // Another TD (other MRTD), correctly bound to this session and config.
    let other_td = DevPki::dev()
        .unwrap()
        .quote(
            &expected,
            &DevTdMeasurements {
                mr_td: [0xee; 48],
                rtmr: [[1; 48], [2; 48], [3; 48], rtmr_extend(&[0; 48], &CONFIG)],
                debug: false,
            },
        )
        .unwrap();
    let other = payload(other_td).to_cbor().unwrap();
    let err = verifier
        .verify_session_evidence(&der, &other, &nonce, &exporter, T0 + 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("measurements"), "{err}");
}

const QUOTE: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
const COLLATERAL: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");
const REPORT: &[u8] = include_bytes!("fixtures/snp/gosev_milan_attestation.bin");
const VCEK: &[u8] = include_bytes!("fixtures/snp/gosev_milan_vcek.der");
const MILAN: &[u8] = include_bytes!("fixtures/snp/amd_ask_ark_milan.pem");
const TDX_AT: i64 = 1_751_328_000;

fn intel(policy: Policy) -> Verifier {
    let store = Arc::new(CollateralStore::new());
    store
        .add_tdx(cocoon_attestation::tdx::dcap::collateral_from_json(COLLATERAL).unwrap())
        .unwrap();
    Verifier::new(TrustAnchors::vendor(), policy).with_collateral(store)
}

#[test]
fn real_tdx_quote_under_default_and_pinned_policies() {
    let v = intel(Policy::default()).tdx_quote_verdict(QUOTE, TDX_AT);
    assert!(v.verified, "{:?}", v.errors);
    assert!(!v.simulated);
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(v.debug, Some(false));
    let outcome = v.outcome.as_ref().unwrap();
    assert_eq!(outcome.details["quote_version"], "4");
    let mrtd = hex::decode(&v.measurements["mrtd"]).unwrap();
    assert!(
        intel(Policy::default().allow_mrtd(&mrtd))
            .tdx_quote_verdict(QUOTE, TDX_AT)
            .verified
    );
    let wrong = intel(Policy::default().allow_mrtd(&[0; 48])).tdx_quote_verdict(QUOTE, TDX_AT);
    assert!(!wrong.verified && wrong.outcome.is_none());
    assert!(wrong.errors[0].contains("tdx.mrtd"), "{:?}", wrong.errors);
    // Collateral past its nextUpdate: refused.
    let stale = intel(Policy::default()).tdx_quote_verdict(QUOTE, 1_924_992_000);
    assert!(!stale.verified);
}

#[test]
fn real_snp_report_is_refused_for_debug_unless_allowed() {
    let at = {
        let (_, c) = x509_parser::parse_x509_certificate(VCEK).unwrap();
        c.validity().not_before.timestamp() + 86_400
    };
    let certs = cocoon_attestation::collateral::SnpCollateral {
        vcek: cocoon_attestation::ratls::certificate_pem(VCEK),
        cert_chain: String::from_utf8(MILAN.to_vec()).unwrap(),
    };
    // The sample is a 2021 debug guest, below Milan's default TCB floor: say so.
    let old_milan = || {
        Policy::default()
            .allow_debug(true)
            .min_snp_tcb(MinSnpTcb::NONE)
    };
    let verdict = |policy: Policy| {
        Verifier::new(TrustAnchors::vendor(), policy).snp_report_verdict(REPORT, Some(&certs), at)
    };
    let v = verdict(Policy::default());
    assert!(!v.verified);
    assert_eq!(v.debug, Some(true));
    assert!(
        v.errors.iter().any(|e| e.contains("debug must be off")),
        "{:?}",
        v.errors
    );
    let v = verdict(old_milan());
    assert!(v.verified, "{:?}", v.errors);
    assert_eq!(v.details["product"], "Milan");
    let m = hex::decode(&v.measurements["measurement"]).unwrap();
    assert!(verdict(old_milan().allow_measurement(&m)).verified);
    let mut strict = old_milan();
    strict.snp.allow_smt = false;
    let v = verdict(strict);
    assert!(
        v.errors.iter().any(|e| e.contains("snp.allow_smt")),
        "{:?}",
        v.errors
    );
    // No AMD root given: refused, saying so.
    let none = Verifier::new(TrustAnchors::none(), old_milan()).snp_report_verdict(
        REPORT,
        Some(&certs),
        at,
    );
    assert!(!none.verified);
    assert!(none.errors[0].contains("no AMD root"), "{:?}", none.errors);
}

/// A TLS pair over an in-memory pipe: server with `server_cert`, client verified by
/// `client_verifier`; returns the client's result and the handshake kind.
async fn handshake(
    server_cert: (Vec<u8>, TlsKey),
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<rustls::HandshakeKind, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.0)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_cert.1.pkcs8_der().to_vec())),
        )
        .unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_side = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if let Ok(mut tls) = acceptor.accept(a).await {
            let _ = tls.write_all(b"ok").await;
            let _ = tls.shutdown().await;
        }
    });
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let result = tokio_rustls::TlsConnector::from(client)
        .connect(name, b)
        .await
        .map_err(|e| e.to_string())
        .map(|tls| tls.get_ref().1.handshake_kind().unwrap());
    let _ = server_side.await;
    result
}

/// Findings 12 and 19: the server name is checked against the certificate's DNS names;
/// every connection is a full handshake (no resumption skips the evidence check), and the
/// outcome is read for the certificate the connection presented.
#[tokio::test]
async fn server_names_are_checked_and_sessions_never_resume() {
    let t0 = OffsetDateTime::now_utc();
    let key = TlsKey::generate().unwrap();
    let rd = certificate_binding(key.spki_der(), &CONFIG);
    let td = SimulatedTdConfig {
        config_digest: CONFIG.to_vec(),
        debug: false,
    };
    let der = test_certificate(
        &key,
        &SimulatedTdx::dev().unwrap(),
        &rd,
        &td,
        t0 - time::Duration::minutes(1),
        t0 + time::Duration::hours(1),
    )
    .unwrap();
    let verifier = AttestedServerVerifier::new(Arc::new(dev_verifier(any_image())));
    let config = Arc::new(verifier.client_config().unwrap());
    let pkcs8 = || TlsKey::from_pkcs8(key.pkcs8_der().to_vec()).unwrap();
    for _ in 0..2 {
        let kind = handshake((der.clone(), pkcs8()), config.clone(), "localhost")
            .await
            .unwrap();
        assert_eq!(kind, rustls::HandshakeKind::Full);
    }
    assert!(matches!(verifier.outcome_for(&der), Some(Ok(_))));
    // The test certificate names localhost only.
    let err = handshake((der.clone(), pkcs8()), config.clone(), "guest.example")
        .await
        .unwrap_err();
    assert!(err.contains("server name"), "{err}");
    // An address is not a name: the binding identifies the guest.
    assert!(handshake((der, pkcs8()), config, "127.0.0.1").await.is_ok());
}

/// Mutual attestation between our own components: a client certificate must carry
/// evidence that verifies.
#[test]
fn the_client_certificate_verifier_uses_the_same_pipeline() {
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::danger::ClientCertVerifier;
    let (der, _) = good_certificate();
    let verifier = AttestedClientVerifier::new(Arc::new(dev_verifier(any_image())));
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(T0 as u64 + 10));
    assert!(verifier
        .verify_client_cert(&CertificateDer::from(der), &[], at)
        .is_ok());
    let strict = AttestedClientVerifier::new(Arc::new(dev_verifier(Policy::default())));
    let (der, _) = good_certificate();
    assert!(strict
        .verify_client_cert(&CertificateDer::from(der), &[], at)
        .is_err());
}
