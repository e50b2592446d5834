//! Escrow billing end to end with real processes (issue 18): a guest that bills through
//! escrows (`--payout-address`), the host agent in front of it settling on its embedded
//! chain (real contract code and wallet in the in-process executor, served over the TON HTTP
//! API on loopback), and a client that deploys its escrow through that API from its own
//! wallet, then chats through `cocoon-client proxy --spend-cap` (which verifies the guest,
//! authorizes its receipt key and proves the account in every session).
//!
//! What must hold: every answer carries a receipt; the host agent settles the guest's
//! vouchers by itself; the escrow's balance drops by the cumulative tokens × price the
//! receipts state (plus its storage rent, a few nanoTON: it pays none of the gas) (computed here again from the token counts with the contract's
//! formula); the escrow records that charge under the guest's key; and the operator (wallet
//! plus payout address) ends up with that charge minus the gas it paid. A request beyond
//! what the escrow covers is refused with a 402 before any token is generated.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_attestation::account::AccountKey;
use cocoon_attestation::receipt::{verify_receipt, TokenCounts};
use cocoon_billing::chain::Chain;
use cocoon_billing::layout::{charge_for, Prices};
use cocoon_billing::ton_http::{TonHttpClient, TonHttpConfig};
use cocoon_billing::wallet::{Network, Wallet};
use cocoon_client::amount::Amount;
use cocoon_client::escrow::{escrow_code, EscrowTerms};
use cocoon_client::wallet::OwnerWallet;
use cocoon_host_agent::settle::escrow::{escrow_state, guest_state};
use cocoon_tests::{
    binary, host_token_file, scratch_dir, start_guest, start_proxy, GuestProcess, Service,
    TEST_HOST_TOKEN,
};
use common::http_json;

/// The operator's wallet (tonlib-core's public test words: a local chain only).
const OPERATOR_WORDS: &str = "section garden tomato dinner season dice renew length useful \
     spin trade intact use universe what post spike keen mandate behind concert egg doll rug";
/// Where the guest's vouchers pay: an address with no account yet (payouts are sent
/// non-bounceable, so it simply receives them).
const PAYOUT: &str = "0:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// Prices high enough that a few short requests move visible amounts: 0.001 TON per prompt
/// token, 0.003 per completion token.
const PRICE_PROMPT: u64 = 1_000_000_000_000;
const PRICE_CACHED: u64 = 100_000_000_000;
const PRICE_COMPLETION: u64 = 3_000_000_000_000;
/// What the client deposits and stakes (TON).
const DEPOSIT: &str = "3";
const STAKE: &str = "0.5";
/// The gas the agent attaches to each charge (its default).
const CHARGE_VALUE: u128 = 50_000_000;
/// How long anything may take before the test calls it hung.
const PATIENCE: Duration = Duration::from_secs(180);

fn ton(text: &str) -> Amount {
    text.parse().unwrap()
}

fn prices() -> Prices {
    Prices {
        prompt_per_million: PRICE_PROMPT,
        cached_per_million: PRICE_CACHED,
        completion_per_million: PRICE_COMPLETION,
    }
}

