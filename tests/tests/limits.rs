//! Limits and backpressure against the real guest over real sockets: oversized bodies,
//! slow-loris and idle clients, clients that never start TLS, the connection limit, a
//! full admission queue, the request timeout, a disconnect that must cancel
//! generation, and admission by KV cache capacity (`--kv-cache-tokens`).
//!
//! Waits here are liveness bounds (how long before we call the server hung), never
//! performance assertions.

mod common;

use std::time::Duration;

use cocoon_tests::{start_appliance, Appliance};
use common::{chat_body, post, read_response, read_until_closed, tls, BOUND};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection and starts a streamed chat completion of up to `max_tokens`; returns
/// the connection once the response's head (200) has arrived, the stream still running.
async fn start_stream(
    app: &Appliance,
    max_tokens: u32,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut a = tls(app).await;
    a.write_all(post("/v1/chat/completions", &chat_body(max_tokens, true)).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = tokio::time::timeout(BOUND, a.read(&mut first))
        .await
        .expect("A starts streaming")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_slow_idle_and_silent_clients_are_cut_off() {
    let app = start_appliance(&[
        "--max-body-bytes",
        "2048",
        "--handshake-timeout-secs",
        "2",
        "--header-read-timeout-secs",
        "2",
        "--max-connections",
        "4",
    ])
    .expect("appliance starts");

    // A body over the limit: 413 in OpenAI's error shape.
    let mut s = tls(&app).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    s.write_all(post("/v1/chat/completions", &big).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("2048"),
        "{body}"
    );

    // A declared length over the limit is refused before the body is sent.
    let mut s = tls(&app).await;
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: guest\r\ncontent-length: 100000000\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    // Slow loris: half a request head, then nothing. The server closes the connection.
    let mut s = tls(&app).await;
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: guest\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // An idle keep-alive connection is closed after one request.
    let mut s = tls(&app).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: guest\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    read_until_closed(&mut s).await;

    // A client that connects and never starts TLS.
    let mut tcp = TcpStream::connect(&app.guest_addr).await.unwrap();
    assert!(read_until_closed(&mut tcp).await.is_empty());

    // The connection limit: with 4 held open, a fifth is closed at once, and a slot
    // frees when one of the four goes away.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tls_when_a_slot_is_free(&app).await);
    }
    let mut fifth = TcpStream::connect(&app.guest_addr).await.unwrap();
    assert!(read_until_closed(&mut fifth).await.is_empty());
    drop(held);
    let mut s = tls_when_a_slot_is_free(&app).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: guest\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gets_429_a_slow_request_504_and_a_disconnect_frees_its_slot() {
    let app = start_appliance(&[
        "--max-concurrent-requests",
        "1",
        "--max-queued-requests",
        "0",
        "--request-timeout-secs",
        "10",
    ])
    .expect("appliance starts");

    // A: a long streaming generation holds the only slot.
    let a = start_stream(&app, 500).await;

    // B, while A runs: no slot, no queue: 429 with Retry-After, OpenAI's error shape.
    let mut b = tls(&app).await;
    b.write_all(post("/v1/chat/completions", &chat_body(1, false)).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut b).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"]["message"].is_string(), "{body}");

    // A's client goes away: its generation must stop and free the slot, long before the
    // 500 tokens it asked for could have been generated.
    drop(a);
    let mut admitted = None;
    for _ in 0..60 {
        let mut c = tls(&app).await;
        c.write_all(post("/v1/chat/completions", &chat_body(1, false)).as_bytes())
            .await
            .unwrap();
        let (head, body) = read_response(&mut c).await;
        if !head.starts_with("HTTP/1.1 429") {
            admitted = Some((head, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (head, body) = admitted.expect("the slot is freed after the client disconnected");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");

    // A request that cannot finish within --request-timeout-secs gets 504.
    let mut d = tls(&app).await;
    d.write_all(post("/v1/chat/completions", &chat_body(500, false)).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut d).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}\n{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("10 s"),
        "{body}"
    );
}

/// An attested connection, asked for again (bounded) while the guest still counts
/// connections that have just closed: it frees a slot when it sees the close, which on a
/// busy machine can come a moment after the client saw it.
async fn tls_when_a_slot_is_free(
    app: &cocoon_tests::Appliance,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let endpoint = cocoon_client::Endpoint::parse(&format!("https://{}", app.guest_addr)).unwrap();
    let attestor = cocoon_tests::dev_attestor();
    let started = std::time::Instant::now();
    loop {
        match cocoon_client::connect_attested(&endpoint, &attestor, BOUND).await {
            Ok((s, _)) => return s,
            Err(e) if started.elapsed() < BOUND => {
                eprintln!("no free connection slot yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no connection slot freed within {BOUND:?}: {e}"),
        }
    }
}

/// One request on a fresh attested connection: the response head and body.
async fn exchange(app: &cocoon_tests::Appliance, request: String) -> (String, String) {
    let mut s = tls(app).await;
    s.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_capacity_refuses_what_never_fits_and_queues_what_fits_later() {
    // 128 tokens = 4 blocks of 32; each request below reserves prompt + max_tokens.
    let app = start_appliance(&["--kv-cache-tokens", "128", "--kv-wait-secs", "300"])
        .expect("appliance starts");

    let (head, body) = exchange(
        &app,
        "GET /healthz HTTP/1.1\r\nhost: guest\r\n\r\n".to_string(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["kv_cache"]["capacity_tokens"], 128, "{body}");
    assert_eq!(health["kv_cache"]["blocks_total"], 4, "{body}");

    // The prompt plus 300 completion tokens can never fit: 400, naming the capacity.
    let (head, body) = exchange(&app, post("/v1/chat/completions", &chat_body(300, false))).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}\n{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{body}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("128 tokens"),
        "{body}"
    );

    // Three requests of over 32 tokens (2 or 3 blocks) each: at most two fit at a time,
    // the others wait for room and then run. All complete; none gets a 5xx (or a 429:
    // the wait is long).
    let one = || exchange(&app, post("/v1/chat/completions", &chat_body(20, false)));
    let (r1, r2, r3) = tokio::join!(one(), one(), one());
    for (head, body) in [r1, r2, r3] {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    }
    let (_, body) = exchange(
        &app,
        "GET /healthz HTTP/1.1\r\nhost: guest\r\n\r\n".to_string(),
    )
    .await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["kv_cache"]["blocks_reserved"], 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_capacity_overflow_without_a_wait_gets_429_and_a_disconnect_frees_the_blocks() {
    let app = start_appliance(&["--kv-cache-tokens", "512", "--kv-wait-secs", "0"])
        .expect("appliance starts");

    // A: a long streaming generation reserves most of the cache (prompt + 400).
    let a = start_stream(&app, 400).await;

    // B needs more than is left and may not wait: 429 with Retry-After.
    let (head, body) = exchange(&app, post("/v1/chat/completions", &chat_body(200, false))).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "kv_capacity", "{body}");
    assert_eq!(error["error"]["type"], "rate_limit_error", "{body}");

    // A's client goes away: its blocks are released and B's request gets in.
    drop(a);
    let mut admitted = None;
    for _ in 0..60 {
        let (head, body) =
            exchange(&app, post("/v1/chat/completions", &chat_body(200, false))).await;
        if !head.starts_with("HTTP/1.1 429") {
            admitted = Some((head, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (head, body) = admitted.expect("the blocks are freed after the client disconnected");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
}
