use super::*;

fn parse(text: &str) -> Result<LoadedAgentConfig> {
    LoadedAgentConfig::parse(Path::new("/etc/cocoon/host-agent.toml"), text)
}

const MINIMAL: &str = r#"
[admin]
token_file = "admin-token"
[ledger]
path = "ledger.sqlite3"
[[guest]]
name = "g0"
address = "127.0.0.1:8443"
internal_address = "127.0.0.1:8444"
host_token_file = "host-token"
[guest.attestation]
allow_simulated = true
"#;

/// The error text of a config that must be refused.
fn refused(text: &str) -> String {
    parse(text).expect_err("must be refused").to_string()
}

#[test]
fn the_example_parses() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.toml");
    let loaded = LoadedAgentConfig::load(&file).unwrap();
    let config = &loaded.config;
    assert_eq!(config.guests.len(), 1);
    assert_eq!(config.guests[0].name, "gpu0");
    assert_eq!(config.relay.max_connections_per_source, 128);
    assert!(config.guests[0].attestation.manifest.is_some());
    let billing = config.billing.as_ref().expect("the example has [billing]");
    assert_eq!(billing.local_chain.as_ref().unwrap().genesis.len(), 2);
}

#[test]
fn defaults_and_relative_paths() {
    let loaded = parse(MINIMAL).unwrap();
    let c = &loaded.config;
    assert_eq!(c.relay.listen, "127.0.0.1:9443".parse().unwrap());
    assert_eq!(c.admin.listen, "127.0.0.1:9444".parse().unwrap());
    assert_eq!(c.ledger.path, Path::new("/etc/cocoon/ledger.sqlite3"));
    assert_eq!(
        c.admin.token_file.as_deref(),
        Some(Path::new("/etc/cocoon/admin-token"))
    );
    assert_eq!(
        c.guests[0].host_token_file,
        Path::new("/etc/cocoon/host-token")
    );
    assert_eq!(c.collector.page_size, 1000);
    let limits = c.relay.limits();
    assert_eq!(
        limits.max_connection_duration,
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = refused(&format!("{MINIMAL}\n[collector]\ninterval_msec = 5\n"));
    assert!(e.contains("interval_msec"), "{e}");
    let e = refused(&MINIMAL.replace("[ledger]", "[ledger]\nsync = \"off\""));
    assert!(e.contains("sync"), "{e}");
    let e = refused(&MINIMAL.replace("allow_simulated", "allow_simulation"));
    assert!(e.contains("allow_simulation"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        (
            MINIMAL.replace("[admin]", "[relay]\nmax_connections = 0\n[admin]"),
            "relay.max_connections",
        ),
        (
            MINIMAL.replace(
                "[admin]",
                "[relay]\nmax_connections = 4\nmax_connections_per_source = 8\n[admin]",
            ),
            "relay.max_connections_per_source",
        ),
        (
            format!("{MINIMAL}\n[collector]\npage_size = 5000\n"),
            "collector.page_size",
        ),
        (
            MINIMAL.replace("token_file = \"admin-token\"", ""),
            "admin.token_file",
        ),
        (
            MINIMAL.replace(
                "token_file = \"admin-token\"",
                "listen = \"0.0.0.0:9444\"\nallow_unauthenticated_loopback = true",
            ),
            "admin.allow_unauthenticated_loopback",
        ),
        (
            MINIMAL.replace("127.0.0.1:8444", "127.0.0.1:8443"),
            "guest[0].internal_address",
        ),
        (
            MINIMAL.replace("address = \"127.0.0.1:8443\"", "address = \"8443\""),
            "guest[0].address",
        ),
        (
            MINIMAL.replace("name = \"g0\"", "name = \"g 0\""),
            "guest[0].name",
        ),
        (
            format!(
                "{MINIMAL}\n[[guest]]\nname = \"g0\"\naddress = \"127.0.0.1:1\"\n\
                 internal_address = \"127.0.0.1:2\"\nhost_token_file = \"t\"\n"
            ),
            "guest[1].name",
        ),
    ] {
        let e = refused(&text);
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
}

#[test]
fn at_least_one_guest() {
    let text = MINIMAL.split("[[guest]]").next().unwrap().to_string() + "guest = []\n";
    let e = refused(&text);
    assert!(e.contains("`guest`"), "{e}");
}

#[test]
fn loopback_without_a_token_needs_the_risk_flag() {
    let text = MINIMAL.replace(
        "token_file = \"admin-token\"",
        "allow_unauthenticated_loopback = true",
    );
    let loaded = parse(&text).unwrap();
    assert!(loaded.config.admin.token_file.is_none());
}

const BILLING: &str = r#"
[billing]
wallet_mnemonic_file = "wallet.mnemonic"
[billing.local_chain]
state_file = "chain.state"
api_listen = "127.0.0.1:9445"
[[billing.local_chain.genesis]]
mnemonic_file = "wallet.mnemonic"
nanoton = 1000000000000
[[billing.local_chain.genesis]]
address = "0:3333333333333333333333333333333333333333333333333333333333333333"
nanoton = 5
"#;

#[test]
fn billing_config_defaults_and_paths() {
    assert!(parse(MINIMAL).unwrap().config.billing.is_none());
    let loaded = parse(&format!("{MINIMAL}{BILLING}")).unwrap();
    let b = loaded.config.billing.as_ref().unwrap();
    use crate::settle::config::{ChainKind, NetworkName};
    assert_eq!((b.chain, b.network), (ChainKind::Local, NetworkName::Local));
    assert_eq!(
        b.wallet_mnemonic_file,
        Path::new("/etc/cocoon/wallet.mnemonic")
    );
    let local = b.local_chain.as_ref().unwrap();
    assert_eq!(local.state_file, Path::new("/etc/cocoon/chain.state"));
    assert_eq!(
        local.genesis[0].mnemonic_file.as_deref(),
        Some(Path::new("/etc/cocoon/wallet.mnemonic"))
    );
    assert_eq!(
        (b.settle_min_nanoton, b.settle_stake_share),
        (1_000_000_000, 0.5)
    );
    assert_eq!(
        (b.max_batch, b.poll_secs, b.settle_max_age_secs),
        (120, 10, 3_600)
    );
    assert_eq!(b.charge_value_nanoton, 50_000_000);
    let http = format!(
        "{MINIMAL}\n[billing]\nchain = \"ton_http\"\nnetwork = \"testnet\"\n\
         ton_http_url = \"https://testnet.toncenter.com\"\napi_key_file = \"key\"\n\
         wallet_mnemonic_file = \"w\"\n"
    );
    let b = parse(&http).unwrap().config.billing.unwrap();
    assert_eq!(
        b.api_key_file.as_deref(),
        Some(Path::new("/etc/cocoon/key"))
    );
}

#[test]
fn billing_config_bad_values_name_their_key() {
    let with = |extra: &str| {
        format!(
            "{MINIMAL}{}",
            BILLING.replace(
                "[billing.local_chain]",
                &format!("{extra}\n[billing.local_chain]")
            )
        )
    };
    for (text, key) in [
        (
            with("settle_stake_share = 1.5"),
            "billing.settle_stake_share",
        ),
        (
            with("settle_stake_share = -0.1"),
            "billing.settle_stake_share",
        ),
        (with("max_batch = 141"), "billing.max_batch"),
        (with("max_batch = 0"), "billing.max_batch"),
        (with("poll_secs = 0"), "billing.poll_secs"),
        (with("settle_min_nanoton = 0"), "billing.settle_min_nanoton"),
        (
            with("charge_value_nanoton = 1000"),
            "billing.charge_value_nanoton",
        ),
        (with("network = \"mainnet\""), "billing.network"),
        (
            with("ton_http_url = \"https://toncenter.com\""),
            "billing.ton_http_url",
        ),
        (
            format!(
                "{MINIMAL}{}",
                BILLING.replace("127.0.0.1:9445", "0.0.0.0:9445")
            ),
            "billing.local_chain.api_listen",
        ),
        (
            format!(
                "{MINIMAL}{}",
                BILLING.replace("127.0.0.1:9445", "127.0.0.1:9444")
            ),
            "billing.local_chain.api_listen",
        ),
        (
            format!("{MINIMAL}{}", BILLING.replace("nanoton = 5", "nanoton = 0")),
            "billing.local_chain.genesis[1].nanoton",
        ),
        (
            format!(
                "{MINIMAL}{}",
                BILLING.replace("address = \"0:3333", "address = \"0:33")
            ),
            "billing.local_chain.genesis[1].address",
        ),
        (
            format!(
                "{MINIMAL}{}",
                BILLING.replace("nanoton = 5", "nanoton = 5\nmnemonic_file = \"m\"")
            ),
            "billing.local_chain.genesis[1].address",
        ),
        (
            format!("{MINIMAL}\n[billing]\nwallet_mnemonic_file = \"w\"\n"),
            "billing.local_chain",
        ),
        (
            format!(
                "{MINIMAL}\n[billing]\nchain = \"ton_http\"\nnetwork = \"mainnet\"\n\
                 wallet_mnemonic_file = \"w\"\n"
            ),
            "billing.ton_http_url",
        ),
        (
            format!(
                "{MINIMAL}\n[billing]\nchain = \"ton_http\"\nton_http_url = \"https://x\"\n\
                 wallet_mnemonic_file = \"w\"\n"
            ),
            "billing.network",
        ),
    ] {
        let e = refused(&text);
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
    let e = refused(&with("settle_every = 3"));
    assert!(e.contains("settle_every"), "{e}");
    let e = refused(&format!(
        "{MINIMAL}{}",
        BILLING.replace("nanoton = 5", "nanoton = 5\ncolour = 1")
    ));
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn vtpm_rules_in_a_guest_attestation_section() {
    let text = MINIMAL.replace(
        "allow_simulated = true",
        "allow_simulated = true\nrequire_vtpm = true\nvtpm_pcr = [\"15\", \"7=ab\"]",
    );
    let loaded = parse(&text).unwrap();
    let attestation = &loaded.config.guests[0].attestation;
    assert!(attestation.require_vtpm);
    // The same rules a client applies, and a malformed value is refused with its key.
    let err = attestation.load().unwrap_err().to_string();
    assert!(err.contains("vtpm.pcrs.7"), "{err}");
    let text = MINIMAL.replace(
        "allow_simulated = true",
        "allow_simulated = true\nvtpm_pcr = [\"15\"]",
    );
    let loaded = parse(&text).unwrap();
    let (policy, _) = loaded.config.guests[0].attestation.load().unwrap();
    assert_eq!(policy.vtpm.pcrs.get("15"), Some(&Vec::new()));
}
