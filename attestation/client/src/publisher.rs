//! The registry publisher's operations (`cocoon-client registry deploy|add|remove|list`):
//! the publisher key signs each request (`billing/REGISTRY.md`), the same key's wallet
//! v5r1 carries it, and each command waits until the registry shows the effect.
//!
//! Like the escrow owner's commands ([`crate::onchain`]), every request is first checked
//! against the registry's state with the contract's own rules (an add of a registered
//! value, a remove of one that is not), so the publisher learns why before paying gas; the
//! contract checks again. Several values go in one wallet transfer, as consecutive
//! seqnos: registering a guest (image, model, prices) is one transfer.

use std::time::Duration;

use cocoon_billing::chain::Chain;
use cocoon_billing::layout::CellLayout as _;
use cocoon_billing::registry::{
    current_entries, read_entry, read_history, read_registry, registry_address,
    registry_state_init, Entry, EntryStatus, Event, PublisherAction, PublisherRequest,
    RegistryState,
};
use cocoon_billing::wallet::OutMessage;
use tycho_types::models::StdAddr;

use crate::onchain::{utc, Owner};

/// What a deploy sends: 0.05 TON, the registry's storage for years (it keeps what it
/// gets; nothing is ever paid out).
pub const DEPLOY_VALUE: u128 = 50_000_000;

/// What each request carries: 0.016 TON; an add or remove costs the registry about 0.0035
/// TON in fees (REGISTRY.md), the rest stays for storage as the history grows. Three bytes
/// of value, like the escrow's owner requests, for the same reason (a `publish` body has
/// their size: see `crate::owner::REQUEST_VALUE`).
pub const REQUEST_VALUE: u128 = 16_000_000;

/// How long a signed request stays valid.
pub const REQUEST_VALIDITY_SECS: u64 = 300;

/// Most requests in one wallet transfer (wallet v5r1 sends at most 255 messages).
pub const MAX_BATCH: usize = 64;

/// The publisher's registry address (derived from the key alone).
pub fn address_of(owner: &Owner<'_>) -> Result<StdAddr, String> {
    registry_address(&owner.key.id().0).map_err(|e| e.to_string())
}

/// Deploys the key's registry and waits until it is active.
pub async fn deploy(owner: &Owner<'_>, now: u64) -> Result<RegistryState, String> {
    let registry = address_of(owner)?;
    if let Some(state) = read(owner.chain, &registry).await? {
        return Err(format!(
            "registry {registry} is already deployed ({} entries registered)",
            state.active
        ));
    }
    let state_init = registry_state_init(&owner.key.id().0)
        .and_then(|s| cocoon_billing::layout::state_init_cell(&s))
        .map_err(|e| e.to_string())?;
    let message = OutMessage {
        dest: registry.clone(),
        value: DEPLOY_VALUE,
        bounce: false,
        body: None,
        state_init: Some(state_init),
    };
    owner.send_transfer(&registry, &[message], now).await?;
    wait_until(owner, &registry, |_| true).await
}

async fn read(chain: &dyn Chain, registry: &StdAddr) -> Result<Option<RegistryState>, String> {
    read_registry(chain, registry)
        .await
        .map_err(|e| format!("reading registry {registry}: {e}"))
}

/// Sends `actions` (in order, one transfer) to the key's registry after checking each
/// against its current state, and waits until all are executed.
pub async fn publish(
    owner: &Owner<'_>,
    actions: &[PublisherAction],
    now: u64,
) -> Result<RegistryState, String> {
    if actions.is_empty() || actions.len() > MAX_BATCH {
        return Err(format!(
            "give between 1 and {MAX_BATCH} values, not {}",
            actions.len()
        ));
    }
    let registry = address_of(owner)?;
    let state = read(owner.chain, &registry).await?.ok_or_else(|| {
        format!("no registry is deployed at {registry}: deploy it first (`cocoon-client registry deploy`)")
    })?;
    if state.publisher != owner.key.id().0 {
        return Err(format!(
            "registry {registry} belongs to publisher {}, not to this key",
            hex::encode(state.publisher)
        ));
    }
    let valid_until = u32::try_from(now + REQUEST_VALIDITY_SECS)
        .map_err(|_| "the clock is past 2106".to_string())?;
    let mut messages = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let (kind, value, add) = match action {
            PublisherAction::Add { kind, value } => (*kind, *value, true),
            PublisherAction::Remove { kind, value } => (*kind, *value, false),
        };
        if actions[..i].iter().any(|a| a == action) {
            return Err(format!("{kind} {} is given twice", hex::encode(value)));
        }
        let status = read_entry(owner.chain, &registry, kind, &value)
            .await
            .map_err(|e| format!("reading registry {registry}: {e}"))?;
        match (add, status) {
            (true, EntryStatus::Registered { added_at }) => {
                return Err(format!(
                    "{kind} {} is already registered (since {})",
                    hex::encode(value),
                    utc(added_at)
                ))
            }
            (false, EntryStatus::NeverRegistered) => {
                return Err(format!(
                    "{kind} {} was never registered",
                    hex::encode(value)
                ))
            }
            (false, EntryStatus::Removed { removed_at, .. }) => {
                return Err(format!(
                    "{kind} {} was already removed (at {})",
                    hex::encode(value),
                    utc(removed_at)
                ))
            }
            _ => {}
        }
        let seqno = state.seqno + u32::try_from(i).map_err(|e| e.to_string())?;
        let body = PublisherRequest {
            registry: registry.clone(),
            seqno,
            valid_until,
            action: *action,
        }
        .sign(owner.key.key_pair(), now)
        .and_then(|m| m.to_cell())
        .map_err(|e| e.to_string())?;
        messages.push(OutMessage {
            dest: registry.clone(),
            value: REQUEST_VALUE,
            bounce: true,
            body: Some(body),
            state_init: None,
        });
    }
    owner.send_transfer(&registry, &messages, now).await?;
    let target = state.seqno + u32::try_from(actions.len()).map_err(|e| e.to_string())?;
    wait_until(owner, &registry, |s| s.seqno >= target).await
}

