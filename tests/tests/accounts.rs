//! Accounts are keys proven in the TLS session (review finding 1) and the account table is
//! bounded (finding 14), against a real guest process: a request that names an account it
//! did not prove is refused before it generates and leaves no receipt; a proof is good in
//! its own session only; `cocoon-client proxy --account-key` bills its key's account; and
//! without `--allow-anonymous` an unnamed request is refused.

mod common;

use std::process::Command;

use cocoon_attestation::account::{AccountKey, ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};
use cocoon_attestation::receipt::{verify_receipt, UsageReceipt};
use cocoon_attestation::report_data::TLS_EXPORTER_LABEL;
use cocoon_tests::{
    binary, host_token_file, internal_call, scratch_dir, start_appliance, start_appliance_with,
    start_proxy, Appliance, TEST_HOST_TOKEN,
};
use common::{chat_body, header, post_with, read_response, tls, tls_verified};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The RFC 9266 exporter of the client side of `stream`'s TLS session.
fn exporter(stream: &TlsStream<TcpStream>) -> [u8; 32] {
    let mut out = [0u8; 32];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut out, TLS_EXPORTER_LABEL, None)
        .unwrap();
    out
}

/// The account headers proving `key` in the session with `exporter`.
fn proof_headers(key: &AccountKey, exporter: &[u8]) -> [(String, String); 2] {
    [
        (ACCOUNT_HEADER.to_string(), key.id().to_string()),
        (ACCOUNT_PROOF_HEADER.to_string(), key.prove(exporter)),
    ]
}

/// One chat request with `headers` on `stream`; returns the response head and body.
async fn chat_on(
    stream: &mut TlsStream<TcpStream>,
    headers: &[(String, String)],
) -> (String, String) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    stream
        .write_all(post_with("/v1/chat/completions", &headers, &chat_body(2, false)).as_bytes())
        .await
        .unwrap();
    read_response(stream).await
}

/// One chat request on a new connection, with the headers `make` writes for that
/// connection's exporter (a refused request may end its connection).
async fn chat_new(
    app: &Appliance,
    make: impl FnOnce(&[u8; 32]) -> Vec<(String, String)>,
) -> (String, String) {
    let mut stream = tls(app).await;
    let headers = make(&exporter(&stream));
    chat_on(&mut stream, &headers).await
}