fn write_config(
    dir: &Path,
    guest_addr: &str,
    internal: &str,
    client_wallet: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[relay]
listen = "127.0.0.1:0"
idle_timeout_secs = 60

[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"

[ledger]
path = "ledger.sqlite3"

[collector]
interval_ms = 100

[health]
interval_secs = 1

[[guest]]
name = "g0"
address = "{guest_addr}"
internal_address = "{internal}"
host_token_file = "host-token"

[guest.attestation]
allow_simulated = true
accept_any_image = true

[guest.collateral]
offline = true

[billing]
chain = "local"
network = "local"
wallet_mnemonic_file = "operator.words"
# Settle whatever is owed, as soon as it is a second old.
settle_min_nanoton = 1
settle_max_age_secs = 1
poll_secs = 1
charge_value_nanoton = {CHARGE_VALUE}

[billing.local_chain]
state_file = "chain.state"
api_listen = "127.0.0.1:0"

[[billing.local_chain.genesis]]
mnemonic_file = "operator.words"
nanoton = 10000000000

[[billing.local_chain.genesis]]
address = "{client_wallet}"
nanoton = 10000000000
"#
    );
    let path = dir.join("host-agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A guest that bills through escrows: PAYOUT gets its vouchers, at the test's prices.
fn start_billing_guest(token_file: &Path) -> GuestProcess {
    start_guest(
        "simulated",
        false,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--host-token-file",
            token_file.to_str().unwrap(),
            "--payout-address",
            PAYOUT,
            "--price-prompt",
            &PRICE_PROMPT.to_string(),
            "--price-cached-prompt",
            &PRICE_CACHED.to_string(),
            "--price-completion",
            &PRICE_COMPLETION.to_string(),
        ],
    )
    .expect("the guest starts")
}

/// Starts the agent; returns it, its relay address, the local chain's API base URL and
/// the admin API's address.
fn start_agent(config: &Path) -> (Service, String, String, String) {
    let mut cmd = std::process::Command::new(binary("cocoon-host-agent").unwrap());
    cmd.args(["run", "--config"]).arg(config);
    let (agent, rest, before) = Service::start_with_lines(
        "cocoon-host-agent",
        cmd,
        "cocoon-host-agent: relaying ",
        Duration::from_secs(60),
    )
    .expect("the agent starts");
    let relay = rest.split_whitespace().next().unwrap().to_string();
    let api = before
        .iter()
        .find_map(|l| l.strip_prefix("cocoon-host-agent: TON HTTP API of the local chain on "))
        .expect("the agent prints its local chain's API")
        .trim()
        .to_string();
    let admin = before
        .iter()
        .find_map(|l| l.strip_prefix("cocoon-host-agent: admin API on http://"))
        .expect("the agent prints its admin API")
        .trim()
        .to_string();
    (agent, relay, api, admin)
}

/// One chat request through the proxy (`connection: close`): status, head, body.
fn chat(proxy: &str, model: &str, max_tokens: u32) -> (u16, String, String) {
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hi"}}],"max_tokens":{max_tokens},"temperature":0}}"#
    );
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {proxy}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_end_to_end_requests_settle_exactly_tokens_times_price_and_prove_onchain() {
    let dir = scratch_dir("billing-e2e").unwrap();
    std::fs::write(dir.join("operator.words"), OPERATOR_WORDS).unwrap();
    std::fs::write(
        dir.join("admin-token"),
        "9a1c3e0b7d5f42a8c6e1b3d5f7092a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f",
    )
    .unwrap();
    let token_file = host_token_file(&dir, TEST_HOST_TOKEN).unwrap();
    let (client_key, client_pem) = AccountKey::generate().unwrap();
    let key_file = dir.join("client.pem");
    std::fs::write(&key_file, &client_pem).unwrap();
    let client_wallet = OwnerWallet::new(&client_key, "local").unwrap();
    let operator = Wallet::from_mnemonic(OPERATOR_WORDS, Network::Local)
        .unwrap()
        .address();
    let payout = cocoon_billing::address::parse_address(PAYOUT).unwrap();

    let guest = start_billing_guest(&token_file);
    let internal = guest.internal_addr.clone().expect("internal listener");
    let config = write_config(
        &dir,
        &guest.addr,
        &internal,
        &client_wallet.address().to_string(),
    );
    let (_agent, relay, api, admin) = start_agent(&config);
    let chain: Arc<dyn Chain> =
        Arc::new(TonHttpClient::new(TonHttpConfig::new(api.clone())).expect("TON HTTP API client"));

    // The client deploys its escrow from its own wallet, with a stake.
    let terms = EscrowTerms {
        code: escrow_code(),
        owner: client_key.id().0,
        close_delay: 86_400,
        prices: prices(),
    };
    let escrow = terms.address().unwrap();
    let messages =
        cocoon_client::owner::deploy(&client_key, &terms, ton(DEPOSIT), Some(ton(STAKE)), now())
            .unwrap();
    let seqno = chain.wallet_seqno(&client_wallet.address()).await.unwrap();
    let boc = client_wallet
        .transfer(seqno, now() as u32 + 120, &messages)
        .unwrap();
    chain.send_boc(&boc).await.expect("the deploy is accepted");
    let limit = Duration::from_secs(10);
    let deployed = wait_for("the escrow's deploy", || {
        let chain = chain.clone();
        let escrow = escrow.clone();
        async move {
            escrow_state(chain.as_ref(), limit, &escrow)
                .await
                .unwrap()
                .filter(|s| s.stake == ton(STAKE).nano())
        }
    })
    .await;
    assert_eq!(deployed.owner, client_key.id().0);
    assert_eq!(deployed.total_charged, 0);
    let escrow_before = deployed.balance;
    let payout_before = chain.account_state(&payout).await.unwrap().balance;
    let operator_before = chain.account_state(&operator).await.unwrap().balance;

    // Requests through the proxy: each answered, each with a receipt.
    let (_proxy, proxy) = start_proxy(
        &format!("https://{relay}"),
        &[
            "--allow-simulated",
            "--accept-any-image",
            "--account-key",
            key_file.to_str().unwrap(),
            "--spend-cap",
            "2",
        ],
    )
    .expect("the proxy starts");
    let receipt_key = {
        let (status, page) = http_json(
            &internal,
            "GET",
            "/internal/v1/receipts?after=0&limit=1",
            Some(TEST_HOST_TOKEN),
            "",
        )
        .await;
        assert_eq!(status, 200, "{page}");
        hex::decode(page["receipt_key"].as_str().unwrap()).unwrap()
    };
    let mut last = None;
    let mut sum_of_charges = 0u64;
    let mut receipts = Vec::new();
    for max_tokens in [4, 6, 8] {
        let proxy = proxy.clone();
        let model = guest.model_id.clone();
        let (status, head, body) =
            tokio::task::spawn_blocking(move || chat(&proxy, &model, max_tokens))
                .await
                .unwrap();
        assert_eq!(status, 200, "{head}\n{body}");
        let jws = header(&head, "x-cocoon-receipt").expect("a receipt");
        let receipt = verify_receipt(jws, &receipt_key).expect("a receipt by the guest's key");
        assert_eq!(receipt.account, client_key.id().to_string());
        sum_of_charges += receipt.charge;
        receipts.push((jws.to_string(), receipt.clone()));
        last = Some(receipt);
    }
    let last = last.unwrap();
    let TokenCounts {
        prompt_tokens,
        cached_tokens,
        completion_tokens,
    } = last.cumulative.tokens;
    // The contract's formula over the cumulative counts, computed here independently of
    // the guest's meter.
    let expected = charge_for(&prices(), prompt_tokens, cached_tokens, completion_tokens);
    assert!(expected > 0);
    assert_eq!(u128::from(last.cumulative.charge), expected);
    assert_eq!(u128::from(sum_of_charges), expected);

    // The agent settles by itself; the escrow records the guest's last voucher.
    let guest_key: [u8; 32] = receipt_key.as_slice().try_into().unwrap();
    let on_chain = wait_for("the settlement", || {
        let chain = chain.clone();
        let escrow = escrow.clone();
        async move {
            let g = guest_state(chain.as_ref(), limit, &escrow, &guest_key)
                .await
                .unwrap();
            (g.charged == expected).then_some(g)
        }
    })
    .await;
    assert_eq!(on_chain.seq, last.sequence);
    onchain_record(OnchainCheck {
        dir: &dir,
        admin: &admin,
        api: &api,
        receipts: &receipts,
        receipt_key: &guest_key,
        model_sha256: &model_sha256(),
        expected_charge: expected,
    })
    .await;
    let after = escrow_state(chain.as_ref(), limit, &escrow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.total_charged, expected);
    // The escrow pays the charge and nothing of the gas: besides the charge it loses only
    // the storage rent every account pays for the seconds since its last transaction (a
    // few nanoTON for this contract over this test).
    let rent = (escrow_before - after.balance)
        .checked_sub(expected)
        .expect("the escrow pays at least the charge");
    assert!(
        rent < 1_000,
        "escrow lost {rent} nanoTON besides the charge"
    );
    let payout_gain = chain.account_state(&payout).await.unwrap().balance - payout_before;
    let operator_spent = operator_before - chain.account_state(&operator).await.unwrap().balance;
    // The payout receives the charge plus the gas the charge did not use; the operator's
    // wallet paid that gas: together they gain the charge minus the gas burnt.
    assert!(payout_gain > expected, "{payout_gain} vs {expected}");
    let gas = (expected + operator_spent)
        .checked_sub(payout_gain)
        .expect("the operator never gains more than the charge");
    assert!(gas > 0 && gas < CHARGE_VALUE, "gas {gas}");
    eprintln!(
        "billing e2e: charge {expected} nanoTON for {prompt_tokens}+{completion_tokens} \
         tokens in 3 requests; operator net {} nanoTON after {gas} nanoTON gas; escrow rent \
         {rent} nanoTON",
        expected - gas
    );

    // `cocoon-client balance --upstream`: the chain's settled charge, and from the
    // verified guest what it signed: all of it settled now.
    let shown = {
        let mut cmd = std::process::Command::new(binary("cocoon-client").unwrap());
        cmd.args([
            "balance",
            "--json",
            "--allow-simulated",
            "--accept-any-image",
        ])
        .args(["--upstream", &format!("https://{relay}"), "--ton-api", &api])
        .arg("--account-key")
        .arg(&key_file);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let shown_guest = &shown["guests"][0];
    assert_eq!(shown_guest["guest_key"], hex::encode(guest_key), "{shown}");
    assert_eq!(
        shown_guest["charged"],
        Amount(expected).to_string(),
        "{shown}"
    );
    assert_eq!(shown_guest["unsettled"], Amount(0).to_string(), "{shown}");
    assert_eq!(
        shown_guest["guest"]["charged"],
        Amount(expected).to_string(),
        "{shown}"
    );
    assert_eq!(shown_guest["guest"]["seq"], last.sequence, "{shown}");
    assert_eq!(shown["escrow"]["stake"], ton(STAKE).to_string(), "{shown}");

    // A request whose worst case (400 completion tokens at 0.003 TON) is above what the
    // stake covers is refused before any token is generated.
    let proxy2 = proxy.clone();
    let model = guest.model_id.clone();
    let (status, head, body) = tokio::task::spawn_blocking(move || chat(&proxy2, &model, 400))
        .await
        .unwrap();
    assert_eq!(status, 402, "{head}\n{body}");
    assert!(body.contains("\"error\""), "{body}");
}

/// `GET /v1/billing/account` on a raw attested connection with these headers.
async fn account_raw(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    headers: &[(&str, String)],
) -> (u16, serde_json::Value) {
    use tokio::io::AsyncWriteExt as _;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    stream
        .write_all(
            format!("GET /v1/billing/account HTTP/1.1\r\nhost: guest\r\n{extra}\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let (head, body) = common::read_response(stream).await;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// The guest's record of an escrow account (`GET /v1/billing/account`): before any request
/// it names the escrow it derived and nothing signed; after requests, what it signed
/// (= the receipts' charges), the authorization it holds, and the part not yet settled,
/// which follows what the host reports as settled. Only the account's proven owner reads
/// it: no proof, or a proof from another session, gets 401; another key sees its own,
/// empty account. A guest without escrow billing says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_the_owner_reads_its_unsettled_usage_from_the_guest_and_nobody_else() {
    use cocoon_attestation::account::{ACCOUNT_HEADER, ACCOUNT_PROOF_HEADER};
    use cocoon_client::guest_account::fetch_guest_account;
    use cocoon_client::{connect_attested, open_attested_session, Endpoint};
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = scratch_dir("billing-account").unwrap();
    let token_file = host_token_file(&dir, TEST_HOST_TOKEN).unwrap();
    let (client_key, client_pem) = AccountKey::generate().unwrap();
    let key_file = dir.join("client.pem");
    std::fs::write(&key_file, &client_pem).unwrap();
    let guest = start_billing_guest(&token_file);
    let internal = guest.internal_addr.clone().expect("internal listener");
    let endpoint = Endpoint::parse(&format!("https://{}", guest.addr)).unwrap();
    let attestor = cocoon_tests::dev_attestor();
    let escrow = EscrowTerms {
        code: escrow_code(),
        owner: client_key.id().0,
        close_delay: 86_400,
        prices: prices(),
    }
    .address()
    .unwrap();
    let bound = Duration::from_secs(30);

    // Before any request: the escrow the guest derives, nothing signed, no authorization.
    let mut session = open_attested_session(&endpoint, &attestor, bound)
        .await
        .unwrap();
    let fresh = fetch_guest_account(&mut session, &endpoint, &client_key)
        .await
        .unwrap();
    assert_eq!(fresh.escrow, escrow.to_string());
    assert_eq!((fresh.seq, fresh.charged, fresh.requests), (0, 0, 0));
    assert_eq!(fresh.authorization, None);

    // The test plays the host: it reports the state the guest asks for, with a settled
    // charge it controls.
    let settled = Arc::new(AtomicU64::new(0));
    let reporter = {
        let (internal, settled) = (internal.clone(), settled.clone());
        tokio::spawn(async move {
            loop {
                let (status, wanted) = http_json(
                    &internal,
                    "GET",
                    "/internal/v1/escrows",
                    Some(TEST_HOST_TOKEN),
                    "",
                )
                .await;
                assert_eq!(status, 200, "{wanted}");
                let reports: Vec<serde_json::Value> = wanted["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "escrow": w["escrow"], "balance": 3_000_000_000u64,
                            "stake": 500_000_000u64, "unlock_at": 0, "seq": 0,
                            "charged": settled.load(Ordering::SeqCst),
                        })
                    })
                    .collect();
                let body = serde_json::json!({ "escrows": reports }).to_string();
                let (status, answer) = http_json(
                    &internal,
                    "POST",
                    "/internal/v1/escrows",
                    Some(TEST_HOST_TOKEN),
                    &body,
                )
                .await;
                assert_eq!(status, 200, "{answer}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Two requests through the proxy, which authorizes the guest's key with its cap.
    let (_proxy, proxy) = start_proxy(
        &format!("https://{}", guest.addr),
        &[
            "--allow-simulated",
            "--accept-any-image",
            "--account-key",
            key_file.to_str().unwrap(),
            "--spend-cap",
            "2",
        ],
    )
    .expect("the proxy starts");
    let receipt_key =
        hex::decode(session.verified.certificate.receipt_key.clone().unwrap()).unwrap();
    let mut receipts = Vec::new();
    for max_tokens in [3, 5] {
        let (proxy, model) = (proxy.clone(), guest.model_id.clone());
        let (status, head, body) =
            tokio::task::spawn_blocking(move || chat(&proxy, &model, max_tokens))
                .await
                .unwrap();
        assert_eq!(status, 200, "{head}\n{body}");
        let jws = header(&head, "x-cocoon-receipt").expect("a receipt");
        receipts.push(verify_receipt(jws, &receipt_key).unwrap());
    }
    let last = receipts.last().unwrap().clone();
    let signed: u64 = receipts.iter().map(|r| r.charge).sum();
    assert!(signed > 0);

    let mut session = open_attested_session(&endpoint, &attestor, bound)
        .await
        .unwrap();
    let mine = fetch_guest_account(&mut session, &endpoint, &client_key)
        .await
        .unwrap();
    assert_eq!(mine.escrow, escrow.to_string());
    assert_eq!((mine.seq, mine.requests), (last.sequence, 2));
    assert_eq!(mine.charged, last.cumulative.charge);
    assert_eq!(mine.charged, signed);
    assert_eq!(
        mine.tokens.prompt_tokens,
        last.cumulative.tokens.prompt_tokens
    );
    assert_eq!(
        mine.tokens.completion_tokens,
        last.cumulative.tokens.completion_tokens
    );
    assert_eq!(mine.authorization.map(|a| a.cap), Some(2_000_000_000));
    assert_eq!(mine.in_flight, 0);
    assert_eq!(mine.unsettled_as_reported, signed);
    // Against the chain's figure (as `balance` computes it).
    assert_eq!(mine.unsettled(0), u128::from(signed));

    // The host reports the first voucher settled: the guest's unsettled part follows.
    let first = receipts[0].cumulative.charge;
    settled.store(first, Ordering::SeqCst);
    let (endpoint_ref, attestor_ref, key_ref) = (&endpoint, &attestor, &client_key);
    let followed = wait_for("the guest to take the settled charge", || async move {
        {
            let mut session = open_attested_session(endpoint_ref, attestor_ref, bound)
                .await
                .unwrap();
            let account = fetch_guest_account(&mut session, endpoint_ref, key_ref)
                .await
                .unwrap();
            (account.unsettled_as_reported == signed - first).then_some(account)
        }
    })
    .await;
    assert_eq!(followed.charged, signed);
    assert_eq!(
        followed.unsettled(u128::from(first)),
        u128::from(signed - first)
    );
    reporter.abort();

    // Nobody else reads it.
    let (mut stream, _) = connect_attested(&endpoint, &attestor, bound).await.unwrap();
    let (status, answer) = account_raw(&mut stream, &[]).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "account_not_proven", "{answer}");
    let (other_session, _) = connect_attested(&endpoint, &attestor, bound).await.unwrap();
    let replayed = common::proven(&client_key, &other_session);
    let (mut stream, _) = connect_attested(&endpoint, &attestor, bound).await.unwrap();
    let (status, answer) = account_raw(
        &mut stream,
        &[
            (ACCOUNT_HEADER, replayed[0].1.clone()),
            (ACCOUNT_PROOF_HEADER, replayed[1].1.clone()),
        ],
    )
    .await;
    assert_eq!(status, 401, "a proof from another session: {answer}");
    assert_eq!(answer["error"]["code"], "account_not_proven", "{answer}");
    let (stranger, _) = AccountKey::generate().unwrap();
    let theirs = common::proven(&stranger, &stream);
    let (status, answer) = account_raw(
        &mut stream,
        &[
            (ACCOUNT_HEADER, theirs[0].1.clone()),
            (ACCOUNT_PROOF_HEADER, theirs[1].1.clone()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["account"], stranger.id().to_string());
    assert_ne!(answer["escrow"], escrow.to_string());
    assert_eq!(
        (answer["charged"].as_u64(), answer["seq"].as_u64()),
        (Some(0), Some(0))
    );
    drop(guest);

    // A guest that bills through no escrow says so.
    let plain = start_guest("simulated", false, "127.0.0.1:0", "127.0.0.1:0", &[])
        .expect("the guest starts");
    let plain_endpoint = Endpoint::parse(&format!("https://{}", plain.addr)).unwrap();
    let mut session = open_attested_session(&plain_endpoint, &attestor, bound)
        .await
        .unwrap();
    let refused = fetch_guest_account(&mut session, &plain_endpoint, &client_key)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("does not bill through escrows"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// SHA-256 (hex) of the bundled model file: the guest's `model.sha256`.
fn model_sha256() -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(cocoon_tests::model_path().unwrap()).unwrap();
    hex::encode(sha2::Sha256::digest(bytes))
}

/// One change to a proof document.
type Alteration = fn(&mut serde_json::Value);

/// What [`onchain_record`] checks against.
struct OnchainCheck<'a> {
    dir: &'a Path,
    admin: &'a str,
    api: &'a str,
    /// Every receipt of the account (JWS, parsed), all settled.
    receipts: &'a [(String, cocoon_attestation::receipt::UsageReceipt)],
    receipt_key: &'a [u8; 32],
    model_sha256: &'a str,
    /// The escrow's total for the key.
    expected_charge: u128,
}

async fn run_cli(program: &str, args: Vec<String>) -> std::process::Output {
    let mut cmd = std::process::Command::new(binary(program).unwrap());
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Issue 20 on the settled receipts: each one's proof, made by the host agent from its
/// ledger, checks against the root the escrow recorded (`cocoon-verify receipt
/// --onchain`); an altered proof or receipt field is refused; and the chain alone
/// (`cocoon-verify audit`) gives the same totals per model and guest key as the ledger.
async fn onchain_record(check: OnchainCheck<'_>) {
    let admin_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--admin".to_string(),
            check.admin.to_string(),
            "--admin-token-file".to_string(),
            check.dir.join("admin-token").display().to_string(),
        ]);
        args
    };
    let key_hex = hex::encode(check.receipt_key);
    for (i, (jws, receipt)) in check.receipts.iter().enumerate() {
        let proof_file = check.dir.join(format!("proof-{i}.json"));
        let receipt_file = check.dir.join(format!("receipt-{i}.jws"));
        let out = run_cli(
            "cocoon-host-agent",
            admin_args(&[
                "receipts",
                "proof",
                &receipt.request_id,
                "--output",
                proof_file.to_str().unwrap(),
                "--receipt-output",
                receipt_file.to_str().unwrap(),
            ]),
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&receipt_file).unwrap().trim(), jws);
        let verify = |receipt_arg: String, proof: &Path| {
            vec![
                "receipt".to_string(),
                receipt_arg,
                "--receipt-key".into(),
                key_hex.clone(),
                "--onchain".into(),
                "--proof".into(),
                proof.display().to_string(),
                "--ton-api".into(),
                check.api.to_string(),
                "--json".into(),
            ]
        };
        let out = run_cli("cocoon-verify", verify(jws.clone(), &proof_file)).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(shown["tree_size"], check.receipts.len(), "{shown}");
        assert_eq!(shown["model_sha256"], check.model_sha256, "{shown}");
        assert_eq!(
            shown["settled_charge_nanoton"],
            check.expected_charge.to_string(),
            "{shown}"
        );
        assert_eq!(shown["receipt"]["sequence"], receipt.sequence, "{shown}");
        // Any field of the proof altered: refused (exit 1), naming why.
        let proof: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&proof_file).unwrap()).unwrap();
        let alterations: [(&str, Alteration); 4] = [
            ("completion tokens", |p| {
                let t = &mut p["receipt"]["leaf"]["tokens"]["completion_tokens"];
                *t = (t.as_u64().unwrap() + 1).into();
            }),
            ("settled total", |p| {
                let t = &mut p["settled"]["leaf"]["cumulative_charge"];
                *t = (t.as_u64().unwrap() + 1).into();
            }),
            ("model", |p| {
                p["receipt"]["leaf"]["model_sha256"] = "00".repeat(32).into()
            }),
            ("root", |p| p["root"] = "11".repeat(32).into()),
        ];
        for (what, alter) in alterations {
            let mut bent = proof.clone();
            alter(&mut bent);
            let bent_file = check.dir.join(format!("bent-{i}.json"));
            std::fs::write(&bent_file, bent.to_string()).unwrap();
            let out = run_cli("cocoon-verify", verify(jws.clone(), &bent_file)).await;
            assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("REFUSED"),
                "{what}: {out:?}"
            );
        }
        // Another receipt with this receipt's proof: refused.
        let other = &check.receipts[(i + 1) % check.receipts.len()].0;
        let out = run_cli("cocoon-verify", verify(other.clone(), &proof_file)).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }

    // The chain alone: what the escrows that paid PAYOUT settled, per model and key.
    let out = run_cli(
        "cocoon-verify",
        vec![
            "audit".into(),
            "--ton-api".into(),
            check.api.to_string(),
            "--payout".into(),
            PAYOUT.into(),
            "--json".into(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit["complete"], true, "{audit}");
    let rows = audit["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{audit}");
    let row = &rows[0];
    assert_eq!(row["model_sha256"], check.model_sha256, "{audit}");
    assert_eq!(row["guest_key"], key_hex, "{audit}");
    // The ledger's totals for the account (the host agent's usage view).
    let out = run_cli("cocoon-host-agent", admin_args(&["usage", "--json"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let usage: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let account = check.receipts[0].1.account.as_str();
    let ledger = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .unwrap_or_else(|| panic!("{usage}"));
    for field in ["prompt_tokens", "cached_tokens", "completion_tokens"] {
        assert_eq!(
            row[field], ledger["tokens"][field],
            "{field}: {audit} vs {usage}"
        );
    }
    assert_eq!(
        row["charged_nanoton"],
        ledger["charge"].as_u64().unwrap().to_string(),
        "{audit} vs {usage}"
    );
    assert_eq!(row["charged_nanoton"], check.expected_charge.to_string());
    eprintln!(
        "onchain record: {} receipts proven, audit {row}",
        check.receipts.len()
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
