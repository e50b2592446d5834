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
    binary, host_token_file, scratch_dir, start_guest, start_proxy, Service, TEST_HOST_TOKEN,
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

/// Starts the agent; returns it, its relay address and the local chain's API base URL.
fn start_agent(config: &Path) -> (Service, String, String) {
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
    (agent, relay, api)
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
async fn billing_end_to_end_requests_settle_exactly_tokens_times_price() {
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

    let guest = start_guest(
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
    .expect("the guest starts");
    let internal = guest.internal_addr.clone().expect("internal listener");
    let config = write_config(
        &dir,
        &guest.addr,
        &internal,
        &client_wallet.address().to_string(),
    );
    let (_agent, relay, api) = start_agent(&config);
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
