//! The escrow owner's commands against a real TON HTTP API server (`cocoon_billing`'s
//! loopback server) over an in-process `LocalChain`: the library behind each command, and
//! the built `cocoon-client` binary for `escrow deploy` and `balance --json`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_attestation::account::AccountKey;
use cocoon_billing::chain::{Chain, SharedLocalChain};
use cocoon_billing::layout::Prices;
use cocoon_billing::local_chain::LocalChain;
use cocoon_billing::ton_http::{
    spawn_server, ServerHandle, ServerLimits, TonHttpClient, TonHttpConfig,
};
use cocoon_client::amount::Amount;
use cocoon_client::escrow::{escrow_code, EscrowTerms};
use cocoon_client::onchain::{self, Effect, Owner};
use cocoon_client::owner::EscrowState;
use cocoon_client::owner::Operation;
use cocoon_client::wallet::OwnerWallet;
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

const TON: u128 = 1_000_000_000;

fn ton(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

struct Net {
    chain: SharedLocalChain,
    server: ServerHandle,
    api: TonHttpClient,
}

impl Net {
    async fn start() -> Self {
        let chain: SharedLocalChain =
            Arc::new(Mutex::new(LocalChain::with_default_config().unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = spawn_server(listener, chain.clone(), ServerLimits::default()).unwrap();
        let api = TonHttpClient::new(TonHttpConfig::new(server.base_url())).unwrap();
        Self { chain, server, api }
    }

    fn airdrop(&self, addr: &StdAddr, nano: u128) {
        self.chain.lock().unwrap().airdrop(addr, nano).unwrap();
    }

    fn now(&self) -> u64 {
        u64::from(self.chain.lock().unwrap().now())
    }

    fn advance(&self, secs: u32) {
        self.chain.lock().unwrap().advance(secs).unwrap();
    }

    async fn balance_of(&self, addr: &StdAddr) -> u128 {
        self.api.account_state(addr).await.unwrap().balance
    }
}

const PRICES: Prices = Prices {
    prompt_per_million: 1_000,
    cached_per_million: 100,
    completion_per_million: 3_000,
};

fn terms(key: &AccountKey, close_delay: u32) -> EscrowTerms {
    EscrowTerms {
        code: escrow_code(),
        owner: key.id().0,
        close_delay,
        prices: PRICES,
    }
}

fn owner<'a>(api: &'a TonHttpClient, key: &'a AccountKey, wallet: &'a OwnerWallet) -> Owner<'a> {
    Owner {
        chain: api,
        key,
        wallet,
        wait: Duration::from_secs(5),
        poll: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_owner_commands_run_over_the_ton_http_api() {
    let net = Net::start().await;
    let key = AccountKey::from_seed(&[5; 32]).unwrap();
    let wallet = OwnerWallet::new(&key, "local").unwrap();
    net.airdrop(&wallet.address(), 100 * TON);
    let terms = terms(&key, 100);
    let escrow = terms.address().unwrap();
    let owner = owner(&net.api, &key, &wallet);
    let guest = [9u8; 32];

    // Before the deploy: balance says not deployed.
    let before = onchain::balance(&net.api, &key, &wallet, "local", &escrow, &[guest], None)
        .await
        .unwrap();
    assert!(before.state.is_none());
    assert_eq!(before.to_json()["deployed"], false);
    assert_eq!(before.to_json()["wallet"]["balance"], "100.000000000");
    assert!(
        before.to_text().contains("not deployed"),
        "{}",
        before.to_text()
    );

    // Deploy with a stake, in one transfer.
    let deployed = owner
        .deploy(&terms, ton("5"), Some(ton("1")), net.now())
        .await
        .unwrap();
    assert_eq!(deployed.escrow, escrow);
    assert_eq!(deployed.after.stake, TON);
    assert_eq!(deployed.after.owner_seqno, 1);
    assert_eq!(deployed.after.owner, key.id().0);
    let most = 5 * TON + cocoon_client::owner::REQUEST_VALUE;
    assert!(deployed.after.balance > 4 * TON && deployed.after.balance < most);
    let err = owner
        .deploy(&terms, ton("5"), None, net.now())
        .await
        .unwrap_err();
    assert!(err.contains("already deployed"), "{err}");

    // Top up.
    let topped = owner
        .operate(&escrow, &Operation::TopUp { amount: ton("2") }, net.now())
        .await
        .unwrap();
    let grown = topped.after.balance - topped.before.unwrap().balance;
    assert!(grown > TON * 19 / 10 && grown <= 2 * TON, "{grown}");

    // The stake only goes up.
    let err = owner
        .operate(
            &escrow,
            &Operation::SetStake { stake: ton("0.5") },
            net.now(),
        )
        .await
        .unwrap_err();
    assert!(err.contains("can only go up"), "{err}");
    let staked = owner
        .operate(&escrow, &Operation::SetStake { stake: ton("2") }, net.now())
        .await
        .unwrap();
    assert_eq!(staked.after.stake, 2 * TON);
    assert_eq!(staked.after.owner_seqno, 2);

    // Withdraw: above the free balance refused, saying how much is free; within it arrives.
    let free = staked.after.free();
    let err = owner
        .operate(
            &escrow,
            &Operation::Withdraw {
                amount: Amount(free + 1),
                to: wallet.address(),
            },
            net.now(),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("only what is above the stake can be withdrawn")
            && err.contains(&format!("at most {} TON", Amount(free))),
        "{err}"
    );
    let to = StdAddr::new(0, HashBytes([0x77; 32]));
    let withdrawn = owner
        .operate(
            &escrow,
            &Operation::Withdraw {
                amount: ton("1"),
                to: to.clone(),
            },
            net.now(),
        )
        .await
        .unwrap();
    assert_eq!(withdrawn.after.owner_seqno, 3);
    let arrived = net.balance_of(&to).await;
    assert!(arrived > TON * 99 / 100 && arrived <= TON, "{arrived}");

    // Balance: every field.
    let shown = onchain::balance(
        &net.api,
        &key,
        &wallet,
        "local",
        &escrow,
        &[guest],
        Some(ton("3")),
    )
    .await
    .unwrap();
    let state = shown.state.unwrap();
    let json = shown.to_json();
    assert_eq!(json["deployed"], true);
    assert_eq!(json["escrow_address"], escrow.to_string());
    assert_eq!(json["wallet"]["address"], wallet.address().to_string());
    assert_eq!(json["wallet"]["status"], "active");
    assert_eq!(
        json["wallet"]["balance"],
        Amount(net.balance_of(&wallet.address()).await).to_string()
    );
    let e = &json["escrow"];
    assert_eq!(e["owner"], key.id().to_string());
    assert_eq!(e["owned_by_this_key"], true);
    assert_eq!(e["balance"], Amount(state.balance).to_string());
    assert_eq!(e["stake"], "2.000000000");
    assert_eq!(e["storage_reserve"], "0.010000000");
    assert_eq!(
        e["free"],
        Amount(state.balance - 2 * TON - 10_000_000).to_string()
    );
    assert_eq!(e["total_charged"], "0.000000000");
    assert_eq!(e["owner_seqno"], 3);
    assert_eq!(e["closing"], false);
    assert_eq!(e["unlock_at"], 0);
    assert_eq!(e["close_delay"], 100);
    assert_eq!(e["prices"]["prompt_per_million"], 1_000);
    assert_eq!(e["prices"]["cached_prompt_per_million"], 100);
    assert_eq!(e["prices"]["completion_per_million"], 3_000);
    let g = &json["guests"][0];
    assert_eq!(g["guest_key"], hex::encode(guest));
    assert_eq!(g["seq"], 0);
    assert_eq!(g["charged"], "0.000000000");
    assert_eq!(g["cap"], "3.000000000");
    assert_eq!(g["cap_headroom"], "3.000000000");
    assert!(g["unsettled"].is_null());
    let text = shown.to_text();
    for part in [
        "deposit",
        "stake           2.000000000 TON",
        "settled",
        "owner_seqno     3",
        "closing         no",
        "close delay     100 s",
        "unsettled",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }

    // Someone else's key: refused before anything is signed.
    let other = AccountKey::from_seed(&[6; 32]).unwrap();
    let other_wallet = OwnerWallet::new(&other, "local").unwrap();
    net.airdrop(&other_wallet.address(), 10 * TON);
    let err = owner_of(&net, &other, &other_wallet)
        .operate(&escrow, &Operation::SetStake { stake: ton("3") }, net.now())
        .await
        .unwrap_err();
    assert!(err.contains("is owned by"), "{err}");

    // Close: what is above the stake goes to the refund address at once.
    let refund_to = StdAddr::new(0, HashBytes([0x78; 32]));
    let closed_at = net.now();
    let closed = owner
        .operate(
            &escrow,
            &Operation::Close {
                refund_to: refund_to.clone(),
            },
            closed_at,
        )
        .await
        .unwrap();
    let unlock_at = u64::from(closed.after.unlock_at);
    assert!(
        unlock_at >= closed_at + 100 && unlock_at <= closed_at + 102,
        "{unlock_at}"
    );
    assert!(net.balance_of(&refund_to).await > TON);
    let json = onchain::balance(&net.api, &key, &wallet, "local", &escrow, &[], None)
        .await
        .unwrap()
        .to_json();
    assert_eq!(json["escrow"]["closing"], true);
    assert_eq!(
        json["escrow"]["unlock_at_utc"],
        onchain::utc(closed.after.unlock_at)
    );

    // Closing: no top-ups; the refund waits for unlock_at, then takes everything.
    let err = owner
        .operate(&escrow, &Operation::TopUp { amount: ton("1") }, net.now())
        .await
        .unwrap_err();
    assert!(err.contains("no more top-ups"), "{err}");
    let err = owner
        .operate(&escrow, &Operation::Refund, net.now())
        .await
        .unwrap_err();
    assert!(err.contains(&format!("unlocks at {unlock_at}")), "{err}");
    let refunded_before = net.balance_of(&refund_to).await;
    net.advance(101);
    let refunded = owner
        .operate(&escrow, &Operation::Refund, net.now())
        .await
        .unwrap();
    assert_eq!(refunded.after.unlock_at, 0);
    assert_eq!(refunded.after.stake, 0);
    assert_eq!(refunded.after.balance, 0);
    assert!(net.balance_of(&refund_to).await > refunded_before + 19 * TON / 10);

    // Every message the escrow got from the wallet succeeded, within the gas it carried
    // (owner requests carry REQUEST_VALUE: see its docs).
    let transactions = net.chain.lock().unwrap().transactions(&escrow);
    assert_eq!(
        transactions.len(),
        7,
        "deploy, stake, top-up, stake, withdraw, close, refund"
    );
    for tx in &transactions {
        assert!(tx.success && !tx.aborted, "{tx:?}");
        eprintln!("escrow tx: gas {} fees {}", tx.gas_used, tx.total_fees);
        assert!(
            tx.total_fees < cocoon_client::owner::REQUEST_VALUE / 2,
            "{tx:?}"
        );
    }
    net.server.shutdown().await;
}

fn owner_of<'a>(net: &'a Net, key: &'a AccountKey, wallet: &'a OwnerWallet) -> Owner<'a> {
    owner(&net.api, key, wallet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_owner_wallet_too_poor_names_what_to_send_where() {
    let net = Net::start().await;
    let key = AccountKey::from_seed(&[7; 32]).unwrap();
    let wallet = OwnerWallet::new(&key, "local").unwrap();
    net.airdrop(&wallet.address(), TON);
    let terms = terms(&key, 60);
    let err = owner(&net.api, &key, &wallet)
        .deploy(&terms, ton("2"), None, net.now())
        .await
        .unwrap_err();
    assert!(
        err.contains("the wallet holds 1.000000000 TON")
            && err.contains("needs 2.050000000 TON")
            && err.contains("send at least 1.050000000 TON")
            && err.contains(&wallet.address().to_string()),
        "{err}"
    );
    // Operations on an escrow that is not deployed say so.
    let err = owner(&net.api, &key, &wallet)
        .operate(
            &terms.address().unwrap(),
            &Operation::TopUp { amount: ton("0.1") },
            net.now(),
        )
        .await
        .unwrap_err();
    assert!(err.contains("no escrow is deployed"), "{err}");
    net.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_owner_reports_a_refusal_by_the_escrow_not_success() {
    let net = Net::start().await;
    let key = AccountKey::from_seed(&[8; 32]).unwrap();
    let wallet = OwnerWallet::new(&key, "local").unwrap();
    net.airdrop(&wallet.address(), 10 * TON);
    let terms = terms(&key, 60);
    let escrow = terms.address().unwrap();
    let owner = owner(&net.api, &key, &wallet);
    owner
        .deploy(&terms, ton("2"), None, net.now())
        .await
        .unwrap();
    // A withdraw checked against a state that is not the chain's (as if a charge had
    // landed in between): the escrow refuses it (1012) and the value bounces back.
    let real = onchain::read_escrow(&net.api, &escrow)
        .await
        .unwrap()
        .unwrap();
    let stale = EscrowState {
        balance: real.balance + 100 * TON,
        ..real
    };
    let withdraw = Operation::Withdraw {
        amount: ton("50"),
        to: wallet.address(),
    };
    let message =
        cocoon_client::owner::operation(&key, &escrow, &stale, &withdraw, net.now()).unwrap();
    let err = owner
        .send_and_wait(
            &escrow,
            Some(real),
            &[message],
            Effect::OwnerSeqno(real.owner_seqno),
            net.now(),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("refused it") && err.contains("bounced back"),
        "{err}"
    );
    let after = onchain::read_escrow(&net.api, &escrow)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.owner_seqno, real.owner_seqno);
    net.server.shutdown().await;
}

/// A guest config as the guest serves it, with billing on the local network.
fn guest_config(close_delay: u32) -> String {
    serde_json::json!({
        "version": 1,
        "model": {"id": "m", "format": "gguf", "sha256": "00", "verity_root": null},
        "prices": {"currency": "nanoton", "prompt_per_million": 1000,
                   "cached_prompt_per_million": 100, "completion_per_million": 3000},
        "billing": {"ton_network": "local",
                    "payout_address": format!("0:{}", "11".repeat(32)),
                    "close_delay_secs": close_delay, "state_wait_secs": 24,
                    "escrow_code_hash": cocoon_billing::escrow_code_hash_hex()},
        "accounts": {"allow_anonymous": false, "max_accounts": 22}
    })
    .to_string()
}

async fn cli(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cocoon-client"))
        .args(args)
        .env_remove("COCOON_TON_API")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_cli_deploys_and_shows_the_balance() {
    let net = Net::start().await;
    let dir = std::env::temp_dir().join(format!("cocoon-client-billing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, pem) = AccountKey::generate().unwrap();
    let key_file = dir.join("account.pem");
    std::fs::write(&key_file, pem).unwrap();
    let config_file = dir.join("config.json");
    std::fs::write(&config_file, guest_config(120)).unwrap();
    // The output of `cocoon-verify endpoint --json` works too, and names the guest key.
    let verified_file = dir.join("verified.json");
    let guest = [0x42u8; 32];
    let verified = serde_json::json!({
        "verified": true,
        "receipt_key": hex::encode(guest),
        "config": serde_json::from_str::<serde_json::Value>(&guest_config(120)).unwrap(),
    });
    std::fs::write(&verified_file, verified.to_string()).unwrap();
    let wallet = OwnerWallet::new(&key, "local").unwrap();
    net.airdrop(&wallet.address(), 10 * TON);
    let api = net.server.base_url();
    let key_arg = key_file.to_str().unwrap();
    let config_arg = config_file.to_str().unwrap();

    let (ok, out, err) = cli(&[
        "escrow",
        "deploy",
        "--account-key",
        key_arg,
        "--ton-api",
        &api,
        "--terms-from",
        config_arg,
        "--amount",
        "3",
        "--stake",
        "1",
        "--wait",
        "10",
    ])
    .await;
    assert!(ok, "{out}\n{err}");
    let escrow = terms(&key, 120).address().unwrap();
    assert!(out.starts_with("deployed\n"), "{out}");
    assert!(out.contains(&escrow.to_string()), "{out}");

    // By address (no terms); the network must then be named (it is not in a config).
    let (ok, out, err) = cli(&[
        "balance",
        "--account-key",
        key_arg,
        "--ton-api",
        &api,
        "--ton-network",
        "local",
        "--escrow",
        &escrow.to_string(),
        "--json",
    ])
    .await;
    assert!(ok, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["escrow_address"], escrow.to_string());
    assert_eq!(json["network"], "local");
    assert_eq!(json["wallet"]["address"], wallet.address().to_string());
    assert_eq!(json["escrow"]["stake"], "1.000000000");
    assert_eq!(json["escrow"]["owner_seqno"], 1);
    assert_eq!(json["escrow"]["close_delay"], 120);
    assert_eq!(json["escrow"]["owned_by_this_key"], true);
    assert_eq!(json["guests"], serde_json::json!([]));

    // By terms from a cocoon-verify --json file: the same escrow, and its guest key shown.
    let (ok, out, err) = cli(&[
        "balance",
        "--account-key",
        key_arg,
        "--ton-api",
        &api,
        "--terms-from",
        verified_file.to_str().unwrap(),
        "--spend-cap",
        "2",
        "--json",
    ])
    .await;
    assert!(ok, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["escrow_address"], escrow.to_string());
    assert_eq!(json["guests"][0]["guest_key"], hex::encode(guest));
    assert_eq!(json["guests"][0]["cap_headroom"], "2.000000000");

    // Clear refusals: no API for the local network; an escrow that is not this guest's.
    let (ok, _, err) = cli(&[
        "balance",
        "--account-key",
        key_arg,
        "--ton-network",
        "local",
        "--escrow",
        &escrow.to_string(),
    ])
    .await;
    assert!(!ok && err.contains("give --ton-api URL"), "{err}");
    let (ok, _, err) = cli(&[
        "escrow",
        "top-up",
        "--account-key",
        key_arg,
        "--ton-api",
        &api,
        "--terms-from",
        config_arg,
        "--escrow",
        &format!("0:{}", "ab".repeat(32)),
        "--amount",
        "1",
    ])
    .await;
    assert!(
        !ok && err.contains("is not the escrow this key has"),
        "{err}"
    );
    let (ok, _, err) = cli(&[
        "escrow",
        "withdraw",
        "--account-key",
        key_arg,
        "--ton-api",
        &api,
        "--terms-from",
        config_arg,
        "--amount",
        "5",
    ])
    .await;
    assert!(!ok && err.contains("only what is above the stake"), "{err}");
    let (ok, out, err) = cli(&[
        "escrow",
        "top-up",
        "--account-key",
        key_arg,
        "--ton-api",
        &api,
        "--terms-from",
        config_arg,
        "--amount",
        "1",
        "--wait",
        "10",
    ])
    .await;
    assert!(ok && out.starts_with("topped up"), "{out}\n{err}");

    // Stake, close, and a refund before the close delay: refused, saying when.
    let by_address = |command: &'static [&'static str]| {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "--account-key",
                key_arg,
                "--ton-api",
                &api,
                "--ton-network",
                "local",
                "--escrow",
                &escrow.to_string(),
                "--wait",
                "10",
            ]
            .map(String::from),
        );
        args
    };
    for (command, expect) in [
        (&["escrow", "set-stake", "--stake", "1.5"][..], "stake set"),
        (
            &["escrow", "close"][..],
            "closing: what was above the stake went to",
        ),
    ] {
        let args = by_address(command);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = cli(&args).await;
        assert!(ok && out.starts_with(expect), "{command:?}: {out}\n{err}");
    }
    let args = by_address(&["escrow", "refund"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = cli(&args).await;
    assert!(
        !ok && err.contains("the refund must wait until then"),
        "{err}"
    );
    let args = by_address(&["balance"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(&args[..args.len() - 2]).await;
    assert!(ok, "{err}");
    for part in [
        "stake           1.500000000 TON",
        "closing         yes, refund from 20",
        "owner_seqno     3",
        "close delay     120 s",
        "prices          1000 / 100 / 3000 nanoton",
    ] {
        assert!(out.contains(part), "{part}: {out}");
    }

    std::fs::remove_dir_all(&dir).ok();
    net.server.shutdown().await;
}
