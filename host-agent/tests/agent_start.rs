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
