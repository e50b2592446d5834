//! Fetching TDX collateral from a PCCS, with the on-disk cache: a PCCS-compatible server
//! on loopback serves the real sample collateral in the PCS v4 wire format (issuer chains
//! URL-encoded in headers, signed JSON bodies, DER CRLs, hex root CRL), and the fetched
//! collateral must verify the real quote exactly as the offline bundle does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cocoon_attestation::collateral::valid_until;
use cocoon_attestation::fetch::{PcsCollateral, TdxCollateralFetch};
use cocoon_attestation::tdx::dcap::{
    collateral_from_json, intel_sgx_root_ca, verify_quote, TdxRoot,
};

mod common;
use common::{hex, Reply};

const QUOTE: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
const COLLATERAL: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");
const AT: i64 = 1_751_328_000; // 2025-07-01T00:00:00Z

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Starts the fake PCCS; returns its base URL and a request counter.
async fn fake_pccs() -> (String, Arc<AtomicUsize>) {
    let c = collateral_from_json(COLLATERAL).unwrap();
    common::serve(move |path| {
        let route = path.split('?').next().unwrap_or("");
        let ok = |header: Option<(&'static str, String)>, body: Vec<u8>| Reply {
            status: "200 OK",
            headers: header.into_iter().collect(),
            body,
        };
        match route {
            "/sgx/certification/v4/pckcrl" if path.contains("ca=platform") => ok(
                Some((
                    "SGX-PCK-CRL-Issuer-Chain",
                    url_encode(&c.pck_crl_issuer_chain),
                )),
                c.pck_crl.clone(),
            ),
            "/tdx/certification/v4/tcb" if path.contains("fmspc=") => ok(
                Some((
                    "TCB-Info-Issuer-Chain",
                    url_encode(&c.tcb_info_issuer_chain),
                )),
                format!(
                    r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                    c.tcb_info,
                    hex(&c.tcb_info_signature)
                )
                .into_bytes(),
            ),
            "/tdx/certification/v4/qe/identity" => ok(
                Some((
                    "SGX-Enclave-Identity-Issuer-Chain",
                    url_encode(&c.qe_identity_issuer_chain),
                )),
                format!(
                    r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                    c.qe_identity,
                    hex(&c.qe_identity_signature)
                )
                .into_bytes(),
            ),
            "/sgx/certification/v4/rootcacrl" => ok(None, hex(&c.root_ca_crl).into_bytes()),
            _ => Reply {
                status: "404 Not Found",
                headers: vec![],
                body: b"not found".to_vec(),
            },
        }
    })
    .await
}

#[tokio::test]
async fn fetches_verifies_and_caches_until_next_update() {
    let (url, hits) = fake_pccs().await;
    let dir = std::env::temp_dir().join(format!("cocoon-pccs-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let source = PcsCollateral::new(url.clone(), Some(dir.clone()));

    let fetched = source.tdx_collateral(QUOTE, AT).await.unwrap();
    let intel = TdxRoot {
        der: intel_sgx_root_ca(),
        simulated: false,
    };
    let facts = verify_quote(QUOTE, &fetched, AT, &intel).unwrap();
    assert_eq!(facts.tcb_status, "UpToDate");
    let first = hits.load(Ordering::SeqCst);
    assert!(
        first >= 4,
        "pckcrl, tcb, qe/identity, rootcacrl: {first} requests"
    );

    // Within the validity window the cache answers: no new requests.
    let again = source.tdx_collateral(QUOTE, AT + 3600).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), first);
    assert_eq!(again.tcb_info, fetched.tcb_info);

    // After the earliest nextUpdate the cache is stale and the source is asked again.
    let stale_at = valid_until(&fetched).unwrap() + 1;
    let _ = source.tdx_collateral(QUOTE, stale_at).await.unwrap();
    assert!(
        hits.load(Ordering::SeqCst) > first,
        "a stale entry must be refetched"
    );

    // A server that is down is a clear error, not a hang or a panic.
    let dead = PcsCollateral::new("http://127.0.0.1:1", None);
    let err = dead
        .tdx_collateral(QUOTE, AT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
