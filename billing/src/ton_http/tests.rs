//! The client against the server over a real local chain, and the client against
//! misbehaving servers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tycho_types::cell::{Cell, CellBuilder, HashBytes};
use tycho_types::models::{StateInit, StdAddr};

use super::*;
use crate::chain::{
    AccountStatus, Chain, SharedLocalChain, StackValue, TransactionInfo, NO_CODE_EXIT_CODE,
};
use crate::local_chain::{InternalMessage, LocalChain};
use crate::Error;

const NOW: u32 = 1_767_225_600;
const TON: u128 = 1_000_000_000;

fn new_chain() -> SharedLocalChain {
    let mut chain = LocalChain::with_default_config().expect("chain");
    chain.set_now(NOW).expect("now");
    Arc::new(Mutex::new(chain))
}

async fn start(chain: &SharedLocalChain) -> (ServerHandle, TonHttpClient) {
    start_with(chain, ServerLimits::default()).await
}

async fn start_with(
    chain: &SharedLocalChain,
    limits: ServerLimits,
) -> (ServerHandle, TonHttpClient) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = spawn_server(listener, chain.clone(), limits).expect("server");
    let mut config = TonHttpConfig::new(server.base_url());
    config.request_timeout = Duration::from_secs(20);
    config.api_key = Some("test-key".into());
    let client = TonHttpClient::new(config).expect("client");
    (server, client)
}

/// Deploys `code` (raw TVM bytes) with empty data through an internal message; returns the
/// address.
fn deploy_code(chain: &SharedLocalChain, code: &[u8]) -> StdAddr {
    let mut builder = CellBuilder::new();
    builder
        .store_raw(code, u16::try_from(code.len() * 8).expect("bits"))
        .expect("code");
    let init = StateInit {
        split_depth: None,
        special: None,
        code: Some(builder.build().expect("cell")),
        data: Some(Cell::default()),
        libraries: Default::default(),
    };
    let addr = crate::layout::state_init_address(&init).expect("address");
    let txs = chain
        .lock()
        .expect("lock")
        .send_internal(InternalMessage {
            src: StdAddr::new(0, HashBytes([1; 32])),
            dest: addr.clone(),
            value: TON,
            bounce: false,
            body: None,
            state_init: Some(init),
        })
        .expect("deploy");
    assert!(txs[0].success, "{txs:#?}");
    addr
}

/// Getters that take (int a, int b) and return a + b: `DUP IFNOTRET DROP ADD` (the
/// selector 0 of an internal message returns at once).
const ADD_CODE: &[u8] = &[0x20, 0xdd, 0x30, 0xa0];
/// Getters that take (cell c, slice s) and return (c, the first 32 bits of s):
/// `DUP IFNOTRET DROP LDU 32 DROP`.
const CELL_CODE: &[u8] = &[0x20, 0xdd, 0x30, 0xd3, 0x1f, 0x30];

/// A raw HTTP/1.1 exchange: returns (status, body).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

