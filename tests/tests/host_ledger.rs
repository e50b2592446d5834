//! The host agent's receipt ledger under SIGKILL (issue 17), with real processes: a guest
//! (simulated TEE, bundled model, a small receipt journal), the agent in front of it
//! (`cocoon-host-agent run --config`: relay, collector, SQLite ledger, admin API), and
//! clients that keep sending requests through the agent's relay, plus one that talks to
//! the guest directly (so work, and receipts, keep arriving while the agent is dead).
//!
//! The agent is killed with SIGKILL at random points, many times. After every kill the
//! test asks the guest which receipts it has had acknowledged and reads the ledger file
//! itself: every acknowledged receipt must be in it, exactly once (nothing is
//! acknowledged before it is durable). Once, the agent stays down until the guest's
//! bounded journal is full and the guest answers 503. Once, the guest itself reboots (a
//! new receipt key; sequences restart at 1). At the end, with the agent back, everything
//! the guest signed in both boots is in the ledger exactly once, nothing was refused,
//! every receipt a client received is there byte for byte, and each account's totals in
//! the ledger equal the guest's own cumulative totals.
//!
//! `COCOON_SIGKILL_SEED` replays a run (the seed is printed); `COCOON_SIGKILL_ITERATIONS`
//! changes the number of kills.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_attestation::account::AccountKey;
use cocoon_attestation::receipt::Cumulative;
use cocoon_client::{connect_attested, Endpoint};
use cocoon_host_agent::ledger::{Ledger, StoredReceipt};
use cocoon_tests::{
    binary, dev_attestor, host_token_file, scratch_dir, start_guest, GuestProcess, Service,
    TEST_HOST_TOKEN,
};
use common::{as_refs, header, http_json, post_with, proven, try_read_response};
use tokio::io::AsyncWriteExt;

/// Kills of the agent per run.
const ITERATIONS: u32 = 40;
/// Receipts the guest keeps for the collector before it answers 503.
const JOURNAL_CAPACITY: &str = "6";
/// The agent's admin token (from `openssl rand -hex 32`).
const ADMIN_TOKEN: &str = "9a1c3e0b7d5f42a8c6e1b3d5f7092a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f";
/// The cheapest request that still bills prompt and completion tokens (about a second of
/// CPU for the bundled model on a small machine).
const SHORT_CHAT: &str = r#"{"model":"smollm2-135m-instruct.q4_1","messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"temperature":0}"#;
/// How long anything may take before the test calls it hung.
const PATIENCE: Duration = Duration::from_secs(180);

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// What the clients saw.
#[derive(Default)]
struct Observed {
    /// Every receipt a client received (JWS).
    receipts: Vec<String>,
    /// 503s: the guest's journal was full.
    unavailable: u64,
    /// Connections refused or cut (the agent was dead or killed mid-request).
    cut: u64,
    /// Anything else: each is a failure.
    unexpected: Vec<String>,
}

/// Sends requests to `target` until `stop`, reconnecting whenever the connection fails.
async fn client(
    target: String,
    account: Option<AccountKey>,
    stop: Arc<AtomicBool>,
    observed: Arc<Mutex<Observed>>,
) {
    let endpoint = Endpoint::parse(&format!("https://{target}")).unwrap();
    let attestor = dev_attestor();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) =
            connect_attested(&endpoint, &attestor, Duration::from_secs(20)).await
        else {
            observed.lock().unwrap().cut += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // A few requests per connection (keep-alive), then a fresh one.
        for _ in 0..4 {
            let headers = account
                .as_ref()
                .map(|key| proven(key, &stream).to_vec())
                .unwrap_or_default();
            let request = post_with("/v1/chat/completions", &as_refs(&headers), SHORT_CHAT);
            if stream.write_all(request.as_bytes()).await.is_err() {
                observed.lock().unwrap().cut += 1;
                break;
            }
            let (head, body) = match try_read_response(&mut stream).await {
                Ok(response) => response,
                Err(_) => {
                    observed.lock().unwrap().cut += 1;
                    break;
                }
            };
            let status = head.split_whitespace().nth(1).unwrap_or_default();
            let refused = {
                let mut seen = observed.lock().unwrap();
                match status {
                    "200" => match header(&head, "x-cocoon-receipt") {
                        Some(receipt) => seen.receipts.push(receipt.to_string()),
                        None => seen
                            .unexpected
                            .push(format!("200 without a receipt: {head}")),
                    },
                    "503" if body.contains("\"error\"") => seen.unavailable += 1,
                    _ => seen.unexpected.push(format!("{head}\n{body}")),
                }
                status == "503"
            };
            if refused {
                tokio::time::sleep(Duration::from_millis(50)).await;
                break;
            }
        }
    }
}

