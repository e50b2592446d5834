//! Fetching SEV-SNP collateral from a KDS-compatible server on loopback that serves the
//! real Milan VCEK (DER, looked up by chip ID and TCB) and AMD's Milan chain, then
//! verifying the real report with it; the cache answers the second time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cocoon_attestation::collateral::SnpCollateral;
use cocoon_attestation::fetch::KdsCollateral;
use cocoon_attestation::snp::verify::{amd_production_arks, verify_report};
use cocoon_attestation::snp::SnpReport;

mod common;
use common::{hex, Reply};

const REPORT: &[u8] = include_bytes!("fixtures/snp/gosev_milan_attestation.bin");
const VCEK: &[u8] = include_bytes!("fixtures/snp/gosev_milan_vcek.der");
const CHAIN: &[u8] = include_bytes!("fixtures/snp/amd_ask_ark_milan.pem");
const AT: i64 = 1_685_577_600; // 2023-06-01T00:00:00Z

async fn fake_kds() -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    let chip_id = hex(&SnpReport::parse(REPORT).unwrap().chip_id);
    let vcek_path = format!("/vcek/v1/Milan/{chip_id}?blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68");
    let (url, hits) = common::serve(move |path| {
        seen.lock().unwrap().push(path.to_string());
        let (status, body) = if path == vcek_path {
            ("200 OK", VCEK.to_vec())
        } else if path == "/vcek/v1/Milan/cert_chain" {
            ("200 OK", CHAIN.to_vec())
        } else {
            ("404 Not Found", b"not found".to_vec())
        };
        Reply {
            status,
            headers: vec![],
            body,
        }
    })
    .await;
    (url, hits, paths)
}

#[tokio::test]
async fn fetches_by_chip_and_tcb_verifies_and_caches() {
    let (url, hits, paths) = fake_kds().await;
    let dir = std::env::temp_dir().join(format!("cocoon-kds-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let report = SnpReport::parse(REPORT).unwrap();
    let kds = KdsCollateral::new(url, Some(dir.clone()));

    // A version 2 report does not name its CPU line.
    let err = kds
        .snp_collateral(&report, None, AT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Milan, Genoa, Turin"), "{err}");

    let c: SnpCollateral = kds
        .snp_collateral(&report, Some("Milan"), AT)
        .await
        .unwrap();
    assert_eq!(c.vcek_der().unwrap(), VCEK);
    verify_report(
        REPORT,
        &c.vcek_der().unwrap(),
        c.cert_chain.as_bytes(),
        AT,
        &amd_production_arks(),
    )
    .unwrap();
    let first = hits.load(Ordering::SeqCst);
    assert_eq!(first, 2, "VCEK and chain: {:?}", paths.lock().unwrap());

    let again = kds
        .snp_collateral(&report, Some("Milan"), AT + 60)
        .await
        .unwrap();
    assert_eq!(again, c);
    assert_eq!(hits.load(Ordering::SeqCst), first, "the cache must answer");

    // Another TCB is another VCEK: the server has none, and says so.
    let mut other = report.clone();
    other.reported_tcb.microcode = 69;
    let err = KdsCollateral::new(format!("http://{}", "127.0.0.1:1"), None)
        .snp_collateral(&other, Some("Milan"), AT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The KDS CRL is fetched from `/vcek/v1/{product}/crl` (or `/vlek/…`), cached until its
/// nextUpdate, and checked against the chain.
#[tokio::test]
async fn fetches_and_caches_the_kds_crl() {
    use cocoon_attestation::snp::verify::check_snp_crl;
    use cocoon_attestation_dev::DevSnpPki;
    const NOW: i64 = 1_800_000_000;
    let pki = DevSnpPki::dev().unwrap();
    let crl = pki.crl(&[], NOW - 86_400, NOW + 7 * 86_400).unwrap();
    let served = crl.clone();
    let (url, hits) = common::serve(move |path| {
        let (status, body) = match path {
            "/vcek/v1/Genoa/crl" | "/vlek/v1/Genoa/crl" => ("200 OK", served.clone()),
            _ => ("404 Not Found", b"not found".to_vec()),
        };
        Reply {
            status,
            headers: vec![],
            body,
        }
    })
    .await;
    let dir = std::env::temp_dir().join(format!("cocoon-kds-crl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kds = KdsCollateral::new(url, Some(dir.clone()));
    let got = kds.snp_crl("Genoa", false, NOW).await.unwrap();
    assert_eq!(got, crl);
    check_snp_crl(&got, pki.chain_pem().as_bytes(), pki.vcek_der(), NOW).unwrap();
    assert_eq!(kds.snp_crl("Genoa", false, NOW + 60).await.unwrap(), crl);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the cache must answer");
    // The VLEK CRL is another resource; past nextUpdate the cache refetches.
    kds.snp_crl("Genoa", true, NOW).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    kds.snp_crl("Genoa", false, NOW + 8 * 86_400).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let err = kds
        .snp_crl("Milan", false, NOW)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("404"), "{err}");
    assert!(kds.snp_crl("Naples", false, NOW).await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}
