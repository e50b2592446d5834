//! `[billing]` in the agent's config: which chain, which wallet pays the gas, and when to
//! settle.
//!
//! Why these checks: a billing mistake is money. A mainnet wallet pointed at the embedded
//! chain, a testnet API with a mainnet wallet id, a stake share of 5 instead of 0.5, a
//! batch larger than a wallet v5 message holds: each is refused at start, naming the key,
//! rather than discovered as failed or missing charges.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config_file::{anchor, Checker};
use crate::error::Result;

/// Nanoton in one TON.
pub const NANOTON_PER_TON: u64 = 1_000_000_000;

/// Least gas value attached to a charge: one runs about 8000 gas units (0.0032 TON at
/// mainnet prices) plus forwarding; what is not used goes on to the payout address.
pub const MIN_CHARGE_VALUE: u64 = 10_000_000;

/// Which chain the agent settles on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// The embedded chain (real contract code in an in-process executor), kept in
    /// `[billing.local_chain] state_file`.
    #[default]
    Local,
    /// A TON HTTP API (toncenter v2 routes) at `ton_http_url`.
    TonHttp,
}

/// The network the wallet signs for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkName {
    #[default]
    Local,
    Testnet,
    Mainnet,
}

impl NetworkName {
    pub fn network(self) -> cocoon_billing::wallet::Network {
        use cocoon_billing::wallet::Network;
        match self {
            Self::Local => Network::Local,
            Self::Testnet => Network::Testnet,
            Self::Mainnet => Network::Mainnet,
        }
    }
}

/// `[billing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSection {
    /// `local` (default) or `ton_http`.
    #[serde(default)]
    pub chain: ChainKind,
    /// Base URL of the TON HTTP API (`chain = "ton_http"` only).
    pub ton_http_url: Option<String>,
    /// File holding the API key (optional; `chain = "ton_http"` only).
    pub api_key_file: Option<PathBuf>,
    /// The operator's wallet v5r1: a file of 24 words. It pays the charges' gas.
    pub wallet_mnemonic_file: PathBuf,
    /// `local` (the embedded chain), `testnet` or `mainnet`: the wallet id it signs for.
    #[serde(default)]
    pub network: NetworkName,
    /// Settle a key of an escrow once it owes at least this much.
    #[serde(default = "default_settle_min")]
    pub settle_min_nanoton: u64,
    /// ... or at least this share (0 to 1) of the escrow's stake.
    #[serde(default = "default_stake_share")]
    pub settle_stake_share: f64,
    /// ... or once its oldest unsettled voucher is this old.
    #[serde(default = "default_max_age")]
    pub settle_max_age_secs: u64,
    /// ... and always this long before the authorization's window closes (its expiry plus
    /// the escrow's close delay, or the escrow's `unlock_at` when it is closing).
    #[serde(default = "default_deadline_margin")]
    pub deadline_margin_secs: u64,
    /// Gas value attached to each charge message (unused gas goes on to the payout).
    #[serde(default = "default_charge_value")]
    pub charge_value_nanoton: u64,
    /// Charges per wallet message, 1 to 120 (what fits one external message).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Pause between rounds of reading escrows and settling.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    /// A wallet message is valid this long after it is built (then it can never apply,
    /// and its charges go into a new one).
    #[serde(default = "default_message_ttl")]
    pub message_ttl_secs: u64,
    /// After the wallet used a message's seqno, how long its charges may take to land
    /// before the ones that did not are recorded as failed.
    #[serde(default = "default_confirm_grace")]
    pub confirm_grace_secs: u64,
    /// Limit on each call to the chain.
    #[serde(default = "default_chain_timeout")]
    pub chain_timeout_secs: u64,
    /// `[billing.local_chain]` (`chain = "local"` only).
    pub local_chain: Option<LocalChainSection>,
}

fn default_settle_min() -> u64 {
    NANOTON_PER_TON
}
fn default_stake_share() -> f64 {
    0.5
}
fn default_max_age() -> u64 {
    3_600
}
fn default_deadline_margin() -> u64 {
    600
}
fn default_charge_value() -> u64 {
    50_000_000
}
fn default_max_batch() -> usize {
    cocoon_billing::wallet::MAX_CHARGES_PER_MESSAGE
}
fn default_poll() -> u64 {
    10
}
fn default_message_ttl() -> u64 {
    120
}
fn default_confirm_grace() -> u64 {
    60
}
fn default_chain_timeout() -> u64 {
    30
}

