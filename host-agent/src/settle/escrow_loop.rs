//! Tells each guest what the chain says of the escrows it bills.
//!
//! Why the agent does this: the guest (inside the TEE) has no network but its host, and it
//! admits a request only if the account's escrow covers it (balance, stake, not closing,
//! minus what is owed but not settled). So, per guest, every `poll_secs`: ask which
//! escrows it needs (`GET /internal/v1/escrows`), read `get_escrow` and
//! `get_guest(its receipt key)` from the chain, and post them back (`POST
//! /internal/v1/escrows`). A host that lies here can only make the guest refuse service
//! (it reports less) or serve on credit the escrow will not pay (more): the vouchers and the
//! escrow's own checks bound what is ever paid, and the guest's credit bound is its own.
//!
//! The receipt key asked about is the one from the guest's verified evidence, never the
//! one the internal API names; when the two differ nothing is reported.

use std::sync::Arc;
use std::time::Duration;

use cocoon_billing::chain::Chain;
use tracing::{debug, warn};

use super::escrow::{self, address, within};
use super::metrics::SettleMetrics;
use crate::agent::guest::{parse_key, GuestHandle};
use crate::agent::internal_api::{EscrowReport, InternalApi};
use crate::error::Result;

/// Reports escrow state to one guest.
pub struct EscrowReporter {
    pub guest: Arc<GuestHandle>,
    pub api: InternalApi,
    pub chain: Arc<dyn Chain>,
    pub timeout: Duration,
    pub metrics: SettleMetrics,
}

fn saturate(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

impl EscrowReporter {
    /// Runs rounds every `poll` until the task is dropped.
    pub async fn run(self, poll: Duration) {
        loop {
            if let Err(e) = self.round().await {
                self.metrics.escrow_errors.inc();
                warn!(guest = self.guest.name(), "escrow state: {e}");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// One round; returns how many escrows the guest took (`None`: not verified, or the
    /// guest named another key).
    pub async fn round(&self) -> Result<Option<u64>> {
        let Some(key) = self.guest.receipt_key() else {
            return Ok(None);
        };
        let list = self.api.escrows().await?;
        if parse_key(&list.receipt_key) != Some(key) {
            warn!(
                guest = self.guest.name(),
                "the guest names a receipt key its verified evidence does not bind; not reporting"
            );
            return Ok(None);
        }
        let mut reports = Vec::with_capacity(list.data.len());
        for entry in &list.data {
            let addr = address(&entry.escrow)?;
            let report = match escrow::escrow_state(self.chain.as_ref(), self.timeout, &addr)
                .await?
            {
                // Nothing deployed (yet): nothing to serve on.
                None => {
                    let account = within(
                        self.timeout,
                        "account state",
                        self.chain.account_state(&addr),
                    )
                    .await?;
                    EscrowReport {
                        escrow: entry.escrow.clone(),
                        balance: saturate(account.balance),
                        stake: 0,
                        unlock_at: 0,
                        seq: 0,
                        charged: 0,
                    }
                }
                Some(state) => {
                    let guest =
                        escrow::guest_state(self.chain.as_ref(), self.timeout, &addr, &key).await?;
                    EscrowReport {
                        escrow: entry.escrow.clone(),
                        balance: saturate(state.balance),
                        stake: saturate(state.stake),
                        unlock_at: u64::from(state.unlock_at),
                        seq: guest.seq,
                        charged: saturate(guest.charged),
                    }
                }
            };
            reports.push(report);
        }
        if reports.is_empty() {
            return Ok(Some(0));
        }
        let used = self.api.report_escrows(&reports).await?;
        debug!(
            guest = self.guest.name(),
            escrows = reports.len(),
            used,
            "escrow state reported"
        );
        Ok(Some(used))
    }
}
