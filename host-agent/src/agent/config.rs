//! The agent's config file (`cocoon-host-agent run --config FILE`, default
//! [`DEFAULT_CONFIG`]): the guests it fronts and how it checks them, where the ledger
//! lives, the admin listener and its token, and the relay's limits.
//!
//! Why a file: the operator states here what they accept (each guest's attestation policy
//! or signed manifest) and where billing data goes; a typo must stop the agent at start,
//! naming the key, not fall back to a default that bills nobody or trusts anybody. So every
//! table refuses unknown keys, values are checked before anything listens, and relative
//! paths are taken relative to the file's directory. `host-agent/examples/agent.toml` is a
//! complete example, parsed by the tests.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cocoon_client::args::{CollateralArgs, PolicyArgs};
use serde::Deserialize;

use crate::config_file::{anchor, anchor_policy, Checker, ConfigFile, Loaded};
use crate::error::Result;
use crate::relay::RelaySection;
use crate::settle::config::BillingSection;

/// Where `run` looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/cocoon/host-agent.toml";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub relay: RelaySection,
    pub admin: AdminSection,
    pub ledger: LedgerSection,
    #[serde(default)]
    pub collector: CollectorSection,
    #[serde(default)]
    pub health: HealthSection,
    /// `[[guest]]`, one or more.
    #[serde(rename = "guest")]
    pub guests: Vec<GuestSection>,
    /// `[billing]`: escrow settlement (none: receipts only).
    pub billing: Option<BillingSection>,
}

/// `[admin]`: status, usage, receipts export, drain, and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Loopback by default; another address needs `token_file`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token (at least 32 characters, e.g. `openssl rand -hex 32`).
    pub token_file: Option<PathBuf>,
    /// DANGER: serve the admin API without a token (loopback only): any local user can
    /// then drain guests and read every account's usage.
    #[serde(default)]
    pub allow_unauthenticated_loopback: bool,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9444))
}

/// `[ledger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// The SQLite file (created with its directory's permissions; WAL beside it).
    pub path: PathBuf,
}

/// `[collector]`: how receipts are fetched from each guest's internal API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorSection {
    /// Pause between collections when the guest had nothing more (a full page is followed
    /// at once by the next).
    pub interval_ms: u64,
    /// Receipts fetched (and stored in one transaction) per call, 1 to 1000.
    pub page_size: usize,
    /// Limit on each call to the internal API (connect, send, answer).
    pub timeout_secs: u64,
}

impl Default for CollectorSection {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            page_size: 1_000,
            timeout_secs: 10,
        }
    }
}

impl CollectorSection {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// `[health]`: liveness probes and attestation checks of each guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// Pause between `/healthz` probes.
    pub interval_secs: u64,
    /// Limit on each socket step of one probe.
    pub probe_timeout_secs: u64,
    /// Consecutive failed probes before a guest stops getting clients (and is verified
    /// again when it answers).
    pub failures_before_unhealthy: u32,
    /// Limit on one attestation check.
    pub verify_timeout_secs: u64,
    /// A serving guest is verified again this often (fresh evidence, current TCB).
    pub reverify_secs: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            interval_secs: 5,
            probe_timeout_secs: 5,
            failures_before_unhealthy: 3,
            verify_timeout_secs: 60,
            reverify_secs: 3_600,
        }
    }
}

impl HealthSection {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs(self.probe_timeout_secs)
    }
    pub fn verify_timeout(&self) -> Duration {
        Duration::from_secs(self.verify_timeout_secs)
    }
    pub fn reverify(&self) -> Duration {
        Duration::from_secs(self.reverify_secs)
    }
}

