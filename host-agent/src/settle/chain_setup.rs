//! Setting billing up at start: the wallet from its mnemonic file, the chain (the embedded
//! one from its state file, its genesis credited once, or a TON HTTP API client), and the
//! loopback TON HTTP API over the embedded chain.
//!
//! Everything that can be refused is checked here, before the agent listens: a mnemonic
//! that is not 24 valid words, an unreadable API key, a state file that is not one.

use std::sync::{Arc, Mutex};

use cocoon_billing::chain::{Chain, SharedLocalChain};
use cocoon_billing::local_chain::LocalChain;
use cocoon_billing::ton_http::{
    spawn_server, ServerHandle, ServerLimits, TonHttpClient, TonHttpConfig,
};
use cocoon_billing::wallet::Wallet;
use tracing::info;

use super::config::{BillingSection, ChainKind};
use super::decide::Thresholds;
use super::settler::SettleParams;
use crate::config_file::Checker;
use crate::error::{Error, Result};

/// Billing, set up.
pub struct Billing {
    pub section: BillingSection,
    pub wallet: Arc<Wallet>,
    pub chain: Arc<dyn Chain>,
    /// The embedded chain, when that is the chain.
    pub local: Option<SharedLocalChain>,
}

/// Longest mnemonic file read.
const MAX_MNEMONIC_BYTES: u64 = 4096;

/// Reads a 24-word mnemonic file.
pub fn read_mnemonic(path: &std::path::Path) -> std::result::Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_MNEMONIC_BYTES {
        return Err(format!("{}: larger than a mnemonic", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() != 24 {
        return Err(format!(
            "{}: {} words, a TON mnemonic has 24",
            path.display(),
            words.len()
        ));
    }
    Ok(words.join(" "))
}

impl Billing {
    /// Reads the wallet and opens the chain (see the module docs).
    pub fn open(section: &BillingSection, check: &Checker<'_>) -> Result<Self> {
        let network = section.network.network();
        let key = "billing.wallet_mnemonic_file";
        let words = read_mnemonic(&section.wallet_mnemonic_file).map_err(|e| check.bad(key, e))?;
        let wallet =
            Wallet::from_mnemonic(&words, network).map_err(|e| check.bad(key, e.to_string()))?;
        let (chain, local): (Arc<dyn Chain>, _) = match section.chain {
            ChainKind::Local => {
                let Some(local) = &section.local_chain else {
                    return Err(check.bad("billing.local_chain", "missing"));
                };
                let state_key = "billing.local_chain.state_file";
                let (mut chain, created) = LocalChain::open_persistent(&local.state_file)
                    .map_err(|e| check.bad(state_key, e.to_string()))?;
                if created {
                    for (i, entry) in local.genesis.iter().enumerate() {
                        let entry_key = format!("billing.local_chain.genesis[{i}]");
                        let addr = match (&entry.address, &entry.mnemonic_file) {
                            (Some(address), _) => {
                                cocoon_billing::address::parse_address(address)
                                    .map_err(|e| check.bad(&entry_key, e.to_string()))?
                            }
                            (None, Some(file)) => {
                                let words =
                                    read_mnemonic(file).map_err(|e| check.bad(&entry_key, e))?;
                                Wallet::from_mnemonic(&words, network)
                                    .map_err(|e| check.bad(&entry_key, e.to_string()))?
                                    .address()
                            }
                            (None, None) => return Err(check.bad(&entry_key, "no address")),
                        };
                        chain
                            .airdrop(&addr, u128::from(entry.nanoton))
                            .map_err(|e| check.bad(&entry_key, e.to_string()))?;
                        info!(address = %addr, nanoton = entry.nanoton, "local chain genesis");
                    }
                }
                let shared: SharedLocalChain = Arc::new(Mutex::new(chain));
                (Arc::new(shared.clone()), Some(shared))
            }
            ChainKind::TonHttp => {
                let url = section.ton_http_url.clone().unwrap_or_default();
                let mut config = TonHttpConfig::new(url);
                config.request_timeout = section.chain_timeout();
                if let Some(file) = &section.api_key_file {
                    config = config
                        .with_api_key_file(file)
                        .map_err(|e| check.bad("billing.api_key_file", e.to_string()))?;
                }
                let client = TonHttpClient::new(config)
                    .map_err(|e| check.bad("billing.ton_http_url", e.to_string()))?;
                (Arc::new(client), None)
            }
        };
        Ok(Self {
            section: section.clone(),
            wallet: Arc::new(wallet),
            chain,
            local,
        })
    }

    /// Serves the TON HTTP API from the embedded chain on `[billing.local_chain]
    /// api_listen`, if set.
    pub async fn serve_local_api(&self) -> Result<Option<ServerHandle>> {
        let (Some(local), Some(listen)) = (
            &self.local,
            self.section.local_chain.as_ref().and_then(|l| l.api_listen),
        ) else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                address: listen,
                source,
            })?;
        let server = spawn_server(listener, local.clone(), ServerLimits::default())
            .map_err(|e| Error::Billing(e.to_string()))?;
        Ok(Some(server))
    }

    /// The settlement parameters of `[billing]`.
    pub fn params(&self) -> SettleParams {
        let s = &self.section;
        SettleParams {
            thresholds: Thresholds::new(
                s.settle_min_nanoton,
                s.settle_stake_share,
                s.settle_max_age_secs,
                s.deadline_margin_secs,
            ),
            charge_value: u128::from(s.charge_value_nanoton),
            max_batch: s.max_batch,
            message_ttl_secs: s.message_ttl_secs,
            confirm_grace_secs: s.confirm_grace_secs,
            chain_timeout: s.chain_timeout(),
        }
    }
}
