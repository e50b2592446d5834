//! `cocoon-host-agent run` refuses, before anything listens, a config whose secrets or
//! policies it cannot use, naming the key.

use std::path::{Path, PathBuf};

use cocoon_host_agent::agent::config::LoadedAgentConfig;
use cocoon_host_agent::agent::run_agent;

const STRONG: &str = "5d1c0f6b3a9e47d2b8c4f0a1e6d3b7c95f2a8e4d1b6c3f0a7e9d2c5b8a1f4e6d";

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("cocoon-agent-start-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn config(&self, host_token: Option<&str>, attestation: &str) -> PathBuf {
        std::fs::write(self.0.join("admin-token"), STRONG).unwrap();
        if let Some(token) = host_token {
            std::fs::write(self.0.join("host-token"), token).unwrap();
        }
        let text = format!(
            r#"
[relay]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
[ledger]
path = "ledger.sqlite3"
[[guest]]
name = "g0"
address = "127.0.0.1:9"
internal_address = "127.0.0.1:10"
host_token_file = "host-token"
[guest.attestation]
{attestation}
"#
        );
        let path = self.0.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn refusal(config: &Path) -> String {
    let loaded = LoadedAgentConfig::load(config).unwrap();
    let error = run_agent(&loaded, std::future::pending())
        .await
        .expect_err("the agent must refuse to start");
    error.to_string()
}

#[tokio::test]
async fn unusable_host_tokens_and_policies_are_refused_naming_the_key() {
    let scratch = Scratch::new("refusals");
    for (token, expect) in [
        (None, "cannot read"),
        (Some("\n"), "is empty"),
        (Some("0123456789abcdef0123456789abcdef0123"), "guess"),
    ] {
        let config = scratch.config(token, "allow_simulated = true");
        let message = refusal(&config).await;
        assert!(message.contains("`guest[0].host_token_file`"), "{message}");
        assert!(message.contains(expect), "{expect}: {message}");
        let _ = std::fs::remove_file(scratch.0.join("host-token"));
    }
    let config = scratch.config(Some(STRONG), "policy = \"no-such-policy.toml\"");
    let message = refusal(&config).await;
    assert!(message.contains("`guest[0].attestation`"), "{message}");
    assert!(
        !scratch.0.join("ledger.sqlite3").exists(),
        "nothing created before the checks"
    );
}

/// A public test vector (tonlib-core's tests): a valid 24-word TON mnemonic.
const MNEMONIC: &str = "section garden tomato dinner season dice renew length useful spin \
     trade intact use universe what post spike keen mandate behind concert egg doll rug";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn billing_an_unusable_wallet_file_is_refused_before_anything_is_created() {
    let scratch = Scratch::new("billing-refusal");
    let config = scratch.config(Some(STRONG), "allow_simulated = true");
    for (words, expect) in [
        (None, "No such file"),
        (Some("one two three"), "3 words"),
        (Some(&*["abandon"; 24].join(" ")), "mnemonic"),
    ] {
        if let Some(words) = words {
            std::fs::write(scratch.0.join("wallet.mnemonic"), words).unwrap();
        }
        let mut text = std::fs::read_to_string(&config).unwrap();
        if !text.contains("[billing]") {
            text.push_str(
                "[billing]\nwallet_mnemonic_file = \"wallet.mnemonic\"\n\
                 [billing.local_chain]\nstate_file = \"chain.state\"\n",
            );
            std::fs::write(&config, text).unwrap();
        }
        let message = refusal(&config).await;
        assert!(
            message.contains("`billing.wallet_mnemonic_file`"),
            "{message}"
        );
        assert!(message.contains(expect), "{expect}: {message}");
    }
    assert!(!scratch.0.join("ledger.sqlite3").exists());
    assert!(!scratch.0.join("chain.state").exists());
}

#[tokio::test]
async fn billing_the_agent_serves_its_local_chain_and_credits_genesis_once() {
    use cocoon_billing::chain::Chain as _;
    let scratch = Scratch::new("billing-start");
    let config = scratch.config(Some(STRONG), "allow_simulated = true");
    std::fs::write(scratch.0.join("wallet.mnemonic"), MNEMONIC).unwrap();
    let (api_port, admin_port) = (free_port(), free_port());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\""),
        )
        + &format!(
            "[billing]\nwallet_mnemonic_file = \"wallet.mnemonic\"\npoll_secs = 1\n\
             [billing.local_chain]\nstate_file = \"chain.state\"\napi_listen = \"127.0.0.1:{api_port}\"\n\
             [[billing.local_chain.genesis]]\nmnemonic_file = \"wallet.mnemonic\"\nnanoton = 7000000000\n"
        );
    std::fs::write(&config, text).unwrap();
    let wallet = cocoon_billing::wallet::Wallet::from_mnemonic(
        MNEMONIC,
        cocoon_billing::wallet::Network::Local,
    )
    .unwrap()
    .address();
    for run in 0..2 {
        let loaded = LoadedAgentConfig::load(&config).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(async move {
            run_agent(&loaded, async {
                let _ = stopped.await;
            })
            .await
        });
        let client = cocoon_billing::ton_http::TonHttpClient::new(
            cocoon_billing::ton_http::TonHttpConfig::new(format!("http://127.0.0.1:{api_port}")),
        )
        .unwrap();
        let mut balance = None;
        for _ in 0..100 {
            if let Ok(state) = client.account_state(&wallet).await {
                balance = Some(state.balance);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            balance,
            Some(7_000_000_000),
            "run {run}: genesis credited once"
        );
        let admin = cocoon_host_agent::admin::AdminClient::new(
            format!("127.0.0.1:{admin_port}"),
            Some(STRONG.to_string()),
        );
        let status = admin.status().await.unwrap();
        let shown = &status["billing"]["wallet"]["address"];
        assert_eq!(
            shown,
            &format!("0:{}", hex::encode(wallet.address.0)),
            "{status}"
        );
        stop.send(()).unwrap();
        agent.await.unwrap().unwrap();
    }
    assert!(scratch.0.join("chain.state").exists());
}
