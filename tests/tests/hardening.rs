//! Guest hardening against one client or the host (issue 14, review findings 2, 6, 7
//! and 23), against the real guest over real sockets:
//!
//! - a streaming client that stops reading cannot stall the engine for everyone, is
//!   cancelled, billed for what was generated, and loses its connection;
//! - every exit bills: a stream cut by the request deadline is billed for what was
//!   delivered, a non-streamed request whose client leaves is billed too, `n` > 1 bills
//!   the prompt once per choice, and a `json_object` answer ends at its end of text;
//! - receipts name the SHA-256 of the request and of the response they bill;
//! - streamed events are padded so that TLS record sizes do not follow token lengths.
//!
//! Waits are liveness bounds (how long before we call the guest hung), never
//! performance assertions.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_attestation::receipt::{verify_receipt, UsageReceipt};
use cocoon_attestation::tls::AttestedServerVerifier;
use cocoon_tests::{host_token_file, scratch_dir, start_appliance, Appliance, TEST_HOST_TOKEN};
use common::{
    header, http_json, post_with, read_response, read_until_closed, tls, tls_verified, BOUND,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const MODEL: &str = "smollm2-135m-instruct.q4_1";

/// A host-token file for the internal receipt API, in a fresh scratch directory.
fn token_file(name: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name).unwrap();
    host_token_file(&dir, TEST_HOST_TOKEN).unwrap()
}

