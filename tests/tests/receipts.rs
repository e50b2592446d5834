//! Usage receipts end to end: a real guest meters non-streaming, streaming and cancelled
//! requests of proven accounts, signs receipts that verify under the receipt key its
//! evidence attests, and hands every receipt to the host agent's authenticated internal
//! endpoint, which listens apart from the public port (review finding 21). Without a
//! collector nothing is journaled, so the guest never stops for a backlog (finding 10).

mod common;

use std::time::Duration;

use cocoon_attestation::account::AccountKey;
use cocoon_attestation::receipt::{verify_receipt, UsageReceipt};
use cocoon_tests::{
    binary, host_token_file, model_path, run_to_exit, scratch_dir, start_appliance, TEST_HOST_TOKEN,
};
use common::{
    as_refs, chat_body, header, http_json, post_with, proven, read_response, read_until_closed,
    tls, tls_verified, BOUND,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = TEST_HOST_TOKEN;

/// `GET`/`POST` on the internal listener with an optional bearer token.
async fn internal(
    app: &cocoon_tests::Appliance,
    request: &str,
    token: Option<&str>,
) -> (String, serde_json::Value) {
    let addr = app
        .internal_addr
        .clone()
        .expect("the guest printed its internal address");
    let (line, body) = request.split_once('\n').unwrap_or((request, ""));
    let (method, path) = line.split_once(' ').unwrap();
    let (status, value) = http_json(&addr, method, path, token, body).await;
    (format!("HTTP/1.1 {status}"), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_signed_by_the_attested_key_and_reach_the_host() {
    let dir = scratch_dir("receipts").unwrap();
    let token_file = host_token_file(&dir, TOKEN).unwrap();
    let app = start_appliance(&[
        "--host-token-file",
        token_file.to_str().unwrap(),
        "--price-prompt",
        "1000000",
        "--price-completion",
        "3000000",
    ])
    .expect("appliance starts");
    let (mut s, verified) = tls_verified(&app).await;
    let key = hex::decode(
        verified
            .receipt_key
            .expect("the evidence binds a receipt key"),
    )
    .unwrap();
    let (alice, _) = AccountKey::generate().unwrap();
    let account = proven(&alice, &s);

    // Non-streaming: the receipt is a response header and matches the usage.
    s.write_all(
        post_with(
            "/v1/chat/completions",
            &as_refs(&account),
            &chat_body(8, false),
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let first = verify_receipt(
        header(&head, "x-cocoon-receipt").expect("receipt header"),
        &key,
    )
    .unwrap();
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first.request_id, document["id"].as_str().unwrap());
    assert_eq!(first.account, alice.id().to_string());
    assert_eq!(first.model, app.model_id);
    assert_eq!(first.sequence, 1);
    assert_eq!(
        first.tokens.prompt_tokens,
        document["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        first.tokens.completion_tokens,
        document["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        first.charge,
        first.tokens.prompt_tokens + 3 * first.tokens.completion_tokens
    );

    // Streaming: the receipt is the event after [DONE]; sequence and totals continue.
    let body = serde_json::json!({
        "model": app.model_id,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let mut s = tls(&app).await;
    let account = proven(&alice, &s);
    let request = post_with("/v1/chat/completions", &as_refs(&account), &body).replacen(
        "\r\n\r\n",
        "\r\nconnection: close\r\n\r\n",
        1,
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let raw = String::from_utf8(read_until_closed(&mut s).await).unwrap();
    let done = raw.find("data: [DONE]").expect("[DONE]");
    let after = &raw[done..];
    let event = after
        .lines()
        .skip_while(|l| *l != "event: cocoon.receipt")
        .nth(1)
        .and_then(|l| l.strip_prefix("data: "))
        .expect("a cocoon.receipt event after [DONE]");
    let event: serde_json::Value = serde_json::from_str(event).unwrap();
    let second = verify_receipt(event["receipt"].as_str().unwrap(), &key).unwrap();
    let usage_line = raw[..done]
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(
        second.tokens.completion_tokens,
        usage_line["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(second.sequence, 2);
    assert_eq!(second.cumulative.requests, 2);
    assert_eq!(
        second.cumulative.tokens,
        first.tokens.plus(second.tokens),
        "cumulative totals add up"
    );

    // Cancelled: the client goes away mid-stream; what was generated is billed.
    let mut s = tls(&app).await;
    let long = serde_json::json!({
        "model": app.model_id,
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "max_tokens": 400,
        "temperature": 0,
        "stream": true,
    })
    .to_string();
    let (bob, _) = AccountKey::generate().unwrap();
    s.write_all(post_with("/v1/chat/completions", &as_refs(&proven(&bob, &s)), &long).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let mut seen = String::new();
    while seen.matches("data: {").count() < 4 {
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(s);

    // The host agent's view: without the token nothing, with it every receipt.
    let (head, _) = internal(&app, "GET /internal/v1/receipts", None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = internal(
        &app,
        "GET /internal/v1/receipts",
        Some("wrong-token-wrong-token-wrong-token"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let mut journal: Vec<UsageReceipt> = Vec::new();
    for _ in 0..60 {
        let (head, list) = internal(&app, "GET /internal/v1/receipts", Some(TOKEN)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(list["receipt_key"], hex::encode(&key));
        journal = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| verify_receipt(e["receipt"].as_str().unwrap(), &key).unwrap())
            .collect();
        if journal.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(journal.len(), 3, "{journal:?}");
    assert_eq!(journal[0], first);
    assert_eq!(journal[1], second);
    let cancelled = &journal[2];
    assert_eq!(
        (cancelled.account.as_str(), cancelled.finish.as_str()),
        (bob.id().to_string().as_str(), "cancelled")
    );
    assert_eq!(cancelled.sequence, 1, "bob's own sequence");
    assert!(
        (1..400).contains(&cancelled.tokens.completion_tokens),
        "billed what was generated before the client left: {cancelled:?}"
    );

    // Acknowledged receipts leave the journal.
    let (_, ack) = internal(
        &app,
        "POST /internal/v1/receipts/ack\n{\"upto\": 2}",
        Some(TOKEN),
    )
    .await;
    assert_eq!(ack["acknowledged"], 2);
    let (_, list) = internal(&app, "GET /internal/v1/receipts", Some(TOKEN)).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // An account that is not a key, or not proven, is a 401, not a silent "anonymous".
    let mut s = tls(&app).await;
    s.write_all(
        post_with(
            "/v1/chat/completions",
            &[("x-cocoon-account", "a b")],
            &chat_body(1, false),
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(body.contains("account_not_proven"), "{body}");

    // Finding 21: the public port, which the relay forwards, has no internal API at all,
    // with or without the token.
    for token in [None, Some(TOKEN)] {
        let mut s = tls(&app).await;
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!("GET /internal/v1/receipts HTTP/1.1\r\nhost: guest\r\n{auth}\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}\n{body}");
        assert!(body.contains("unknown_url"), "{body}");
    }
    // Nor does the internal listener serve the public API.
    let (head, body) = internal(&app, "GET /v1/models", Some(TOKEN)).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head} {body}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 10: without a collector (no --host-token-file) nothing is journaled, so a small
/// journal bound never stops the guest, and clients still get their receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_the_guest_keeps_serving() {
    let app = start_appliance(&["--max-uncollected-receipts", "2"]).expect("appliance starts");
    assert_eq!(
        app.internal_addr, None,
        "no collector, no internal listener"
    );
    let (mut s, verified) = tls_verified(&app).await;
    let key = hex::decode(verified.receipt_key.unwrap()).unwrap();
    for i in 1..=5u64 {
        s.write_all(post_with("/v1/chat/completions", &[], &chat_body(1, false)).as_bytes())
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "request {i}: {head}\n{body}"
        );
        let r = verify_receipt(header(&head, "x-cocoon-receipt").unwrap(), &key).unwrap();
        assert_eq!((r.account.as_str(), r.sequence), ("anonymous", i));
    }
    s.write_all(b"GET /v1/attestation/config HTTP/1.1\r\nhost: guest\r\n\r\n")
        .await
        .unwrap();
    let (_, config) = read_response(&mut s).await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["receipts"]["journal_capacity"], 0, "{config}");
    assert_eq!(
        config["receipts"]["internal_listen"],
        serde_json::Value::Null
    );
}

/// Finding 21: the host token is judged by how guessable it is, not by its length; a weak
/// one stops the guest at start with a message that says why.
#[test]
fn guessable_host_tokens_are_refused_at_start() {
    let dir = scratch_dir("weak-token").unwrap();
    for weak in [
        "a".repeat(32),
        "ab".repeat(32),
        "0123456789abcdef".repeat(4),
    ] {
        let token = host_token_file(&dir, &weak).unwrap();
        let mut cmd = std::process::Command::new(binary("cocoon-guest").unwrap());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--tee", "simulated"])
            .args(["--internal-listen", "127.0.0.1:0", "--host-token-file"])
            .arg(&token)
            .arg("--model")
            .arg(model_path().unwrap());
        let out = run_to_exit(cmd, Duration::from_secs(120)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{weak:?} accepted: {stderr}");
        assert!(
            stderr.contains("--host-token-file") && stderr.contains("too easy to guess"),
            "{weak:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "a guest with a weak token never listens"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
