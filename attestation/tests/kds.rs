//! Fetching SEV-SNP collateral from a KDS-compatible server on loopback that serves the
//! real Milan VCEK (DER, looked up by chip ID and TCB) and AMD's Milan chain, then
//! verifying the real report with it; the cache answers the second time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cocoon_attestation::collateral::{KdsCollateral, SnpCollateral};
use cocoon_attestation::snp::verify::{amd_production_arks, verify_report};
use cocoon_attestation::snp::SnpReport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REPORT: &[u8] = include_bytes!("fixtures/snp/gosev_milan_attestation.bin");
const VCEK: &[u8] = include_bytes!("fixtures/snp/gosev_milan_vcek.der");
const CHAIN: &[u8] = include_bytes!("fixtures/snp/amd_ask_ark_milan.pem");
const AT: i64 = 1_685_577_600; // 2023-06-01T00:00:00Z

async fn fake_kds() -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (h, p) = (hits.clone(), paths.clone());
    let chip_id = hex(&SnpReport::parse(REPORT).unwrap().chip_id);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            let (p, chip_id) = (p.clone(), chip_id.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                p.lock().unwrap().push(path.clone());
                let vcek_path =
                    format!("/vcek/v1/Milan/{chip_id}?blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68");
                let (status, body): (&str, Vec<u8>) = if path == vcek_path {
                    ("200 OK", VCEK.to_vec())
                } else if path == "/vcek/v1/Milan/cert_chain" {
                    ("200 OK", CHAIN.to_vec())
                } else {
                    ("404 Not Found", b"not found".to_vec())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, hits, paths)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
