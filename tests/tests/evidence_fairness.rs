//! Review finding 13: clients that keep `POST /v1/attestation` busy cannot lock out a
//! verifying client. The guest queues evidence calls in arrival order (with a deadline)
//! instead of refusing them when its slots are taken, caps the calls per connection, and
//! the client library retries a busy answer within its timeout.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cocoon_client::{open_attested_session, Endpoint};
use cocoon_tests::start_appliance;
use common::{post, read_response, tls, BOUND};
use tokio::io::AsyncWriteExt;

const NONCE_BODY: &str = r#"{"nonce":"000102030405060708090a0b0c0d0e0f"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn looping_evidence_callers_do_not_lock_out_a_verifying_client() {
    let app = start_appliance(&["--max-concurrent-evidence", "1"]).expect("appliance starts");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (app_addr, stop, served, refused) = (
            app.guest_addr.clone(),
            stop.clone(),
            served.clone(),
            refused.clone(),
        );
        loops.push(tokio::spawn(async move {
            let app = AddrOnly(app_addr);
            while !stop.load(Ordering::SeqCst) {
                // A connection per burst; the guest caps the calls on each one.
                let mut s = app.connect().await;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match evidence_call(&mut s).await {
                        Some(200) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(_) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        None => break,
                    }
                }
            }
        }));
    }
    // Let the loops fill the queue, then verify sessions the way cocoon-client does.
    let started = std::time::Instant::now();
    while served.load(Ordering::SeqCst) < 8 {
        assert!(
            started.elapsed() < BOUND,
            "the loops got no evidence at all"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let endpoint = Endpoint::parse(&format!("https://{}", app.guest_addr)).unwrap();
    let options = cocoon_tests::dev_attestor();
    let mut failures = Vec::new();
    for attempt in 0..10 {
        if let Err(e) = open_attested_session(&endpoint, &options, BOUND).await {
            failures.push(format!("attempt {attempt}: {e}"));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in loops {
        let _ = task.await;
    }
    assert!(
        failures.is_empty(),
        "verifying clients were locked out while {} evidence calls were served to the loops \
         ({} refused): {failures:#?}",
        served.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst)
    );
    // The per-connection cap: every loop connection was cut off after its share, so the
    // loops saw refusals (429 evidence_limit) and had to reconnect.
    assert!(refused.load(Ordering::SeqCst) > 0);
    let mut s = tls(&app).await;
    for _ in 0..4 {
        s.write_all(post("/v1/attestation", NONCE_BODY).as_bytes())
            .await
            .unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    s.write_all(post("/v1/attestation", NONCE_BODY).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 429"),
        "the fifth call on one connection: {head}"
    );
    assert!(body.contains("evidence_limit"), "{body}");
}

/// One `POST /v1/attestation` on `s`: the status, or `None` if the connection broke.
async fn evidence_call(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    s.write_all(post("/v1/attestation", NONCE_BODY).as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return head.split_whitespace().nth(1)?.parse().ok();
            }
        }
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The guest's address, to open attested connections to from a task.
struct AddrOnly(String);

impl AddrOnly {
    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let endpoint = Endpoint::parse(&format!("https://{}", self.0)).unwrap();
        let options = cocoon_tests::dev_attestor();
        cocoon_client::connect_attested(&endpoint, &options, BOUND)
            .await
            .unwrap()
            .0
    }
}
