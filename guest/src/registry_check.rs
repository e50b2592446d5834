//! `--registry ADDRESS` (with `--registry-api URL`): at start the guest looks up its own
//! image, model and price table in a publisher's on-chain registry (`billing/REGISTRY.md`)
//! and logs whether each is registered, so an operator learns at once that clients using
//! that registry would refuse it.
//!
//! Informational only, and deliberately so: the answer comes through the host (the TON
//! API is outside the trust boundary), so it can neither make the guest trustworthy nor be
//! trusted to stop it; clients check the registry themselves. The lookup runs in the
//! background, never delays or blocks serving, and its failures are logged, not fatal. The
//! flags are not part of the measured config: they change no answer the guest gives.
//!
//! The values are the ones clients compute (`cocoon_client::registry`): the image value
//! of the guest's own evidence (`cocoon_billing::registry::tdx_image_value` /
//! `snp_image_value`), `model.sha256` (and `model.verity_root`) and the price table's
//! SHA-256 from the measured config.

use std::sync::Arc;

use cocoon_billing::chain::Chain;
use cocoon_billing::registry::{
    read_entry, read_registry, snp_image_value, tdx_image_value, EntryKind, EntryStatus,
};
use cocoon_billing::ton_http::{TonHttpClient, TonHttpConfig};
use tracing::{info, warn};

use crate::config::MeasuredConfig;
use crate::tee::{Evidence, ParsedEvidence};

/// `--registry`, `--registry-api`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// At start, look up this guest's image, model and price table in this publisher
    /// registry (billing/REGISTRY.md; raw 0:HEX or user-friendly address) and log whether
    /// each is registered. Informational only: serving never waits for or depends on it.
    #[arg(long, value_name = "ADDRESS")]
    pub registry: Option<String>,
    /// The TON HTTP API (toncenter v2 routes) the registry is read through, e.g. the host
    /// agent's loopback API over its local chain.
    #[arg(
        long,
        value_name = "URL",
        requires = "registry",
        default_value = "https://toncenter.com"
    )]
    pub registry_api: String,
}

/// One value this guest would need registered, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnValue {
    pub kind: EntryKind,
    pub value: [u8; 32],
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The values clients would look up for this guest: its image (from its own evidence),
/// its model and its price table (from the measured config).
pub fn own_values(evidence: &Evidence, config: &MeasuredConfig) -> Vec<OwnValue> {
    let image = match &evidence.parsed {
        ParsedEvidence::Tdx(quote) => {
            let r = &quote.body.rtmr;
            OwnValue {
                kind: EntryKind::ImageTdx,
                value: tdx_image_value(&quote.body.mr_td, [&r[0], &r[1], &r[2]]),
            }
        }
        ParsedEvidence::SevSnp(report) => OwnValue {
            kind: EntryKind::ImageSevSnp,
            value: snp_image_value(&report.measurement),
        },
    };
    let mut values = vec![image];
    let model = &config.model;
    for (kind, text) in [
        (EntryKind::ModelSha256, Some(model.sha256.as_str())),
        (EntryKind::ModelVerityRoot, model.verity_root.as_deref()),
        (EntryKind::PriceTable, Some(&config.prices.sha256_hex())),
    ] {
        if let Some(value) = text.and_then(hex32) {
            values.push(OwnValue { kind, value });
        }
    }
    values
}

/// Starts the background lookup (nothing without `--registry`); a bad address or URL is
/// logged, never fatal.
pub fn spawn(args: &RegistryArgs, values: Vec<OwnValue>) {
    let Some(text) = args.registry.clone() else {
        return;
    };
    let address = match cocoon_billing::address::parse_address(&text) {
        Ok(address) => address,
        Err(e) => {
            warn!(registry = %text, "--registry is not a TON address ({e}): registration not checked");
            return;
        }
    };
    let chain = match TonHttpClient::new(TonHttpConfig::new(args.registry_api.clone())) {
        Ok(chain) => Arc::new(chain),
        Err(e) => {
            warn!(registry = %text, "--registry-api {}: {e}: registration not checked", args.registry_api);
            return;
        }
    };
    tokio::spawn(async move {
        lookup(chain.as_ref(), &address, &text, &values).await;
    });
}

async fn lookup(
    chain: &dyn Chain,
    address: &cocoon_billing::address::StdAddr,
    name: &str,
    values: &[OwnValue],
) {
    match read_registry(chain, address).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            warn!(registry = %name, "no registry is deployed there: clients using it will refuse this guest");
            return;
        }
        Err(e) => {
            warn!(registry = %name, "cannot read the registry ({e}): registration not checked");
            return;
        }
    }
    let mut missing = 0;
    for value in values {
        let hex_value = hex::encode(value.value);
        match read_entry(chain, address, value.kind, &value.value).await {
            Ok(EntryStatus::Registered { added_at }) => {
                info!(registry = %name, kind = %value.kind, value = %hex_value, added_at, "registered");
            }
            Ok(EntryStatus::NeverRegistered) => {
                missing += 1;
                warn!(registry = %name, kind = %value.kind, value = %hex_value, "NOT registered");
            }
            Ok(EntryStatus::Removed { removed_at, .. }) => {
                missing += 1;
                warn!(registry = %name, kind = %value.kind, value = %hex_value, removed_at, "REMOVED from the registry");
            }
            Err(e) => {
                warn!(registry = %name, kind = %value.kind, "cannot read the entry ({e})");
                return;
            }
        }
    }
    if missing == 0 {
        info!(registry = %name, "this guest's image, model and price table are registered");
    } else {
        warn!(registry = %name, missing, "clients using this registry will refuse this guest (serving anyway)");
    }
}
