//! The agent's own metrics (the relay owns its connection and byte counters): guest
//! health and verification, receipts stored and refused, tokens and charge by model, and
//! how far the collector lags behind each guest.
//!
//! Counters start at zero with each agent process, as Prometheus expects; the durable
//! totals are the ledger's (`cocoon-host-agent usage`). Labels are bounded: guest names
//! come from the config, models from verified receipts, reasons from a fixed list. Account
//! ids are never labels (unbounded, and usage per account is the admin API's job).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use cocoon_attestation::receipt::UsageReceipt;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestLabel {
    pub guest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub guest: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    /// `prompt`, `cached` (part of prompt) or `completion`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

/// Every family the agent updates outside the relay.
#[derive(Default, Clone)]
pub struct AgentMetrics {
    /// 1 while the guest answers `/healthz`.
    pub guest_healthy: Family<GuestLabel, Gauge>,
    /// 1 while the guest's current boot has passed the attestation policy.
    pub guest_verified: Family<GuestLabel, Gauge>,
    /// 1 while the guest gets no new clients (drained by the operator, or suspect).
    pub guest_drained: Family<GuestLabel, Gauge>,
    pub receipts_stored: Family<GuestLabel, Counter>,
    pub receipts_duplicate: Family<GuestLabel, Counter>,
    pub receipts_refused: Family<RefusedLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub charge: Family<ModelLabel, Counter>,
    /// Receipts the guest has signed that are not in the ledger yet.
    pub uncollected_receipts: Family<GuestLabel, Gauge>,
    /// Age of the oldest receipt the last collection stored (0: none waited).
    pub ledger_lag_seconds: Family<GuestLabel, Gauge>,
    pub collector_errors: Family<GuestLabel, Counter>,
    pub verifications_failed: Family<GuestLabel, Counter>,
}

impl AgentMetrics {
    /// Registers every family under the `cocoon_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cocoon");
        r.register(
            "guest_healthy",
            "1 while the guest answers /healthz",
            self.guest_healthy.clone(),
        );
        r.register(
            "guest_verified",
            "1 while the guest's current boot passes the attestation policy",
            self.guest_verified.clone(),
        );
        r.register(
            "guest_drained",
            "1 while the guest gets no new clients (drained or suspect)",
            self.guest_drained.clone(),
        );
        r.register(
            "receipts_stored",
            "Receipts checked and stored in the ledger",
            self.receipts_stored.clone(),
        );
        r.register(
            "receipts_duplicate",
            "Receipts collected again that the ledger already held",
            self.receipts_duplicate.clone(),
        );
        r.register(
            "receipts_refused",
            "Receipts refused and kept apart (unverified_key, malformed, gap, fork, totals)",
            self.receipts_refused.clone(),
        );
        r.register(
            "tokens",
            "Tokens in stored receipts, by model and kind (prompt includes cached)",
            self.tokens.clone(),
        );
        r.register(
            "charge_nanoton",
            "Charge in stored receipts, by model",
            self.charge.clone(),
        );
        r.register(
            "uncollected_receipts",
            "Receipts the guest has signed that are not in the ledger yet",
            self.uncollected_receipts.clone(),
        );
        r.register(
            "ledger_lag_seconds",
            "Age of the oldest receipt the last collection stored",
            self.ledger_lag_seconds.clone(),
        );
        r.register(
            "collector_errors",
            "Failed receipt collections (guest unreachable, bad answer, ledger error)",
            self.collector_errors.clone(),
        );
        r.register(
            "verifications_failed",
            "Attestation checks of a guest that failed",
            self.verifications_failed.clone(),
        );
    }

    /// Counts the tokens and charge of receipts just stored.
    pub fn count_stored(&self, guest: &str, stored: &[UsageReceipt]) {
        self.receipts_stored
            .get_or_create(&guest_label(guest))
            .inc_by(stored.len() as u64);
        for receipt in stored {
            let tokens = &receipt.tokens;
            for (kind, n) in [
                ("prompt", tokens.prompt_tokens),
                ("cached", tokens.cached_tokens),
                ("completion", tokens.completion_tokens),
            ] {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: receipt.model.clone(),
                        kind: kind.to_string(),
                    })
                    .inc_by(n);
            }
            self.charge
                .get_or_create(&ModelLabel {
                    model: receipt.model.clone(),
                })
                .inc_by(receipt.charge);
        }
    }
}

pub fn guest_label(guest: &str) -> GuestLabel {
    GuestLabel {
        guest: guest.to_string(),
    }
}

/// 1 or 0, for gauges of a condition.
pub fn flag(on: bool) -> i64 {
    i64::from(on)
}
