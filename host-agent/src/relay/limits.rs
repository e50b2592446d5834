//! What one client may hold, and for how long.
//!
//! The host is where a hostile client meets the operator's resources first: without
//! limits one client could hold every socket (opening many connections), hold one forever
//! (a trickle of bytes that beats the idle timeout), or keep a slot waiting on a guest that
//! does not answer. Each limit closes one of those doors; each has a default an operator
//! should rarely need to change.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config_file::Checker;
use crate::error::Result;

/// The relay's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// How long the guest may take to accept a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Close a connection when no byte moved either way for this long (default 300 s).
    pub idle_timeout: Duration,
    /// Close a connection this long after it was accepted, busy or not; `None`: no limit.
    /// Default one hour: far above one streamed completion, yet a client trickling bytes
    /// cannot hold a slot for ever.
    pub max_connection_duration: Option<Duration>,
    /// Connections relayed at once, all clients together; more are closed at once
    /// (default 1024).
    pub max_connections: usize,
    /// Connections relayed at once from one client address (IPv6: one /64, what one
    /// subscriber is usually given); more are closed at once. Default 128, an eighth of
    /// the global limit: one client cannot take the relay for itself, and a NAT in front
    /// of many people still fits.
    pub max_connections_per_source: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_connection_duration: Some(Duration::from_secs(3600)),
            max_connections: 1024,
            max_connections_per_source: 128,
        }
    }
}

/// The duration a `..._secs` setting names, where 0 means no limit.
pub fn limit_from_secs(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// `[relay]` of a config file (the agent's and `vm run`'s): the public listener and the
/// limits, in seconds and counts; 0 seconds of total duration means no limit.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySection {
    pub listen: SocketAddr,
    /// Seconds a guest may take to accept a relayed connection.
    pub connect_timeout_secs: u64,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// A connection's longest life, busy or not (0: no limit).
    pub max_connection_secs: u64,
    /// Connections relayed at once, all clients together.
    pub max_connections: usize,
    /// Connections at once from one client address (IPv6: one /64).
    pub max_connections_per_source: usize,
}

impl Default for RelaySection {
    /// The relay's defaults ([`RelayLimits::default`], as `cocoon-host-agent relay`).
    fn default() -> Self {
        let limits = RelayLimits::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            connect_timeout_secs: limits.connect_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            max_connection_secs: limits
                .max_connection_duration
                .map_or(0, |total| total.as_secs()),
            max_connections: limits.max_connections,
            max_connections_per_source: limits.max_connections_per_source,
        }
    }
}

impl RelaySection {
    /// The relay's limits.
    pub fn limits(&self) -> RelayLimits {
        RelayLimits {
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connection_duration: limit_from_secs(self.max_connection_secs),
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
        }
    }

    /// Refuses timeouts and counts below 1, and a per-source limit above the global one.
    pub fn validate(&self, check: &Checker<'_>) -> Result<()> {
        check.positive(&[
            ("relay.connect_timeout_secs", self.connect_timeout_secs),
            ("relay.idle_timeout_secs", self.idle_timeout_secs),
            ("relay.max_connections", self.max_connections as u64),
            (
                "relay.max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
        ])?;
        check.require(
            self.max_connections_per_source <= self.max_connections,
            "relay.max_connections_per_source",
            "must not exceed relay.max_connections",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_seconds_means_no_limit() {
        assert_eq!(limit_from_secs(0), None);
        assert_eq!(limit_from_secs(7), Some(Duration::from_secs(7)));
    }
}
