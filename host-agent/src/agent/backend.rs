//! What the admin API reads and changes in a running agent: guests, the ledger, metrics.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::admin::AdminBackend;
use crate::agent::guest::GuestHandle;
use crate::agent::SharedLedger;
use crate::error::{Error, Result};

pub(crate) struct AgentBackend {
    pub started: Instant,
    pub guests: Vec<Arc<GuestHandle>>,
    pub ledger: SharedLedger,
    pub registry: Registry,
    /// The settlement wallet, when `[billing]` is on.
    pub wallet: Option<crate::settle::settler::SharedWalletStatus>,
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Task(format!("encoding JSON: {e}")))
}

impl AgentBackend {
    fn guest(&self, name: &str) -> Result<&Arc<GuestHandle>> {
        self.guests
            .iter()
            .find(|g| g.name() == name)
            .ok_or_else(|| Error::UnknownGuest {
                name: name.to_string(),
            })
    }

    fn guest_json(guest: &GuestHandle) -> Result<Value> {
        let state = guest.state();
        Ok(json!({
            "name": guest.name(),
            "address": guest.config.address,
            "internal_address": guest.config.internal_address,
            "serving": guest.upstream.is_serving(),
            "accepting_new_connections": guest.upstream.is_serving() && !guest.upstream.is_drained(),
            "open_connections": guest.upstream.active(),
            "healthy": state.healthy,
            "health_detail": state.health_detail,
            "verification": to_json(&state.verification)?,
            "drained": state.drained,
            "suspect": state.suspect,
            "collector": to_json(&state.collector)?,
        }))
    }
}

impl AdminBackend for AgentBackend {
    fn status(&self) -> Result<Value> {
        let totals = self.ledger.run_blocking(|l| l.totals())?;
        let guests: Vec<Value> = self
            .guests
            .iter()
            .map(|g| {
                let state = g.state();
                json!({
                    "name": g.name(),
                    "serving": g.upstream.is_serving(),
                    "drained": state.drained,
                    "suspect": state.suspect.is_some(),
                    "verified": state.verification.is_verified(),
                    "open_connections": g.upstream.active(),
                })
            })
            .collect();
        let billing = match &self.wallet {
            None => Value::Null,
            Some(wallet) => {
                let wallet = wallet.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let totals = self.ledger.run_blocking(|l| l.settlement_totals())?;
                json!({
                    "wallet": to_json(&wallet)?,
                    "settled_nanoton": totals.settled_nanoton.to_string(),
                    "gas_nanoton": totals.gas_nanoton.to_string(),
                    "settlements": totals.settlements,
                    "vouchers": totals.vouchers,
                    "refused_vouchers": totals.refused_vouchers,
                })
            }
        };
        Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "guests": guests,
            "ledger": to_json(&totals)?,
            "billing": billing,
        }))
    }

    fn receipt_proof(&self, id: &str) -> Result<Value> {
        let id = id.to_string();
        let (proof, receipt) = self.ledger.run_blocking(move |l| l.receipt_proof(&id))?;
        Ok(json!({ "proof": to_json(&proof)?, "receipt": receipt }))
    }

    fn settlements(&self, limit: usize) -> Result<Value> {
        let settlements = self.ledger.run_blocking(|l| l.recent_settlements(limit))?;
        Ok(json!({
            "object": "list",
            "billing": self.wallet.is_some(),
            "data": to_json(&settlements)?,
        }))
    }

    fn guests(&self) -> Result<Value> {
        let guests = self
            .guests
            .iter()
            .map(|g| Self::guest_json(g))
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({ "object": "list", "data": guests }))
    }

    fn usage(&self, account: Option<&str>) -> Result<Value> {
        let usage = self.ledger.run_blocking(|l| l.usage(account))?;
        Ok(json!({ "object": "list", "data": to_json(&usage)? }))
    }

    fn export_receipts(&self, since: i64, limit: usize) -> Result<Vec<Value>> {
        let receipts = self.ledger.run_blocking(|l| l.export(since, limit))?;
        receipts.iter().map(to_json).collect()
    }

    fn set_drained(&self, guest: &str, drained: bool) -> Result<Value> {
        let handle = self.guest(guest)?;
        handle.set_drained(drained);
        tracing::info!(guest, drained, "changed by the admin API");
        Self::guest_json(handle)
    }

    fn metrics(&self) -> Result<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| Error::Task(format!("encoding metrics: {e}")))?;
        Ok(text)
    }
}