fn envelope(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn billing_http_address_information_after_airdrop() {
    let chain = new_chain();
    let (server, client) = start(&chain).await;
    let addr = StdAddr::new(0, HashBytes([7; 32]));
    let state = client.get_address_information(&addr).await.expect("state");
    assert_eq!(state.status, AccountStatus::Nonexist);
    assert_eq!((state.balance, state.last_lt), (0, 0));

    chain
        .lock()
        .expect("lock")
        .airdrop(&addr, 3 * TON)
        .expect("airdrop");
    let state = client.get_address_information(&addr).await.expect("state");
    assert_eq!(state.status, AccountStatus::Uninit);
    assert_eq!(state.balance, 3 * TON);

    // The user-friendly form reaches the same account, through the server's own parser.
    let (status, body) = raw(
        server.local_addr(),
        &get(&format!(
            "/api/v2/getAddressInformation?address={}",
            crate::chain::friendly_address(&addr)
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json = envelope(&body);
    assert_eq!(json["ok"], true);
    assert_eq!(json["result"]["balance"], (3 * TON).to_string());
    assert_eq!(json["result"]["state"], "uninitialized");
    server.shutdown().await;
}

#[cfg(feature = "wallet")]
#[tokio::test]
async fn billing_http_wallet_deploy_via_send_boc_and_seqno() {
    use crate::wallet::{Network, OutMessage, Wallet};

    let chain = new_chain();
    let (server, client) = start(&chain).await;
    let wallet = Wallet::from_seed(&[9; 32], Network::Local).expect("wallet");
    let me = wallet.address();
    chain
        .lock()
        .expect("lock")
        .airdrop(&me, 10 * TON)
        .expect("airdrop");
    assert_eq!(client.wallet_seqno(&me).await.expect("seqno"), 0);

    let payee = StdAddr::new(0, HashBytes([0x42; 32]));
    let pay = |amount| OutMessage {
        dest: payee.clone(),
        value: amount,
        bounce: false,
        body: None,
        state_init: None,
    };
    let first = wallet
        .external_transfer(0, NOW + 60, &[pay(TON)])
        .expect("transfer");
    let hash = Chain::send_boc(&client, &first).await.expect("deploy");
    assert_eq!(hash, crate::chain::message_hash(&first).expect("hash"));
    let state = client.account_state(&me).await.expect("state");
    assert_eq!(state.status, AccountStatus::Active);
    assert!(state.last_lt > 0);
    assert_eq!(client.wallet_seqno(&me).await.expect("seqno"), 1);

    let second = wallet
        .external_transfer(1, NOW + 60, &[pay(2 * TON)])
        .expect("transfer");
    Chain::send_boc(&client, &second).await.expect("second");
    assert_eq!(client.wallet_seqno(&me).await.expect("seqno"), 2);

    // A replay is refused with the wallet's exit code, as the local chain reports it.
    let replay = Chain::send_boc(&client, &second).await;
    let Err(Error::ExternalNotAccepted { exit_code }) = replay else {
        panic!("replay: {replay:?}")
    };
    let local = chain.lock().expect("lock").send_external(&second);
    let Err(Error::ExternalNotAccepted {
        exit_code: local_code,
    }) = local
    else {
        panic!("local replay: {local:?}")
    };
    assert_eq!(exit_code, local_code);
    assert!(exit_code.is_some_and(|c| c != 0));

    // The payee sees both payments land, newest first, from the wallet.
    let txs = client.transactions(&payee, 10).await.expect("transactions");
    assert_eq!(txs.len(), 2);
    assert!(txs[0].lt > txs[1].lt);
    let values: Vec<_> = txs
        .iter()
        .map(|tx| tx.in_msg.as_ref().expect("in_msg").value)
        .collect();
    assert_eq!(values, vec![2 * TON, TON]);
    for tx in &txs {
        assert_eq!(
            tx.in_msg.as_ref().and_then(|m| m.source.clone()),
            Some(me.clone())
        );
    }
    // The wallet's own transactions: external in, one payment out each.
    let mine = client.transactions(&me, 1).await.expect("transactions");
    assert_eq!(mine.len(), 1);
    let tx = &mine[0];
    assert!(tx.fee > 0);
    assert_eq!(tx.in_msg.as_ref().and_then(|m| m.source.clone()), None);
    assert_eq!(tx.out_msgs.len(), 1);
    assert_eq!(tx.out_msgs[0].destination, Some(payee.clone()));
    assert_eq!(tx.out_msgs[0].value, 2 * TON);

    // getWalletInformation answers too.
    let (status, body) = raw(
        server.local_addr(),
        &get(&format!("/api/v2/getWalletInformation?address={me}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json = envelope(&body);
    assert_eq!(json["result"]["seqno"], 2);
    assert_eq!(json["result"]["wallet"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn billing_http_get_method_round_trip() {
    let chain = new_chain();
    let (server, client) = start(&chain).await;
    let adder = deploy_code(&chain, ADD_CODE);
    let big: num_bigint::BigInt = num_bigint::BigInt::from(1u8) << 200usize;
    let sum = client
        .run_get_method(
            &adder,
            "anything",
            &[StackValue::Int(big.clone()), StackValue::int(-3)],
        )
        .await
        .expect("add");
    assert_eq!(sum, vec![StackValue::Int(big - 3)]);

    let reader = deploy_code(&chain, CELL_CODE);
    let cell = CellBuilder::build_from(0x0102_0304_u32).expect("cell");
    let slice = CellBuilder::build_from((0xcafe_f00d_u32, 7u8)).expect("slice");
    let out = client
        .run_get_method(
            &reader,
            "read",
            &[StackValue::Cell(cell.clone()), StackValue::Slice(slice)],
        )
        .await
        .expect("read");
    assert_eq!(
        out,
        vec![StackValue::Cell(cell), StackValue::int(0xcafe_f00d_u32)]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn billing_http_error_paths() {
    let chain = new_chain();
    let limits = ServerLimits {
        max_body_bytes: 4096,
        ..ServerLimits::default()
    };
    let (server, client) = start_with(&chain, limits).await;
    let at = server.local_addr();

    // A bad BoC: toncenter's envelope, 400.
    let (status, body) = raw(at, &post("/api/v2/sendBoc", r#"{"boc":"AAAA"}"#)).await;
    assert_eq!(status, 400, "{body}");
    let json = envelope(&body);
    assert_eq!(json["ok"], false);
    assert_eq!(json["code"], 400);
    assert!(
        json["error"].as_str().expect("error").contains("BoC"),
        "{body}"
    );
    // Through the client: refused before sending, as the local chain refuses it.
    assert!(matches!(
        Chain::send_boc(&client, b"not a boc").await,
        Err(Error::Boc(_))
    ));
    // The server's refusal reaches the client with the URL and toncenter's text.
    let err = client.send_boc(b"not a boc").await.expect_err("bad boc");
    let Error::Api { url, code, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*code, 400);
    assert!(url.ends_with("/api/v2/sendBoc"), "{url}");
    assert!(message.contains("Failed to deserialize BoC"), "{message}");

    // An oversized body: refused from its Content-Length, and when streamed without one.
    let big = format!(r#"{{"boc":"{}"}}"#, "A".repeat(8000));
    let (status, body) = raw(at, &post("/api/v2/sendBoc", &big)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(envelope(&body)["code"], 413);
    let chunk = "A".repeat(8000);
    let chunked = format!(
        "POST /api/v2/sendBoc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let (status, _) = raw(at, chunked.as_bytes()).await;
    assert_eq!(status, 413);
    // Oversized headers.
    let huge_header = format!(
        "GET /api/v2/getAddressInformation?address=0:00 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let (status, _) = raw(at, huge_header.as_bytes()).await;
    assert_eq!(status, 431);

    // Malformed JSON, missing or bad addresses, unknown routes, wrong methods.
    let (status, body) = raw(at, &post("/api/v2/runGetMethod", "{not json")).await;
    assert_eq!((status, envelope(&body)["ok"].clone()), (400, false.into()));
    let (status, _) = raw(at, &get("/api/v2/getAddressInformation")).await;
    assert_eq!(status, 400);
    let (status, body) = raw(at, &get("/api/v2/getAddressInformation?address=nope")).await;
    assert_eq!(status, 400);
    assert!(envelope(&body)["error"]
        .as_str()
        .expect("error")
        .contains("address"));
    let (status, _) = raw(at, &get("/api/v2/nothingHere")).await;
    assert_eq!(status, 404);
    let (status, _) = raw(at, &get("/api/v2/sendBoc")).await;
    assert_eq!(status, 405);
    let (status, _) = raw(at, &get("/api/v2/getTransactions?address=0:00&limit=1000")).await;
    assert_eq!(status, 400);

    // Non-zero exit codes are typed errors naming the code: a getter that throws (THROW 42),
    // and an account without code.
    let thrower = deploy_code(&chain, &[0x20, 0xdd, 0xf2, 0x2a]);
    let err = client
        .run_get_method(&thrower, "boom", &[])
        .await
        .expect_err("throws");
    assert!(
        matches!(&err, Error::GetMethodFailed { method, exit_code: 42 } if method == "boom"),
        "{err:?}"
    );
    assert!(err.to_string().contains("42"));
    let nobody = StdAddr::new(0, HashBytes([0x55; 32]));
    let err = client
        .run_get_method(&nobody, "seqno", &[])
        .await
        .expect_err("no code");
    assert!(
        matches!(
            err,
            Error::GetMethodFailed {
                exit_code: NO_CODE_EXIT_CODE,
                ..
            }
        ),
        "{err:?}"
    );
    // ...while the wire answer itself is ok:true with the exit code, as toncenter's.
    let (status, body) = raw(
        at,
        &post(
            "/api/v2/runGetMethod",
            &format!(r#"{{"address":"{thrower}","method":"boom","stack":[]}}"#),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(envelope(&body)["result"]["exit_code"], 42);
    server.shutdown().await;
}

/// The calls a client and a host agent make, recorded for comparison.
async fn observe(chain: &dyn Chain, addrs: &[StdAddr]) -> Vec<String> {
    let mut seen = Vec::new();
    for addr in addrs {
        seen.push(format!("{:?}", chain.account_state(addr).await));
        seen.push(format!("{:?}", chain.wallet_seqno(addr).await));
        seen.push(format!("{:?}", chain.transactions(addr, 5).await));
        seen.push(format!(
            "{:?}",
            chain
                .run_get_method(addr, "m", &[StackValue::int(40), StackValue::int(2)])
                .await
        ));
        seen.push(format!(
            "{:?}",
            chain.run_get_method(addr, "get_public_key", &[]).await
        ));
    }
    seen.push(format!("{:?}", chain.send_boc(b"garbage").await));
    seen
}

#[tokio::test]
async fn billing_http_chain_trait_same_answers_local_and_http() {
    let chain = new_chain();
    let (server, client) = start(&chain).await;
    let adder = deploy_code(&chain, ADD_CODE);
    let poor = StdAddr::new(0, HashBytes([3; 32]));
    chain
        .lock()
        .expect("lock")
        .airdrop(&poor, 5)
        .expect("airdrop");
    let mut addrs = vec![adder, poor, StdAddr::new(-1, HashBytes([4; 32]))];

    #[cfg(feature = "wallet")]
    {
        use crate::wallet::{Network, OutMessage, Wallet};
        let wallet = Wallet::from_seed(&[5; 32], Network::Local).expect("wallet");
        chain
            .lock()
            .expect("lock")
            .airdrop(&wallet.address(), 10 * TON)
            .expect("airdrop");
        let payee = addrs[0].clone();
        let pay = OutMessage {
            dest: payee,
            value: TON,
            bounce: true,
            body: Some(CellBuilder::build_from(0x5041_594f_u32).expect("body")),
            state_init: None,
        };
        // One transfer through each implementation, both through `dyn Chain`.
        let local: &dyn Chain = &chain;
        let http: &dyn Chain = &client;
        let boc = wallet
            .external_transfer(
                local.wallet_seqno(&wallet.address()).await.expect("seqno"),
                NOW + 60,
                std::slice::from_ref(&pay),
            )
            .expect("transfer");
        local.send_boc(&boc).await.expect("local send");
        let boc = wallet
            .external_transfer(
                http.wallet_seqno(&wallet.address()).await.expect("seqno"),
                NOW + 60,
                &[pay],
            )
            .expect("transfer");
        http.send_boc(&boc).await.expect("http send");
        assert_eq!(
            local.wallet_seqno(&wallet.address()).await.expect("seqno"),
            2
        );
        // The same replay refused the same way by both.
        assert_eq!(
            format!("{:?}", local.send_boc(&boc).await),
            format!("{:?}", http.send_boc(&boc).await)
        );
        addrs.push(wallet.address());
    }

    let chains: Vec<Box<dyn Chain>> = vec![Box::new(chain.clone()), Box::new(client.clone())];
    let local = observe(chains[0].as_ref(), &addrs).await;
    let http = observe(chains[1].as_ref(), &addrs).await;
    assert_eq!(local.len(), http.len());
    for (l, h) in local.iter().zip(&http) {
        assert_eq!(l, h);
    }
    // The comparison covered successes and failures alike.
    assert!(
        local.iter().any(|s| s.contains("Ok([Int(42)])")),
        "{local:#?}"
    );
    assert!(local.iter().any(|s| s.contains("GetMethodFailed")));
    assert!(local.iter().any(|s| s.contains("Nonexist")));
    server.shutdown().await;
}

/// A server that answers each connection with the next canned response (or holds it open
/// without answering when the response is `None`).
async fn canned(
    responses: Vec<Option<String>>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut served = 0;
        let mut held = Vec::new();
        for response in responses {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            // Read the whole request head, so that closing does not reset the connection.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            served += 1;
            match response {
                Some(text) => {
                    let _ = stream.write_all(text.as_bytes()).await;
                    let _ = stream.shutdown().await;
                    // Wait for the client to close its side.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    })
                    .await;
                }
                None => held.push(stream),
            }
        }
        if !held.is_empty() {
            // Silent connections stay open until the test aborts this task.
            std::future::pending::<()>().await;
        }
        served
    });
    (addr, task)
}

fn http_response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn billing_http_retries_429_then_gives_up() {
    let limited = http_response(
        "429 Too Many Requests",
        "Retry-After: 0\r\n",
        r#"{"ok":false,"error":"Ratelimit exceed","code":429}"#,
    );
    let fine = http_response(
        "200 OK",
        "",
        r#"{"ok":true,"result":{"balance":"12","state":"active","last_transaction_id":{"lt":"9","hash":""}}}"#,
    );
    let (addr, task) = canned(vec![
        Some(limited.clone()),
        Some(limited.clone()),
        Some(fine),
    ])
    .await;
    let mut config = TonHttpConfig::new(format!("http://{addr}"));
    config.retry_base_delay = Duration::from_millis(10);
    let client = TonHttpClient::new(config.clone()).expect("client");
    let who = StdAddr::new(0, HashBytes([1; 32]));
    let state = client
        .get_address_information(&who)
        .await
        .expect("after retries");
    assert_eq!(
        (state.balance, state.status, state.last_lt),
        (12, AccountStatus::Active, 9)
    );
    assert_eq!(task.await.expect("task"), 3);

    // Out of retries: the 429 with toncenter's text.
    let (addr, task) = canned(vec![Some(limited.clone()), Some(limited)]).await;
    config.base_url = format!("http://{addr}");
    config.max_retries = 1;
    let client = TonHttpClient::new(config).expect("client");
    let err = client
        .get_address_information(&who)
        .await
        .expect_err("limited");
    assert!(
        matches!(&err, Error::Api { code: 429, message, .. } if message == "Ratelimit exceed"),
        "{err:?}"
    );
    assert_eq!(task.await.expect("task"), 2);
}

#[tokio::test]
async fn billing_http_client_bounds_answers_and_time() {
    let big = http_response(
        "200 OK",
        "",
        &format!(r#"{{"ok":true,"result":"{}"}}"#, "x".repeat(4096)),
    );
    let html = http_response("502 Bad Gateway", "", "<html>bad gateway</html>");
    let (addr, task) = canned(vec![Some(big), Some(html), None]).await;
    let mut config = TonHttpConfig::new(format!("http://{addr}/api/v2"));
    config.max_response_bytes = 1024;
    config.request_timeout = Duration::from_millis(500);
    let client = TonHttpClient::new(config).expect("client");
    let who = StdAddr::new(0, HashBytes([1; 32]));

    let err = client
        .get_address_information(&who)
        .await
        .expect_err("too big");
    assert!(
        matches!(&err, Error::Http { url, reason } if url.contains("/api/v2/getAddressInformation?address=0%3A") && reason.contains("larger than 1024")),
        "{err:?}"
    );
    let err = client
        .get_address_information(&who)
        .await
        .expect_err("html");
    assert!(
        matches!(&err, Error::Http { reason, .. } if reason.contains("502") && reason.contains("bad gateway")),
        "{err:?}"
    );
    let err = client
        .get_address_information(&who)
        .await
        .expect_err("silent");
    assert!(
        matches!(&err, Error::Http { reason, .. } if reason.contains("timed out")),
        "{err:?}"
    );
    task.abort();

    // Nothing listening: a connect error naming the URL.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed = listener.local_addr().expect("addr");
    drop(listener);
    let client =
        TonHttpClient::new(TonHttpConfig::new(format!("http://{closed}"))).expect("client");
    let err = client
        .get_address_information(&who)
        .await
        .expect_err("closed");
    assert!(
        matches!(&err, Error::Http { url, reason } if url.starts_with(&format!("http://{closed}")) && reason.contains("connect")),
        "{err:?}"
    );
}

#[tokio::test]
async fn billing_http_server_drops_slow_clients() {
    let chain = new_chain();
    let limits = ServerLimits {
        header_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_millis(200),
        max_connections: 2,
        ..ServerLimits::default()
    };
    let (server, client) = start_with(&chain, limits).await;
    let at = server.local_addr();
    // A head that never ends: closed after the header timeout.
    let mut slow = TcpStream::connect(at).await.expect("connect");
    slow.write_all(b"GET /api/v2/getAddr").await.expect("write");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "slow head kept open");
    // A body that never ends: 408.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        raw(
            at,
            b"POST /api/v2/sendBoc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"boc\"",
        ),
    )
    .await
    .expect("answered");
    assert_eq!(status, 408, "{body}");
    // Connections beyond the cap are closed at once; the server still serves afterwards.
    let _a = TcpStream::connect(at).await.expect("a");
    let _b = TcpStream::connect(at).await.expect("b");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = TcpStream::connect(at).await.expect("c");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let who = StdAddr::new(0, HashBytes([1; 32]));
    client
        .get_address_information(&who)
        .await
        .expect("still serving");
    server.shutdown().await;
}

#[tokio::test]
async fn billing_http_server_shutdown_closes_the_port() {
    let chain = new_chain();
    let (server, client) = start(&chain).await;
    let addr = server.local_addr();
    let who = StdAddr::new(0, HashBytes([1; 32]));
    client.get_address_information(&who).await.expect("up");
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Histories longer than a page are read whole, page by page, the same through the HTTP
/// API as from the chain in-process: strictly older each page, nothing skipped or repeated.
#[tokio::test]
async fn billing_http_onchain_history_pages_back_to_the_first_transaction() {
    let chain = new_chain();
    let (server, client) = start(&chain).await;
    let sender = StdAddr::new(0, HashBytes([6; 32]));
    let target = StdAddr::new(0, HashBytes([7; 32]));
    chain
        .lock()
        .expect("lock")
        .airdrop(&sender, 1_000 * TON)
        .expect("airdrop");
    let count = 2 * crate::chain::MAX_TRANSACTIONS + 37;
    for _ in 0..count {
        chain
            .lock()
            .expect("lock")
            .send_internal(InternalMessage {
                src: sender.clone(),
                dest: target.clone(),
                value: TON / 100,
                bounce: false,
                body: None,
                state_init: None,
            })
            .expect("transfer");
    }
    let local: &dyn Chain = &chain;
    let http: &dyn Chain = &client;
    let (from_local, whole) = crate::record::history(local, &target).await.expect("local");
    assert!(whole);
    let (from_http, whole) = crate::record::history(http, &target).await.expect("http");
    assert!(whole);
    let lts = |txs: &[TransactionInfo]| txs.iter().map(|tx| tx.lt).collect::<Vec<_>>();
    assert_eq!(from_local.len(), count);
    assert_eq!(from_http.len(), count, "{:?}", lts(&from_http));
    assert_eq!(lts(&from_local), lts(&from_http));
    assert!(
        from_local == from_http,
        "the same transactions through both"
    );
    assert!(
        from_local.windows(2).all(|w| w[0].lt > w[1].lt),
        "newest first, no repeats"
    );
    // A page after the oldest is empty.
    let oldest = from_local.last().expect("oldest");
    let none = http
        .transactions_before(&target, Some((oldest.lt, oldest.hash)), 10)
        .await
        .expect("page");
    assert!(none.is_empty());
    server.shutdown().await;
}