fn status(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn error_code(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The receipt of a non-streaming answer, verified under the attested receipt key.
fn receipt(head: &str, key: &[u8]) -> UsageReceipt {
    verify_receipt(
        header(head, "x-cocoon-receipt").expect("receipt header"),
        key,
    )
    .unwrap()
}

/// Every receipt in the guest's journal, verified under `key`.
fn journal(app: &Appliance, key: &[u8]) -> Vec<UsageReceipt> {
    let addr = app.internal_addr.as_deref().expect("an internal listener");
    let (code, list) = internal_call(
        addr,
        "GET",
        "/internal/v1/receipts",
        Some(TEST_HOST_TOKEN),
        "",
    )
    .unwrap();
    assert_eq!(code, 200, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| verify_receipt(e["receipt"].as_str().unwrap(), key).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accounts_proven_in_the_session_are_billed() {
    let dir = scratch_dir("accounts").unwrap();
    let token = host_token_file(&dir, TEST_HOST_TOKEN).unwrap();
    let app = start_appliance(&[
        "--host-token-file",
        token.to_str().unwrap(),
        "--max-accounts",
        "2",
    ])
    .expect("appliance starts");
    let (mut s, verified) = tls_verified(&app).await;
    let receipt_key = hex::decode(verified.receipt_key.expect("a receipt key")).unwrap();

    // The attack of finding 1: naming someone else's account.
    let (head, body) = chat_new(&app, |_| {
        vec![(ACCOUNT_HEADER.to_string(), "victim-account".to_string())]
    })
    .await;
    assert_eq!(status(&head), 401, "{head}\n{body}");
    assert_eq!(error_code(&body), "account_not_proven", "{body}");
    assert!(
        body.contains("victim-account"),
        "the refusal names the claim: {body}"
    );
    assert!(
        journal(&app, &receipt_key).is_empty(),
        "a refused request is not billed to anyone"
    );

    // A proof for this session: billed to the key's account.
    let (alice, _) = AccountKey::generate().unwrap();
    let alice_here = proof_headers(&alice, &exporter(&s));
    let (head, body) = chat_on(&mut s, &alice_here).await;
    assert_eq!(status(&head), 200, "{head}\n{body}");
    let first = receipt(&head, &receipt_key);
    assert_eq!(first.account, alice.id().to_string());
    assert_eq!(first.sequence, 1);
    // The same proof serves every request of its session.
    let (head, _) = chat_on(&mut s, &alice_here).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(receipt(&head, &receipt_key).sequence, 2);

    // The same proof replayed in another session fails.
    let (head, body) = chat_new(&app, |_| alice_here.to_vec()).await;
    assert_eq!(status(&head), 401, "a replayed proof: {head}\n{body}");
    assert!(body.contains("another session"), "{body}");
    // Alice's proof under Bob's name fails.
    let (bob, _) = AccountKey::generate().unwrap();
    let (head, _) = chat_new(&app, |exporter| {
        vec![
            (ACCOUNT_HEADER.to_string(), bob.id().to_string()),
            (ACCOUNT_PROOF_HEADER.to_string(), alice.prove(exporter)),
        ]
    })
    .await;
    assert_eq!(status(&head), 401, "{head}");
    // Another spelling of Alice's id is not her account.
    let (head, _) = chat_new(&app, |exporter| {
        vec![
            (
                ACCOUNT_HEADER.to_string(),
                alice.id().to_string().to_uppercase(),
            ),
            (ACCOUNT_PROOF_HEADER.to_string(), alice.prove(exporter)),
        ]
    })
    .await;
    assert_eq!(status(&head), 401, "{head}");
    // Two account headers are ambiguous, even if one of them is proven.
    let (head, body) = chat_new(&app, |exporter| {
        let [account, proof] = proof_headers(&alice, exporter);
        vec![
            account,
            (ACCOUNT_HEADER.to_string(), bob.id().to_string()),
            proof,
        ]
    })
    .await;
    assert_eq!(status(&head), 401, "{head}");
    assert!(body.contains("more than once"), "{body}");

    // The host's journal holds exactly the two billed requests, both Alice's.
    let billed = journal(&app, &receipt_key);
    assert_eq!(billed.len(), 2, "{billed:?}");
    assert!(billed.iter().all(|r| r.account == alice.id().to_string()));

    // Finding 14: at most 2 proven accounts per boot; a third gets 503 before generating,
    // anonymous always fits, and the accounts already served stay.
    let (head, _) = chat_new(&app, |exporter| proof_headers(&bob, exporter).to_vec()).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(receipt(&head, &receipt_key).account, bob.id().to_string());
    let (carol, _) = AccountKey::generate().unwrap();
    let (head, body) = chat_new(&app, |exporter| proof_headers(&carol, exporter).to_vec()).await;
    assert_eq!(status(&head), 503, "{head}\n{body}");
    assert_eq!(error_code(&body), "account_limit", "{body}");
    let (head, _) = chat_new(&app, |_| Vec::new()).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(receipt(&head, &receipt_key).account, "anonymous");
    let (head, _) = chat_on(&mut s, &alice_here).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(receipt(&head, &receipt_key).sequence, 3);
    assert_eq!(journal(&app, &receipt_key).len(), 5);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_proves_its_account_key_and_drops_the_local_clients_claims() {
    let app = start_appliance(&[]).expect("appliance starts");
    let (_, verified) = tls_verified(&app).await;
    let receipt_key = hex::decode(verified.receipt_key.expect("a receipt key")).unwrap();
    let dir = scratch_dir("account-proxy").unwrap();
    let key_file = dir.join("account.pem");
    let keygen = Command::new(binary("cocoon-client").unwrap())
        .args(["account", "keygen", "--out", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let account = String::from_utf8(keygen.stdout).unwrap().trim().to_string();
    assert!(
        account.starts_with("ed25519:") && account.len() == 8 + 64,
        "{account}"
    );
    let show = Command::new(binary("cocoon-client").unwrap())
        .args(["account", "show", "--key", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    // First line: the account id; then the wallet v5r1 the same key controls.
    let shown = String::from_utf8_lossy(&show.stdout).to_string();
    let mut lines = shown.lines();
    assert_eq!(lines.next(), Some(account.as_str()), "{shown}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("wallet v5r1 (mainnet): ")),
        "{shown}"
    );
    let again = Command::new(binary("cocoon-client").unwrap())
        .args(["account", "keygen", "--out", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success(), "keygen never overwrites a key");

    let upstream = format!("https://{}", app.agent_addr);
    let key_arg = key_file.to_str().unwrap();
    let (_with_key, with_key) = start_proxy(
        &upstream,
        &[
            "--allow-simulated",
            "--accept-any-image",
            "--account-key",
            key_arg,
        ],
    )
    .unwrap();
    let (_without, without) =
        start_proxy(&upstream, &["--allow-simulated", "--accept-any-image"]).unwrap();
    // The local client claims someone else's account; the proxy replaces the claim with
    // its own proven account, or drops it.
    for (proxy, billed) in [(&with_key, account.as_str()), (&without, "anonymous")] {
        for _ in 0..2 {
            let head = proxy_chat(proxy, &[(ACCOUNT_HEADER, "victim-account")]);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let r = receipt(&head, &receipt_key);
            assert_eq!(r.account, billed, "{head}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// One plain-HTTP chat request through the local proxy (its own connection, so its own
/// upstream session); returns the response head.
fn proxy_chat(addr: &str, headers: &[(&str, &str)]) -> String {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(common::BOUND * 2)).unwrap();
    // The proxy answers only requests that name it in Host (review finding 11).
    let request = post_with("/v1/chat/completions", headers, &chat_body(2, false))
        .replacen("host: guest\r\n", &format!("host: {addr}\r\n"), 1)
        .replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
    conn.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    raw.split_once("\r\n\r\n")
        .map(|(h, _)| h.to_string())
        .unwrap_or(raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_anonymous_an_unnamed_request_is_refused() {
    let app = start_appliance_with("simulated", false, &[]).expect("appliance starts");
    let (mut s, verified) = tls_verified(&app).await;
    let receipt_key = hex::decode(verified.receipt_key.expect("a receipt key")).unwrap();
    let (head, body) = chat_on(&mut s, &[]).await;
    assert_eq!(status(&head), 401, "{head}\n{body}");
    assert_eq!(error_code(&body), "account_not_proven", "{body}");
    let (key, _) = AccountKey::generate().unwrap();
    let headers = proof_headers(&key, &exporter(&s));
    let (head, body) = chat_on(&mut s, &headers).await;
    assert_eq!(status(&head), 200, "{head}\n{body}");
    assert_eq!(receipt(&head, &receipt_key).account, key.id().to_string());
    // The measured config says so.
    s.write_all(b"GET /v1/attestation/config HTTP/1.1\r\nhost: guest\r\n\r\n")
        .await
        .unwrap();
    let (_, config) = read_response(&mut s).await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["accounts"]["allow_anonymous"], false, "{config}");
}