/// Every receipt in the guest's journal (its internal listener), verified under its
/// receipt key.
async fn journal(app: &Appliance) -> Vec<UsageReceipt> {
    let addr = app
        .internal_addr
        .clone()
        .expect("the guest printed its internal address");
    let (status, list) = http_json(
        &addr,
        "GET",
        "/internal/v1/receipts?limit=1000",
        Some(TEST_HOST_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let key = hex::decode(list["receipt_key"].as_str().unwrap()).unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| verify_receipt(e["receipt"].as_str().unwrap(), &key).unwrap())
        .collect()
}

/// Waits until the journal holds a receipt `matching`, and returns it.
async fn receipt_where(app: &Appliance, matching: impl Fn(&UsageReceipt) -> bool) -> UsageReceipt {
    for _ in 0..120 {
        if let Some(r) = journal(app).await.into_iter().find(&matching) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no such receipt in the journal: {:?}", journal(app).await);
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The body of a chunked HTTP/1.1 response (`raw` holds head and body).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = &raw[start..];
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// How long a request may take on a loaded 2-core machine before the test calls the
/// guest hung (a liveness bound, not a performance assertion).
const LIVENESS: Duration = Duration::from_secs(120);

/// The tests of this file each load the engine with long generations; run one at a time
/// so that each has the machine's two cores (the test harness runs tests in parallel).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh attested connection that has sent one chat request (`connection: close`).
async fn send_chat(
    app: &Appliance,
    body: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut s = tls(app).await;
    s.write_all(post_with("/v1/chat/completions", &[("connection", "close")], body).as_bytes())
        .await
        .unwrap();
    s
}

/// One non-streamed request on a fresh attested connection; head and body.
async fn ask(app: &Appliance, body: &str) -> (String, String) {
    let mut s = send_chat(app, body).await;
    let raw = tokio::time::timeout(LIVENESS, async {
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        raw
    })
    .await
    .expect("an answer within the liveness bound");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_cannot_stall_the_engine() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tokens = token_file("stall");
    let app = start_appliance(&[
        "--host-token-file",
        tokens.to_str().unwrap(),
        "--stream-stall-timeout-secs",
        "5",
        // Small, so that A's buffers fill within seconds on a slow CI machine.
        "--max-stream-buffer-bytes",
        "16384",
    ])
    .expect("appliance starts");

    // A: a streamed request with large events (6 choices, 20 alternatives per token) on
    // a socket with a tiny receive buffer, and a client that never reads past the head.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(app.guest_addr.parse().unwrap())
        .await
        .unwrap();
    let verifier = AttestedServerVerifier::new(cocoon_tests::dev_attestor().verifier);
    let config = Arc::new(verifier.client_config().unwrap());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut a = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let a_body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a very long story about a lighthouse keeper."}],
        "max_tokens": 512,
        "n": 6,
        "logprobs": true,
        "top_logprobs": 20,
        "temperature": 1.0,
        "stream": true,
    })
    .to_string();
    a.write_all(post_with("/v1/chat/completions", &[], &a_body).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let n = tokio::time::timeout(LIVENESS, a.read(&mut first))
        .await
        .expect("A's stream starts")
        .unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let a_request = hex_sha256(a_body.as_bytes());

    // B, again and again while A sits there: every one-token request is answered. Before
    // the fix the engine froze once A's buffers filled, and B waited for ever.
    let one_token = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
    })
    .to_string();
    let mut a_receipt = None;
    for round in 0..60 {
        let started = std::time::Instant::now();
        // A hang here (past the liveness bound) is the bug: the engine froze behind A.
        let (head, body) = ask(&app, &one_token).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "round {round}: {head} {body}"
        );
        eprintln!(
            "round {round}: B answered in {:.1?}; health {}",
            started.elapsed(),
            health(&app).await
        );
        if let Some(r) = journal(&app)
            .await
            .into_iter()
            .find(|r| r.request_sha256 == a_request)
        {
            a_receipt = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // A was cancelled (it made no progress for 5 s) and billed for what was generated.
    let a_receipt = a_receipt.expect("the stalled stream was cancelled and billed");
    assert_eq!(a_receipt.finish, "cancelled", "{a_receipt:?}");
    assert!(a_receipt.tokens.completion_tokens > 0, "{a_receipt:?}");
    assert_eq!(
        a_receipt.tokens.prompt_tokens % 6,
        0,
        "each of the 6 choices prefilled the prompt: {a_receipt:?}"
    );

    // The guest closed A's connection: what was buffered drains, then the stream ends
    // (before the fix the server held it as long as the client kept it open).
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match a.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "A's connection stays open");

    // Afterwards the guest serves, and /healthz soon reports an engine with nothing
    // pending (a finished request's engine job ends a moment after its answer).
    let (head, _) = ask(&app, &one_token).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut last = serde_json::Value::Null;
    for _ in 0..60 {
        last = health(&app).await;
        assert_eq!(last["status"], "ok", "{last}");
        if last["engine"]["in_flight"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("engine jobs still outstanding 30 s after the last answer: {last}");
}

/// `GET /healthz` (which must answer 200).
async fn health(app: &Appliance) -> serde_json::Value {
    let mut s = tls(app).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: guest\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head} {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_is_billed_and_receipts_name_request_and_response() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tokens = token_file("billing");
    let app = start_appliance(&[
        "--host-token-file",
        tokens.to_str().unwrap(),
        "--request-timeout-secs",
        "10",
    ])
    .expect("appliance starts");
    let (_, verified) = tls_verified(&app).await;
    let key = hex::decode(verified.receipt_key.unwrap()).unwrap();

    // Non-streamed, n = 3: the receipt names the request and response bytes, and bills
    // the prompt for each of the three choices that prefilled it.
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 4,
        "n": 3,
        "seed": 7,
    })
    .to_string();
    let (head, answer) = ask(&app, &body).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let receipt = verify_receipt(header(&head, "x-cocoon-receipt").unwrap(), &key).unwrap();
    let usage: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()["usage"].clone();
    assert_eq!(receipt.request_sha256, hex_sha256(body.as_bytes()));
    assert_eq!(receipt.response_sha256, hex_sha256(answer.as_bytes()));
    assert_eq!(
        receipt.tokens.prompt_tokens,
        3 * usage["prompt_tokens"].as_u64().unwrap(),
        "{receipt:?} {usage}"
    );
    assert_eq!(
        receipt.tokens.completion_tokens,
        usage["completion_tokens"].as_u64().unwrap()
    );

    // Streamed: the receipt event follows [DONE] and hashes every byte before it.
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "stream": true,
    })
    .to_string();
    let mut s = send_chat(&app, &body).await;
    let stream = dechunk(&read_until_closed(&mut s).await);
    let marker = b"event: cocoon.receipt\n";
    let at = stream
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("a receipt event");
    let event: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&stream[at + marker.len()..])
            .trim()
            .strip_prefix("data: ")
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let receipt = verify_receipt(event["receipt"].as_str().unwrap(), &key).unwrap();
    assert_eq!(receipt.request_sha256, hex_sha256(body.as_bytes()));
    assert_eq!(receipt.response_sha256, hex_sha256(&stream[..at]));

    // A stream cut by the 10 s deadline: the client got tokens, so it is billed for what
    // was delivered, as `timeout` (before the fix: no receipt at all).
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 512,
        "temperature": 0,
        "stream": true,
    })
    .to_string();
    let mut s = send_chat(&app, &body).await;
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while seen.windows(7).filter(|w| w == b"data: {").count() < 3 {
        let n = tokio::time::timeout(LIVENESS, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    seen.extend(read_until_closed(&mut s).await);
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    let delivered = text.matches("\"content\":\"").count() as u64;
    let timed_out = receipt_where(&app, |r| r.request_sha256 == hex_sha256(body.as_bytes())).await;
    assert_eq!(timed_out.finish, "timeout", "{timed_out:?}");
    assert!(
        timed_out.tokens.completion_tokens >= 2
            && timed_out.tokens.completion_tokens <= delivered + 1,
        "billed the tokens delivered ({delivered} content events): {timed_out:?}"
    );

    // A non-streamed request whose client leaves while it generates is billed as
    // cancelled (before the fix: nothing).
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long poem about the sea."}],
        "max_tokens": 400,
        "temperature": 0.9,
    })
    .to_string();
    let mut s = tls(&app).await;
    s.write_all(post_with("/v1/chat/completions", &[], &body).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(s);
    let left = receipt_where(&app, |r| r.request_sha256 == hex_sha256(body.as_bytes())).await;
    assert_eq!(left.finish, "cancelled", "{left:?}");
    assert!(left.tokens.prompt_tokens > 0, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_object_answer_ends_at_its_end_of_text() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let app = start_appliance(&[]).expect("appliance starts");
    let mut completed = 0;
    for seed in 1..=4 {
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Describe a cat as a JSON object."}],
            "max_tokens": 150,
            "seed": seed,
            "response_format": {"type": "json_object"},
        })
        .to_string();
        let (head, answer) = ask(&app, &body).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head} {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        let finish = answer["choices"][0]["finish_reason"].as_str().unwrap();
        let used = answer["usage"]["completion_tokens"].as_u64().unwrap();
        let complete = serde_json::from_str::<serde_json::Value>(content).is_ok();
        if complete {
            // Before the fix: finish "length" and all 150 tokens billed after the object
            // had ended.
            assert_eq!(finish, "stop", "seed {seed}: {answer}");
            assert!(used < 150, "seed {seed}: {answer}");
            completed += 1;
        } else {
            assert_eq!(finish, "length", "seed {seed}: {answer}");
        }
    }
    assert!(
        completed > 0,
        "no seed finished its JSON object within 150 tokens"
    );
}

