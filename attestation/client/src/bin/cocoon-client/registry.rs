//! `cocoon-client registry …`: a publisher's on-chain registry of reference values
//! (`billing/REGISTRY.md`; `cocoon_client::publisher` does the work, this is the command
//! line around it). Clients read it with `--registry ADDRESS`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use cocoon_billing::registry::{EntryKind, PublisherAction};
use cocoon_client::escrow::unix_now;
use cocoon_client::keys::KeyArgs;
use cocoon_client::onchain::Owner;
use cocoon_client::owner::parse_address;
use cocoon_client::publisher;
use cocoon_client::wallet::OwnerWallet;

use crate::owner::{finish, ton_client, ChainArgs, WaitArgs};

/// The publisher: its key (which signs and whose wallet v5r1 pays) and the chain.
#[derive(Debug, Clone, clap::Args)]
pub struct PublisherArgs {
    /// The publisher key (`--account-key FILE` or `--mnemonic-file FILE`): the registry's
    /// address is derived from it, and its wallet v5r1 pays.
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// The values an add or remove names.
#[derive(Debug, Clone, clap::Args)]
pub struct ValueArgs {
    /// A value, KIND:HEX (64 hex digits), KIND one of image-tdx, image-sev-snp,
    /// model-sha256, model-verity-root, price-table (repeatable; all go in one transfer).
    #[arg(long = "value", value_name = "KIND:HEX")]
    pub values: Vec<String>,
    /// Also every value of a guest as `cocoon-verify endpoint URL --json` printed it
    /// (its `registry_values`: image, model, price table) — verify the guest you mean to
    /// vouch for, then register what it runs.
    #[arg(long, value_name = "FILE")]
    pub from_verify: Option<PathBuf>,
    /// add: leave out values already registered instead of refusing them (a guest whose
    /// model is registered, on a new image).
    #[arg(long)]
    pub skip_registered: bool,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Print the key's registry address (nothing is sent).
    Address {
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Deploy the key's registry (0.05 TON from the key's wallet, kept for storage).
    Deploy {
        #[command(flatten)]
        publisher: PublisherArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Register values (0.016 TON each from the key's wallet; about 0.0035 TON is gas).
    Add {
        #[command(flatten)]
        publisher: PublisherArgs,
        #[command(flatten)]
        values: ValueArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Withdraw registered values: clients with --registry refuse guests that run them.
    Remove {
        #[command(flatten)]
        publisher: PublisherArgs,
        #[command(flatten)]
        values: ValueArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show a registry: the values registered now and the whole history.
    List {
        /// The registry (raw 0:HEX or user-friendly); default: the --account-key's.
        #[arg(long, value_name = "ADDRESS")]
        registry: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        chain: ChainArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn parse_value(text: &str) -> Result<(EntryKind, [u8; 32]), String> {
    let (kind, hex_value) = text
        .split_once(':')
        .ok_or_else(|| format!("--value {text}: expected KIND:HEX"))?;
    let kind = EntryKind::from_name(kind).map_err(|e| format!("--value {text}: {e}"))?;
    let bytes = hex::decode(hex_value.trim()).map_err(|e| format!("--value {text}: {e}"))?;
    let value = <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("--value {text}: {} bytes, expected 32", bytes.len()))?;
    Ok((kind, value))
}

fn values(args: &ValueArgs) -> Result<Vec<(EntryKind, [u8; 32])>, String> {
    let mut out = Vec::new();
    for text in &args.values {
        out.push(parse_value(text)?);
    }
    if let Some(path) = &args.from_verify {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let list = json["registry_values"].as_array().ok_or_else(|| {
            format!(
                "{}: no registry_values (the output of `cocoon-verify endpoint URL --json` \
                 for a guest whose config was served)",
                path.display()
            )
        })?;
        for item in list {
            let kind = item["kind"].as_str().unwrap_or_default();
            let value = item["value"].as_str().unwrap_or_default();
            out.push(parse_value(&format!("{kind}:{value}"))?);
        }
    }
    if out.is_empty() {
        return Err("name the values: --value KIND:HEX or --from-verify FILE".into());
    }
    Ok(out)
}

/// The requests of an add (`add`) or a remove.
fn actions(args: &ValueArgs, add: bool) -> Result<Vec<PublisherAction>, String> {
    Ok(values(args)?
        .into_iter()
        .map(|(kind, value)| {
            if add {
                PublisherAction::Add { kind, value }
            } else {
                PublisherAction::Remove { kind, value }
            }
        })
        .collect())
}

async fn run(command: RegistryCommand) -> Result<String, String> {
    let (publisher_args, wait, actions) = match &command {
        RegistryCommand::Address { key } => {
            let key = key.require()?;
            let address = cocoon_billing::registry::registry_address(&key.id().0)
                .map_err(|e| e.to_string())?;
            return Ok(address.to_string());
        }
        RegistryCommand::List {
            registry,
            key,
            chain,
            json,
        } => {
            let address = match (registry, key.load()?) {
                (Some(text), _) => parse_address(text).map_err(|e| e.to_string())?,
                (None, Some(key)) => cocoon_billing::registry::registry_address(&key.id().0)
                    .map_err(|e| e.to_string())?,
                (None, None) => {
                    return Err(
                        "which registry? give --registry ADDRESS or the publisher's \
                                --account-key FILE"
                            .into(),
                    )
                }
            };
            let network = chain.ton_network.as_deref().unwrap_or("mainnet");
            let client = ton_client(chain, network)?;
            let listing = publisher::list(&client, &address).await?;
            return Ok(if *json {
                listing.to_json().to_string()
            } else {
                listing.to_text()
            });
        }
        RegistryCommand::Deploy { publisher, wait } => (publisher, wait, None),
        RegistryCommand::Add {
            publisher,
            values: v,
            wait,
        } => (
            publisher,
            wait,
            Some((actions(v, true)?, v.skip_registered)),
        ),
        RegistryCommand::Remove {
            publisher,
            values: v,
            wait,
        } => (publisher, wait, Some((actions(v, false)?, false))),
    };
    let key = publisher_args.key.require()?;
    let network = publisher_args
        .chain
        .ton_network
        .as_deref()
        .unwrap_or("mainnet");
    let wallet = OwnerWallet::new(&key, network)?;
    let chain = ton_client(&publisher_args.chain, network)?;
    let owner = Owner {
        chain: &chain,
        key: &key,
        wallet: &wallet,
        wait: Duration::from_secs(wait.wait),
        poll: Duration::from_secs(1),
    };
    let now = unix_now();
    let registry = publisher::address_of(&owner)?;
    let (done, state) = match actions {
        None => ("deployed", publisher::deploy(&owner, now).await?),
        Some((mut actions, skip_registered)) => {
            if skip_registered {
                let mut kept = Vec::new();
                for action in actions {
                    if let PublisherAction::Add { kind, value } = &action {
                        let status =
                            cocoon_billing::registry::read_entry(&chain, &registry, *kind, value)
                                .await
                                .map_err(|e| format!("reading registry {registry}: {e}"))?;
                        if matches!(
                            status,
                            cocoon_billing::registry::EntryStatus::Registered { .. }
                        ) {
                            continue;
                        }
                    }
                    kept.push(action);
                }
                if kept.is_empty() {
                    return Ok(format!(
                        "nothing to add: every value is already registered in {registry}"
                    ));
                }
                actions = kept;
            }
            let done = if matches!(actions.first(), Some(PublisherAction::Add { .. })) {
                "added"
            } else {
                "removed"
            };
            (done, publisher::publish(&owner, &actions, now).await?)
        }
    };
    Ok(format!(
        "{done}\nregistry {registry}\n  seqno      {}\n  registered {}\n  events     {}",
        state.seqno, state.active, state.event_count
    ))
}

pub async fn registry(command: RegistryCommand) -> std::process::ExitCode {
    finish(run(command).await)
}
