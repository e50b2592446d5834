//! Moves receipts from a guest's journal into the ledger: fetch a page after the ledger's
//! cursor, check and store it in one transaction, and only after the commit tell the
//! guest it may drop them.
//!
//! That order is the whole crash-safety argument. The guest keeps every receipt until it
//! is acknowledged, and an acknowledgement is sent only for what is durable, so a crash at
//! any point loses nothing: after a restart the cursor (read from the ledger) says where
//! to continue, a page fetched twice is stored once (the ledger is idempotent), and what
//! was stored but not yet acknowledged is acknowledged on the next round. While the agent
//! is down the guest's journal fills and the guest answers 503 rather than serve unbilled.
//!
//! The receipts are checked against the key from the guest's verified evidence, never
//! the key the internal API names: when the two differ the guest has rebooted (or someone
//! else answers on its port), so nothing is stored until a fresh attestation check says
//! which key is genuine.

use std::sync::Arc;

use tracing::{debug, error, warn};

use crate::agent::config::CollectorSection;
use crate::agent::guest::{now_secs, parse_key, GuestHandle};
use crate::agent::internal_api::InternalApi;
use crate::agent::metrics::{guest_label, AgentMetrics, RefusedLabels};
use crate::agent::SharedLedger;
use crate::error::Result;

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// Stored (or found stored) this many; `more`: the page was full.
    Collected { stored: usize, more: bool },
    /// The guest is not verified yet; nothing was fetched.
    NotVerified,
    /// The guest signs with a key its verified evidence does not bind.
    KeyChanged,
}

/// Collects from one guest.
pub struct Collector {
    guest: Arc<GuestHandle>,
    api: InternalApi,
    ledger: SharedLedger,
    metrics: AgentMetrics,
    config: CollectorSection,
    /// The highest index acknowledged by this process under `acked_key` (the guest may
    /// still hold stored receipts a crashed predecessor never acknowledged).
    acked: Option<([u8; 32], u64)>,
}

impl Collector {
    pub fn new(
        guest: Arc<GuestHandle>,
        api: InternalApi,
        ledger: SharedLedger,
        metrics: AgentMetrics,
        config: CollectorSection,
    ) -> Self {
        Self {
            guest,
            api,
            ledger,
            metrics,
            config,
            acked: None,
        }
    }

    /// Runs rounds until the task is dropped: at once after a full page, else after the
    /// interval.
    pub async fn run(mut self) {
        loop {
            let pause = match self.round().await {
                Ok(Round::Collected { more: true, .. }) => continue,
                Ok(_) => self.config.interval(),
                Err(e) => {
                    self.metrics
                        .collector_errors
                        .get_or_create(&guest_label(self.guest.name()))
                        .inc();
                    warn!(guest = self.guest.name(), "receipt collection: {e}");
                    let detail = e.to_string();
                    self.guest.update_collector(|c| c.last_error = Some(detail));
                    self.config.interval()
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One fetch → store → acknowledge.
    pub async fn round(&mut self) -> Result<Round> {
        let Some(key) = self.guest.receipt_key() else {
            return Ok(Round::NotVerified);
        };
        let cursor = self.ledger.run(move |l| l.cursor(&key)).await?;
        let page = self.api.receipts(cursor, self.config.page_size).await?;
        if parse_key(&page.receipt_key) != Some(key) {
            warn!(
                guest = self.guest.name(),
                "the guest signs with a key its verified evidence does not bind; verifying again"
            );
            self.guest.request_reverify();
            return Ok(Round::KeyChanged);
        }
        let label = guest_label(self.guest.name());
        self.metrics
            .uncollected_receipts
            .get_or_create(&label)
            .set(i64::try_from(page.last_index.saturating_sub(cursor)).unwrap_or(i64::MAX));
        let fetched = page.data.len();
        let name = self.guest.name().to_string();
        let entries = page.data;
        let outcome = self
            .ledger
            .run(move |l| l.store(&name, &key, &entries))
            .await?;
        // Durable from here on: only now may the guest forget them.
        self.metrics
            .count_stored(self.guest.name(), &outcome.stored);
        self.metrics
            .receipts_duplicate
            .get_or_create(&label)
            .inc_by(outcome.duplicates as u64);
        for refusal in &outcome.refused {
            self.metrics
                .receipts_refused
                .get_or_create(&RefusedLabels {
                    guest: self.guest.name().to_string(),
                    reason: refusal.reason.as_str().to_string(),
                })
                .inc();
        }
        if let Some(first) = outcome.refused.first() {
            let why = format!(
                "{} refused receipt(s), first at journal index {}: {} ({})",
                outcome.refused.len(),
                first.index,
                first.reason.as_str(),
                first.detail
            );
            error!(
                guest = self.guest.name(),
                "{why}; the guest gets no new clients until undrained"
            );
            self.guest.mark_suspect(why);
        }
        if let Some((index, detail)) = outcome.refused_vouchers.first() {
            let why = format!(
                "{} refused voucher(s), first at journal index {index}: {detail}",
                outcome.refused_vouchers.len()
            );
            error!(
                guest = self.guest.name(),
                "{why}; the guest gets no new clients until undrained"
            );
            self.guest.mark_suspect(why);
        }
        let acked_before = match self.acked {
            Some((k, upto)) if k == key => upto,
            _ => 0,
        };
        if outcome.cursor > acked_before {
            let dropped = self.api.acknowledge(outcome.cursor).await?;
            debug!(
                guest = self.guest.name(),
                upto = outcome.cursor,
                dropped,
                "acknowledged"
            );
            self.acked = Some((key, outcome.cursor));
        }
        let stored = outcome.stored.len();
        let refused = outcome.refused.len() as u64;
        let cursor = outcome.cursor;
        let last_index = page.last_index;
        self.guest.update_collector(|c| {
            c.cursor = cursor;
            c.guest_last_index = last_index;
            c.last_success_at = Some(now_secs());
            c.last_error = None;
            c.stored += stored as u64;
            c.refused += refused;
        });
        Ok(Round::Collected {
            stored,
            more: fetched >= self.config.page_size,
        })
    }
}

#[cfg(test)]
#[path = "collector_tests.rs"]
mod tests;