/// Sizes of the TLS records a relay forwards from the guest to the client.
async fn recording_relay(guest: String) -> (String, Arc<Mutex<Vec<(u8, usize)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let records = Arc::new(Mutex::new(Vec::new()));
    let log = records.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(guest).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut uw).await;
        });
        // Guest to client: parse the record headers (type, u16 version, u16 length).
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 5 {
                let len = usize::from(u16::from_be_bytes([pending[3], pending[4]]));
                if pending.len() < 5 + len {
                    break;
                }
                log.lock().unwrap().push((pending[0], len));
                pending.drain(..5 + len);
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    (addr, records)
}

/// Whether a TLS 1.3 application-data record of `len` bytes can carry only whole padded
/// events: plaintext = 1 content-type byte + 16 tag bytes less, made of chunked-encoding
/// framing (7 bytes per chunk: three hex digits and two CRLFs) and event bytes that are
/// a multiple of `bucket`, possibly followed by the 5-byte last chunk `0\r\n\r\n`.
fn padded_record(len: usize, bucket: usize) -> bool {
    let Some(plain) = len.checked_sub(17) else {
        return false;
    };
    let events = |plain: usize| {
        (0..=16).any(|chunks| {
            plain >= 7 * chunks + bucket && (plain - 7 * chunks).is_multiple_of(bucket)
        })
    };
    plain <= 7 || events(plain) || plain.checked_sub(5).is_some_and(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_record_sizes_do_not_follow_token_lengths() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The default of --stream-pad-bytes.
    const PAD: usize = 512;
    let app = start_appliance(&[]).expect("appliance starts");
    let (relay, records) = recording_relay(app.guest_addr.clone()).await;
    let endpoint = cocoon_client::Endpoint::parse(&format!("https://{relay}")).unwrap();
    let options = cocoon_tests::dev_attestor();
    let (mut s, _) = cocoon_client::connect_attested(&endpoint, &options, BOUND)
        .await
        .unwrap();
    // Let the session tickets arrive, then mark where the response starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a sentence with long and short words."}],
        "max_tokens": 40,
        "temperature": 1.0,
        "seed": 3,
        "stream": true,
    })
    .to_string();
    let before = records.lock().unwrap().len();
    s.write_all(post_with("/v1/chat/completions", &[("connection", "close")], &body).as_bytes())
        .await
        .unwrap();
    let raw = read_until_closed(&mut s).await;
    let stream = dechunk(&raw);
    // Every event the client got is a multiple of the pad size.
    let text = String::from_utf8_lossy(&stream);
    let events: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert!(events.len() > 10, "{text}");
    for event in &events {
        assert_eq!(event.len() % PAD, 0, "{event:?}");
    }
    // And what the relay saw: after the record with the response head, every
    // application-data record is made of padded events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen: Vec<usize> = records.lock().unwrap()[before..]
        .iter()
        .filter(|(kind, _)| *kind == 23)
        .map(|(_, len)| *len)
        .collect();
    assert!(seen.len() > 5, "{seen:?}");
    let odd: Vec<usize> = seen[1..]
        .iter()
        .copied()
        .filter(|len| !padded_record(*len, PAD))
        .collect();
    assert!(
        odd.is_empty(),
        "record sizes that follow the text: {odd:?} of {seen:?}"
    );
}
