//! The relay's Prometheus metrics, named `cocoon_relay_*`.
//!
//! The relay module owns them so that whoever serves `/metrics` (the daemon's admin API)
//! only registers them, and every relay path counts the same way. Bytes are counted as
//! they are written, not when a connection closes, so a long stream shows progress.
//! Nothing here sees payload: only counts, guest names and fixed reasons.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::admission::Refusal;
use super::pump::CloseReason;

/// The relay's metric families. Clones of the handles are registered, so one
/// `RelayMetrics` can be registered once and shared (`Arc`) by relays.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    open: Family<GuestLabel, Gauge>,
    accepted: Family<GuestLabel, Counter>,
    refused: Family<RefusedLabel, Counter>,
    bytes: Family<BytesLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Direction {
    ToGuest,
    ToClient,
}

/// How a relayed connection ended (`reason` label): [`CloseReason`] without its detail.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Closed {
    Finished,
    Idle,
    TotalTimeout,
    Error,
    Cut,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuestLabel {
    guest: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabel {
    reason: Refusal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    guest: String,
    direction: Direction,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    guest: String,
    reason: Closed,
}

/// One connection's handles: its place in the open gauge (given back on drop) and the
/// byte counters its pumps add to.
pub(crate) struct ConnectionMeters {
    open: Gauge,
    pub(crate) to_guest: Counter,
    pub(crate) to_client: Counter,
    guest: String,
    closed: Family<ClosedLabels, Counter>,
}

impl RelayMetrics {
    /// Adds the relay's families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cocoon_relay_connections_open",
            "Connections relayed now, by guest",
            self.open.clone(),
        );
        registry.register(
            "cocoon_relay_connections",
            "Connections passed to a guest, by guest",
            self.accepted.clone(),
        );
        registry.register(
            "cocoon_relay_connections_refused",
            "Clients closed before reaching a guest, by reason (global_limit, source_limit, no_guest)",
            self.refused.clone(),
        );
        registry.register(
            "cocoon_relay_bytes",
            "Bytes relayed, by guest and direction (to_guest, to_client), counted as they flow",
            self.bytes.clone(),
        );
        registry.register(
            "cocoon_relay_connections_closed",
            "Relayed connections ended, by guest and reason (finished, idle, total_timeout, error, cut)",
            self.closed.clone(),
        );
    }

    pub(crate) fn refused(&self, reason: Refusal) {
        self.refused.get_or_create(&RefusedLabel { reason }).inc();
    }

    /// Counts a connection to `guest` and opens its meters.
    pub(crate) fn connection(&self, guest: &str) -> ConnectionMeters {
        let label = GuestLabel {
            guest: guest.to_string(),
        };
        self.accepted.get_or_create(&label).inc();
        let open = self.open.get_or_create_owned(&label);
        open.inc();
        let bytes = |direction| {
            self.bytes.get_or_create_owned(&BytesLabels {
                guest: guest.to_string(),
                direction,
            })
        };
        ConnectionMeters {
            open,
            to_guest: bytes(Direction::ToGuest),
            to_client: bytes(Direction::ToClient),
            guest: label.guest,
            closed: self.closed.clone(),
        }
    }
}

impl ConnectionMeters {
    /// Counts how the connection ended.
    pub(crate) fn closed(&self, reason: &CloseReason) {
        let reason = match reason {
            CloseReason::Finished => Closed::Finished,
            CloseReason::Idle => Closed::Idle,
            CloseReason::TotalTimeout => Closed::TotalTimeout,
            CloseReason::Error(_) => Closed::Error,
            CloseReason::Cut => Closed::Cut,
        };
        self.closed
            .get_or_create(&ClosedLabels {
                guest: self.guest.clone(),
                reason,
            })
            .inc();
    }
}

impl Drop for ConnectionMeters {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Writes a fixed label value.
fn label(encoder: &mut LabelValueEncoder, value: &str) -> std::fmt::Result {
    encoder.write_str(value)
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        label(
            encoder,
            match self {
                Self::GlobalLimit => "global_limit",
                Self::SourceLimit => "source_limit",
                Self::NoGuest => "no_guest",
            },
        )
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        label(
            encoder,
            match self {
                Self::ToGuest => "to_guest",
                Self::ToClient => "to_client",
            },
        )
    }
}

impl EncodeLabelValue for Closed {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        label(
            encoder,
            match self {
                Self::Finished => "finished",
                Self::Idle => "idle",
                Self::TotalTimeout => "total_timeout",
                Self::Error => "error",
                Self::Cut => "cut",
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &RelayMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn counts_connections_bytes_refusals_and_closes_under_their_labels() {
        let metrics = RelayMetrics::default();
        metrics.refused(Refusal::NoGuest);
        metrics.refused(Refusal::SourceLimit);
        metrics.refused(Refusal::SourceLimit);
        let first = metrics.connection("a");
        let second = metrics.connection("a");
        first.to_guest.inc_by(5);
        second.to_client.inc_by(7);
        first.closed(&CloseReason::TotalTimeout);
        drop(first);
        let out = text(&metrics);
        for line in [
            r#"cocoon_relay_connections_refused_total{reason="no_guest"} 1"#,
            r#"cocoon_relay_connections_refused_total{reason="source_limit"} 2"#,
            r#"cocoon_relay_connections_total{guest="a"} 2"#,
            r#"cocoon_relay_connections_open{guest="a"} 1"#,
            r#"cocoon_relay_bytes_total{guest="a",direction="to_guest"} 5"#,
            r#"cocoon_relay_bytes_total{guest="a",direction="to_client"} 7"#,
            r#"cocoon_relay_connections_closed_total{guest="a",reason="total_timeout"} 1"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
        second.closed(&CloseReason::Error("reset".into()));
        drop(second);
        let out = text(&metrics);
        assert!(out.contains(r#"cocoon_relay_connections_open{guest="a"} 0"#));
        assert!(
            out.contains(r#"cocoon_relay_connections_closed_total{guest="a",reason="error"} 1"#)
        );
    }
}