/// Polls the registry until `done` holds, for at most the owner's wait.
async fn wait_until(
    owner: &Owner<'_>,
    registry: &StdAddr,
    done: impl Fn(&RegistryState) -> bool,
) -> Result<RegistryState, String> {
    let deadline = tokio::time::Instant::now() + owner.wait;
    loop {
        // A read error while polling is not fatal: the next look may succeed.
        if let Ok(Some(state)) = read_registry(owner.chain, registry).await {
            if done(&state) {
                return Ok(state);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the wallet's transfer was sent but registry {registry} showed no effect within \
                 {} s (a refused request bounces back to the wallet; its transaction at the \
                 registry carries the exit code, see billing/REGISTRY.md); check with \
                 `cocoon-client registry list`",
                owner.wait.as_secs()
            ));
        }
        tokio::time::sleep(owner.poll.min(Duration::from_secs(5))).await;
    }
}

/// A registry as `registry list` shows it.
#[derive(Debug, Clone)]
pub struct Listing {
    pub registry: StdAddr,
    pub state: RegistryState,
    /// Registered now, oldest first.
    pub current: Vec<Entry>,
    pub history: Vec<Event>,
}

/// Reads the registry's counters and its whole history (at most
/// [`cocoon_billing::registry::MAX_HISTORY`] events).
pub async fn list(chain: &dyn Chain, registry: &StdAddr) -> Result<Listing, String> {
    let state = read(chain, registry)
        .await?
        .ok_or_else(|| format!("no registry is deployed at {registry}"))?;
    let history = read_history(chain, registry, 0, state.event_count)
        .await
        .map_err(|e| format!("reading registry {registry}: {e}"))?;
    Ok(Listing {
        registry: registry.clone(),
        state,
        current: current_entries(&history),
        history,
    })
}

impl Listing {
    /// Human output.
    pub fn to_text(&self) -> String {
        let mut lines = vec![
            format!("registry {}", self.registry),
            format!("  publisher  {}", hex::encode(self.state.publisher)),
            format!("  seqno      {}", self.state.seqno),
            format!("  registered {}", self.state.active),
        ];
        for entry in &self.current {
            lines.push(format!(
                "    {:<18} {} since {}",
                entry.kind,
                hex::encode(entry.value),
                utc(entry.added_at)
            ));
        }
        lines.push(format!("  history    {} events", self.state.event_count));
        for (index, event) in self.history.iter().enumerate() {
            lines.push(format!(
                "    #{index:<4} {} {:<6} {:<18} {}",
                utc(event.at),
                event.action_name(),
                event.kind,
                hex::encode(event.value)
            ));
        }
        lines.join("\n")
    }

    /// JSON output.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "registry": self.registry.to_string(),
            "publisher": hex::encode(self.state.publisher),
            "seqno": self.state.seqno,
            "registered": self.current.iter().map(|e| serde_json::json!({
                "kind": e.kind.name(),
                "value": hex::encode(e.value),
                "added_at": e.added_at,
            })).collect::<Vec<_>>(),
            "history": self.history.iter().map(|e| serde_json::json!({
                "action": e.action_name(),
                "kind": e.kind.name(),
                "value": hex::encode(e.value),
                "at": e.at,
            })).collect::<Vec<_>>(),
        })
    }
}