fn write_config(dir: &Path, relay: &str, admin: &str, guest: &GuestProcess) -> PathBuf {
    let internal = guest.internal_addr.as_deref().unwrap();
    let text = format!(
        r#"
[relay]
listen = "{relay}"
idle_timeout_secs = 60

[admin]
listen = "{admin}"
token_file = "admin-token"

[ledger]
path = "ledger.sqlite3"

# Small pages, often: many transactions, many acknowledgements, many windows to die in.
[collector]
interval_ms = 20
page_size = 3

[health]
interval_secs = 1

[[guest]]
name = "g0"
address = "{address}"
internal_address = "{internal}"
host_token_file = "host-token"

[guest.attestation]
allow_simulated = true
accept_any_image = true

[guest.collateral]
offline = true
"#,
        address = guest.addr,
    );
    let path = dir.join("host-agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the agent; returns it, its relay address and its admin address.
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
    let admin = before
        .iter()
        .find_map(|l| l.strip_prefix("cocoon-host-agent: admin API on http://"))
        .expect("the agent prints its admin address")
        .trim()
        .to_string();
    (agent, relay, admin)
}

/// The guest's journal as the guest states it: its key, the lowest index still waiting
/// (everything below was acknowledged), and the newest index signed.
async fn journal(internal: &str) -> (String, Option<u64>, u64) {
    let (status, page) = http_json(
        internal,
        "GET",
        "/internal/v1/receipts?after=0&limit=1",
        Some(TEST_HOST_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    (
        page["receipt_key"].as_str().unwrap().to_string(),
        page["data"][0]["index"].as_u64(),
        page["last_index"].as_u64().unwrap(),
    )
}

/// The guest's own per-account totals under its current key.
async fn guest_accounts(internal: &str) -> (String, BTreeMap<String, (u64, Cumulative)>) {
    let (status, list) = http_json(
        internal,
        "GET",
        "/internal/v1/accounts",
        Some(TEST_HOST_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let accounts = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap().to_string(),
                (
                    a["sequence"].as_u64().unwrap(),
                    serde_json::from_value(a["cumulative"].clone()).unwrap(),
                ),
            )
        })
        .collect();
    (list["receipt_key"].as_str().unwrap().to_string(), accounts)
}

/// Everything stored in the ledger file (the agent must be dead: the test opens it).
fn stored(ledger: &Path) -> Vec<StoredReceipt> {
    let ledger = Ledger::open(ledger).expect("the ledger opens after a SIGKILL");
    assert!(
        ledger.refused(0, 10).unwrap().is_empty(),
        "nothing may be refused"
    );
    ledger.export(0, usize::MAX).unwrap()
}

/// Journal indexes stored under `key`, in order; each at most once.
fn indexes(stored: &[StoredReceipt], key: &str) -> Vec<u64> {
    let mut out: Vec<u64> = stored
        .iter()
        .filter(|r| r.receipt_key == key)
        .map(|r| r.journal_index)
        .collect();
    out.sort_unstable();
    let distinct: BTreeSet<u64> = out.iter().copied().collect();
    assert_eq!(distinct.len(), out.len(), "a receipt stored twice: {out:?}");
    out
}

/// With the agent dead: every receipt the guest has had acknowledged is in the ledger.
async fn acknowledged_are_durable(ledger: &Path, internal: &str) -> u64 {
    let (key, waiting, last) = journal(internal).await;
    let acknowledged = waiting.map(|first| first - 1).unwrap_or(last);
    let have = indexes(&stored(ledger), &key);
    let missing: Vec<u64> = (1..=acknowledged)
        .filter(|i| have.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the ledger: {missing:?} (acknowledged up to {acknowledged})"
    );
    acknowledged
}

/// Waits (agent running) until the guest has nothing waiting and everything it signed was
/// acknowledged; returns its key and newest index.
async fn fully_collected(internal: &str) -> (String, u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (key, waiting, last) = journal(internal).await;
        if waiting.is_none() {
            return (key, last);
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not collect everything within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ledger holds exactly journal indexes 1..=last under `key`, and each account's
/// receipts add up to what the guest states.
fn epoch_complete(
    stored: &[StoredReceipt],
    key: &str,
    last: u64,
    accounts: &BTreeMap<String, (u64, Cumulative)>,
) {
    assert_eq!(
        indexes(stored, key),
        (1..=last).collect::<Vec<_>>(),
        "every receipt of the boot with key {key}, exactly once"
    );
    for (account, (sequence, cumulative)) in accounts {
        let mine: Vec<_> = stored
            .iter()
            .filter(|r| r.receipt_key == key && &r.receipt.account == account)
            .collect();
        let (mut requests, mut prompt, mut cached, mut completion, mut charge) = (0, 0, 0, 0, 0);
        for r in &mine {
            requests += 1;
            prompt += r.receipt.tokens.prompt_tokens;
            cached += r.receipt.tokens.cached_tokens;
            completion += r.receipt.tokens.completion_tokens;
            charge += r.receipt.charge;
        }
        let latest = mine
            .iter()
            .max_by_key(|r| r.receipt.sequence)
            .expect("the account has receipts");
        assert_eq!(latest.receipt.sequence, *sequence, "{account}");
        assert_eq!(latest.receipt.cumulative, *cumulative, "{account}");
        assert_eq!(
            (requests, prompt, cached, completion, charge),
            (
                cumulative.requests,
                cumulative.tokens.prompt_tokens,
                cumulative.tokens.cached_tokens,
                cumulative.tokens.completion_tokens,
                cumulative.charge
            ),
            "{account}: the ledger's sums equal the guest's cumulative totals"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_agent_loses_no_receipt_and_acknowledges_none_early() {
    let iterations = std::env::var("COCOON_SIGKILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    let seed = std::env::var("COCOON_SIGKILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("COCOON_SIGKILL_SEED={seed} COCOON_SIGKILL_ITERATIONS={iterations}");
    let mut rng = Rng(seed);

    let dir = scratch_dir("host-ledger").unwrap();
    let token = host_token_file(&dir, TEST_HOST_TOKEN).unwrap();
    std::fs::write(dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    let ledger = dir.join("ledger.sqlite3");
    let token_arg = token.to_string_lossy().to_string();
    let guest_flags = [
        "--host-token-file",
        token_arg.as_str(),
        "--max-uncollected-receipts",
        JOURNAL_CAPACITY,
        "--price-prompt",
        "1000000",
        "--price-completion",
        "3000000",
    ];
    let boot = |listen: String, internal: String| {
        let flags: Vec<String> = guest_flags.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            start_guest("simulated", true, &listen, &internal, &flags).expect("the guest starts")
        })
    };
    let mut guest = boot("127.0.0.1:0".into(), "127.0.0.1:0".into())
        .await
        .unwrap();
    let internal = guest.internal_addr.clone().unwrap();

    // First start on free ports; from then on the same ports, as an operator's would be.
    let config = write_config(&dir, "127.0.0.1:0", "127.0.0.1:0", &guest);
    let (mut agent, relay, admin) = start_agent(&config);
    let config = write_config(&dir, &relay, &admin, &guest);

    let stop = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(Mutex::new(Observed::default()));
    let mut clients = Vec::new();
    for (target, account) in [
        (relay.clone(), Some(AccountKey::generate().unwrap().0)),
        (relay.clone(), None),
        (guest.addr.clone(), Some(AccountKey::generate().unwrap().0)),
    ] {
        clients.push(tokio::spawn(client(
            target,
            account,
            stop.clone(),
            observed.clone(),
        )));
    }

    let mut first_boot = None;
    let mut max_acknowledged = 0;
    for i in 0..iterations {
        // Anywhere from during the agent's start to several requests later.
        tokio::time::sleep(rng.millis(20, 4000)).await;
        agent.kill();
        max_acknowledged = max_acknowledged.max(acknowledged_are_durable(&ledger, &internal).await);

        if i == iterations / 2 {
            // Nobody collects: the journal fills and the guest refuses new work.
            let before = observed.lock().unwrap().unavailable;
            let deadline = Instant::now() + PATIENCE;
            while observed.lock().unwrap().unavailable == before {
                assert!(Instant::now() < deadline, "the guest never answered 503");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (_, waiting, last) = journal(&internal).await;
            let capacity: u64 = JOURNAL_CAPACITY.parse().unwrap();
            assert_eq!(
                last - waiting.expect("a full journal") + 1,
                capacity,
                "the guest stops at exactly its journal bound"
            );
            acknowledged_are_durable(&ledger, &internal).await;
        }
        if i == 2 * iterations / 3 {
            // The guest reboots: the agent first collects everything of this boot.
            let (running, _, _) = start_agent(&config);
            agent = running;
            let (key, last) = fully_collected(&internal).await;
            let (accounts_key, accounts) = guest_accounts(&internal).await;
            assert_eq!(accounts_key, key);
            agent.kill();
            first_boot = Some((key, last, accounts));
            let (listen, internal_listen) = (guest.addr.clone(), internal.clone());
            guest.service.kill();
            guest = boot(listen, internal_listen).await.unwrap();
        }
        let (running, _, _) = start_agent(&config);
        agent = running;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(PATIENCE, client)
            .await
            .expect("clients stop")
            .unwrap();
    }

    // The agent runs: it collects the rest. Then the ledger is read from the file.
    let (key, last) = fully_collected(&internal).await;
    let (accounts_key, accounts) = guest_accounts(&internal).await;
    assert_eq!(accounts_key, key);
    let (status, usage) = http_json(&admin, "GET", "/v1/usage", Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 200, "{usage}");
    agent.kill();
    let all = stored(&ledger);
    let (first_key, first_last, first_accounts) = first_boot.expect("the guest rebooted");
    assert_ne!(first_key, key, "a reboot brings a new receipt key");
    epoch_complete(&all, &first_key, first_last, &first_accounts);
    epoch_complete(&all, &key, last, &accounts);
    assert_eq!(
        all.len() as u64,
        first_last + last,
        "both boots, nothing else"
    );

    // Every receipt a client received is in the ledger, byte for byte.
    let seen = observed.lock().unwrap();
    let in_ledger: BTreeSet<&str> = all.iter().map(|r| r.jws.as_str()).collect();
    let missing = seen
        .receipts
        .iter()
        .filter(|jws| !in_ledger.contains(jws.as_str()))
        .count();
    assert_eq!(missing, 0, "receipts clients hold but the ledger lacks");
    assert!(seen.unexpected.is_empty(), "{:?}", seen.unexpected);
    assert!(seen.unavailable > 0);

    // The admin API's per-account totals agree with both boots' totals together.
    for (account, (_, cumulative)) in &accounts {
        let earlier = first_accounts
            .get(account)
            .map(|(_, c)| c.charge)
            .unwrap_or(0);
        let row = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["account"] == account.as_str())
            .unwrap_or_else(|| panic!("{account} in /v1/usage: {usage}"));
        assert_eq!(
            row["charge"].as_u64(),
            Some(earlier + cumulative.charge),
            "{account}: {row}"
        );
    }
    println!(
        "{iterations} SIGKILLs; {} receipts in two boots ({} acknowledged at most at a kill); \
         clients: {} receipts, {} x 503, {} connections cut",
        all.len(),
        max_acknowledged,
        seen.receipts.len(),
        seen.unavailable,
        seen.cut
    );
    drop(seen);
    let _ = std::fs::remove_dir_all(dir);
}