/// `[[guest]]`: one guest VM the agent fronts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSection {
    /// Unique name: in logs, metrics labels, the ledger, and `drain NAME`.
    pub name: String,
    /// `host:port` of the guest's HTTPS (RA-TLS) port: relayed to, probed, verified.
    pub address: String,
    /// `host:port` of the guest's internal API (receipt collection, plain HTTP; a port
    /// only the host reaches).
    pub internal_address: String,
    /// The bearer token the guest was started with (`--host-token-file`).
    pub host_token_file: PathBuf,
    /// What the guest must prove: the same keys as `cocoon-verify` (`manifest`,
    /// `manifest_key`, `policy`, `allow_simulated`, ...).
    #[serde(default)]
    pub attestation: PolicyArgs,
    #[serde(default)]
    pub collateral: CollateralArgs,
}

/// The agent's config file, loaded and checked.
pub type LoadedAgentConfig = Loaded<AgentConfig>;

impl ConfigFile for AgentConfig {
    fn resolve_paths(&mut self, base: &Path) {
        anchor(base, &mut self.ledger.path);
        if let Some(token) = &mut self.admin.token_file {
            anchor(base, token);
        }
        for guest in &mut self.guests {
            anchor(base, &mut guest.host_token_file);
            anchor_policy(base, &mut guest.attestation, &mut guest.collateral);
        }
        if let Some(billing) = &mut self.billing {
            billing.resolve_paths(base);
        }
    }

    fn validate(&self, check: &Checker<'_>) -> Result<()> {
        self.relay.validate(check)?;
        if let Some(billing) = &self.billing {
            billing.validate(check)?;
            let api = billing.local_chain.as_ref().and_then(|l| l.api_listen);
            check.require(
                api.is_none_or(|a| {
                    a != self.admin.listen && a != self.relay.listen || a.port() == 0
                }),
                "billing.local_chain.api_listen",
                "must differ from admin.listen and relay.listen",
            )?;
        }
        check.positive(&[
            ("collector.interval_ms", self.collector.interval_ms),
            ("collector.timeout_secs", self.collector.timeout_secs),
            ("health.interval_secs", self.health.interval_secs),
            ("health.probe_timeout_secs", self.health.probe_timeout_secs),
            (
                "health.failures_before_unhealthy",
                u64::from(self.health.failures_before_unhealthy),
            ),
            (
                "health.verify_timeout_secs",
                self.health.verify_timeout_secs,
            ),
            ("health.reverify_secs", self.health.reverify_secs),
        ])?;
        check.require(
            (1..=1000).contains(&self.collector.page_size),
            "collector.page_size",
            "must be from 1 to 1000 (the guest's largest page)",
        )?;
        check.require(
            !self.admin.allow_unauthenticated_loopback || self.admin.listen.ip().is_loopback(),
            "admin.allow_unauthenticated_loopback",
            "applies to a loopback admin.listen only",
        )?;
        check.require(
            self.admin.token_file.is_some() || self.admin.allow_unauthenticated_loopback,
            "admin.token_file",
            "missing: the admin API needs a bearer token (or, on loopback only, \
             allow_unauthenticated_loopback = true)",
        )?;
        check.require(
            self.admin.listen != self.relay.listen || self.relay.listen.port() == 0,
            "admin.listen",
            "must differ from relay.listen (the admin API is never on the public port)",
        )?;
        check.require(
            !self.guests.is_empty(),
            "guest",
            "list at least one [[guest]]",
        )?;
        let mut names = BTreeSet::new();
        for (i, guest) in self.guests.iter().enumerate() {
            let key = |field: &str| format!("guest[{i}].{field}");
            check.require(
                !guest.name.is_empty()
                    && guest
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                &key("name"),
                "must be non-empty: letters, digits, '-', '_', '.'",
            )?;
            check.require(
                names.insert(guest.name.as_str()),
                &key("name"),
                "used by another [[guest]]",
            )?;
            for (field, address) in [
                ("address", &guest.address),
                ("internal_address", &guest.internal_address),
            ] {
                check.require(
                    is_host_port(address),
                    &key(field),
                    "must be host:port (e.g. 127.0.0.1:8443)",
                )?;
            }
            check.require(
                guest.address != guest.internal_address,
                &key("internal_address"),
                "must differ from address (receipts never travel on the public port)",
            )?;
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host and a port number.
fn is_host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
