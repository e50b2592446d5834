//! Fetching TDX collateral from a PCCS, with the on-disk cache: the dev crate's PCCS on
//! loopback serves the real sample collateral in the PCS v4 wire format (issuer chains
//! URL-encoded in headers, signed JSON bodies, DER CRLs, hex root CRL), and the fetched
//! collateral must verify the real quote exactly as the offline bundle does.

use cocoon_attestation::collateral::valid_until;
use cocoon_attestation::fetch::{PcsCollateral, TdxCollateralFetch};
use cocoon_attestation::tdx::dcap::{
    collateral_from_json, intel_sgx_root_ca, verify_quote, TdxRoot,
};

use cocoon_attestation_dev::collateral_servers::PcsServer;

const QUOTE: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.bin");
const COLLATERAL: &[u8] = include_bytes!("fixtures/tdx/dcapqvl_tdx_quote_v4.collateral.json");
const AT: i64 = 1_751_328_000; // 2025-07-01T00:00:00Z

/// Starts the loopback PCCS with the real sample collateral; returns it and its URL.
fn fake_pccs() -> (PcsServer, String) {
    let server = PcsServer::start(collateral_from_json(COLLATERAL).unwrap()).unwrap();
    let url = server.url().to_string();
    (server, url)
}

#[tokio::test]
async fn fetches_verifies_and_caches_until_next_update() {
    let (pccs, url) = fake_pccs();
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
    let first = pccs.hits();
    assert!(
        first >= 4,
        "pckcrl, tcb, qe/identity, rootcacrl: {first} requests"
    );

    // Within the validity window the cache answers: no new requests.
    let again = source.tdx_collateral(QUOTE, AT + 3600).await.unwrap();
    assert_eq!(pccs.hits(), first);
    assert_eq!(again.tcb_info, fetched.tcb_info);

    // After the earliest nextUpdate the cache is stale and the source is asked again.
    let stale_at = valid_until(&fetched).unwrap() + 1;
    let _ = source.tdx_collateral(QUOTE, stale_at).await.unwrap();
    assert!(pccs.hits() > first, "a stale entry must be refetched");

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
