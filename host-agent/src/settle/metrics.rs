//! Settlement metrics: settlements by state, what landed, what is still owed, what gas
//! cost. Counters start at zero with each process, as Prometheus expects; the durable
//! totals are the ledger's (`GET /v1/settlements`, `/v1/status`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ledger::settlements::SettlementState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Every settlement family.
#[derive(Default, Clone)]
pub struct SettleMetrics {
    /// Settlements entering each state (`pending` when stored, `sent`, then one of
    /// `confirmed`, `expired`, `failed`).
    pub settlements: Family<StateLabel, Counter>,
    /// Nanoton the escrows paid out for this agent's charges.
    pub settled: Counter,
    /// Nanoton owed by stored vouchers above what the chain has paid (last round).
    pub unsettled: Gauge,
    /// Nanoton the wallet spent on settlements (charge values and fees).
    pub gas: Counter,
    /// Failed rounds of reading escrows for the guests.
    pub escrow_errors: Counter,
}

impl SettleMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cocoon");
        r.register(
            "settlements",
            "Settlements entering each state (pending, sent, confirmed, expired, failed)",
            self.settlements.clone(),
        );
        r.register(
            "settled_nanoton",
            "Nanoton the escrows paid for this agent's charges",
            self.settled.clone(),
        );
        r.register(
            "unsettled_nanoton",
            "Nanoton owed by stored vouchers above what the chain has paid",
            self.unsettled.clone(),
        );
        r.register(
            "settlement_gas_nanoton",
            "Nanoton the wallet spent on settlements (charge values and fees)",
            self.gas.clone(),
        );
        r.register(
            "escrow_state_errors",
            "Failed rounds of reading escrows for the guests",
            self.escrow_errors.clone(),
        );
    }

    pub fn count(&self, state: SettlementState) {
        self.settlements
            .get_or_create(&StateLabel {
                state: state.as_str().to_string(),
            })
            .inc();
    }
}