/// `[billing.local_chain]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalChainSection {
    /// Where the chain's state is kept (rewritten atomically after every message).
    pub state_file: PathBuf,
    /// Loopback address to serve the TON HTTP API from this chain on (so `cocoon-client`
    /// can deploy and fund escrows); none: not served.
    pub api_listen: Option<SocketAddr>,
    /// Accounts credited once, when the state file is created.
    #[serde(default)]
    pub genesis: Vec<GenesisEntry>,
}

/// `[[billing.local_chain.genesis]]`: an address, or the wallet of a mnemonic file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisEntry {
    pub address: Option<String>,
    pub mnemonic_file: Option<PathBuf>,
    pub nanoton: u64,
}

impl BillingSection {
    pub fn poll(&self) -> Duration {
        Duration::from_secs(self.poll_secs)
    }
    pub fn chain_timeout(&self) -> Duration {
        Duration::from_secs(self.chain_timeout_secs)
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        anchor(base, &mut self.wallet_mnemonic_file);
        if let Some(file) = &mut self.api_key_file {
            anchor(base, file);
        }
        if let Some(local) = &mut self.local_chain {
            anchor(base, &mut local.state_file);
            for entry in &mut local.genesis {
                if let Some(file) = &mut entry.mnemonic_file {
                    anchor(base, file);
                }
            }
        }
    }

    pub(crate) fn validate(&self, check: &Checker<'_>) -> Result<()> {
        check.positive(&[
            ("billing.settle_min_nanoton", self.settle_min_nanoton),
            ("billing.settle_max_age_secs", self.settle_max_age_secs),
            ("billing.poll_secs", self.poll_secs),
            ("billing.message_ttl_secs", self.message_ttl_secs),
            ("billing.chain_timeout_secs", self.chain_timeout_secs),
        ])?;
        check.require(
            self.settle_stake_share.is_finite() && (0.0..=1.0).contains(&self.settle_stake_share),
            "billing.settle_stake_share",
            "must be from 0 to 1 (a share of the escrow's stake)",
        )?;
        check.require(
            (1..=cocoon_billing::wallet::MAX_CHARGES_PER_MESSAGE).contains(&self.max_batch),
            "billing.max_batch",
            "must be from 1 to 120 (more charges make an external message above 64 KiB, which no node accepts)",
        )?;
        check.require(
            self.charge_value_nanoton >= MIN_CHARGE_VALUE,
            "billing.charge_value_nanoton",
            "must be at least 10000000 (0.01 TON): a charge runs about 8000 gas units",
        )?;
        check.require(
            self.message_ttl_secs <= 86_400,
            "billing.message_ttl_secs",
            "must be at most 86400 (a day)",
        )?;
        match self.chain {
            ChainKind::Local => {
                check.require(
                    self.network == NetworkName::Local,
                    "billing.network",
                    "must be \"local\" with chain = \"local\" (the embedded chain)",
                )?;
                check.require(
                    self.ton_http_url.is_none() && self.api_key_file.is_none(),
                    "billing.ton_http_url",
                    "only with chain = \"ton_http\"",
                )?;
                let Some(local) = &self.local_chain else {
                    return Err(check.bad(
                        "billing.local_chain",
                        "missing: chain = \"local\" needs [billing.local_chain] state_file",
                    ));
                };
                if let Some(listen) = local.api_listen {
                    check.require(
                        listen.ip().is_loopback(),
                        "billing.local_chain.api_listen",
                        "must be a loopback address (anyone reaching it can move the local chain's money)",
                    )?;
                }
                for (i, entry) in local.genesis.iter().enumerate() {
                    let key = |field: &str| format!("billing.local_chain.genesis[{i}].{field}");
                    check.require(
                        entry.address.is_some() != entry.mnemonic_file.is_some(),
                        &key("address"),
                        "give exactly one of address and mnemonic_file",
                    )?;
                    if let Some(address) = &entry.address {
                        cocoon_billing::address::parse_address(address)
                            .map_err(|e| check.bad(&key("address"), e.to_string()))?;
                    }
                    check.require(entry.nanoton >= 1, &key("nanoton"), "must be at least 1")?;
                }
            }
            ChainKind::TonHttp => {
                check.require(
                    self.network != NetworkName::Local,
                    "billing.network",
                    "must be \"testnet\" or \"mainnet\" with chain = \"ton_http\"",
                )?;
                let url = self.ton_http_url.as_deref().unwrap_or_default();
                check.require(
                    url.starts_with("https://") || url.starts_with("http://"),
                    "billing.ton_http_url",
                    "must be an http:// or https:// URL (chain = \"ton_http\")",
                )?;
                check.require(
                    self.local_chain.is_none(),
                    "billing.local_chain",
                    "only with chain = \"local\"",
                )?;
            }
        }
        Ok(())
    }
}
