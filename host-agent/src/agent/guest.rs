//! One guest as the agent sees it: is it alive, has its current boot passed the operator's
//! attestation policy, is it drained, and how far has its journal been collected.
//!
//! The relay follows this state and nothing else: a guest gets clients only while it is
//! healthy, verified, not drained by the operator, and not suspect. A guest becomes
//! suspect when the ledger refuses one of its receipts (a gap, a fork, totals that do not
//! add up, a bad signature): its counting can no longer be trusted, so it gets no new
//! clients until the operator has looked and undrains it.
//!
//! The receipt key the collector checks against comes only from verified evidence, and is
//! recorded in the ledger before the first receipt under it is stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cocoon_attestation::Verified;
use cocoon_client::Attestor;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::agent::config::{GuestSection, HealthSection};
use crate::agent::metrics::{flag, guest_label, AgentMetrics};
use crate::agent::SharedLedger;
use crate::error::{Error, Result};
use crate::ledger::EpochInfo;
use crate::relay::Upstream;
use crate::vm::health::HealthProbe;
use crate::vm::verify::{attest, summary};

/// What the latest attestation check of a guest found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Verification {
    /// Not checked yet, or to be checked again (the guest restarted or was unhealthy).
    Pending,
    Verified {
        /// Unix seconds.
        at: u64,
        tee: String,
        simulated: bool,
        debug: bool,
        tcb_status: Option<String>,
        measurements: BTreeMap<String, String>,
        /// The measured runtime config digest the evidence commits to.
        config_digest: Option<String>,
        /// Hex; the key every receipt of this boot must verify under.
        receipt_key: String,
        certificate_sha256: Option<String>,
    },
    Failed {
        at: u64,
        detail: String,
    },
}

impl Verification {
    /// Whether the current boot passed the policy.
    pub fn is_verified(&self) -> bool {
        matches!(self, Verification::Verified { .. })
    }
}

/// How collection from the guest's journal stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectorState {
    /// The highest journal index in the ledger under the current key.
    pub cursor: u64,
    /// The newest receipt the guest said it had signed.
    pub guest_last_index: u64,
    pub last_success_at: Option<u64>,
    pub last_error: Option<String>,
    /// Receipts stored / refused by this agent process.
    pub stored: u64,
    pub refused: u64,
}

/// Everything the admin API shows about a guest.
#[derive(Debug, Clone, Serialize)]
pub struct GuestState {
    pub healthy: bool,
    pub health_detail: Option<String>,
    pub verification: Verification,
    /// Drained by the operator.
    pub drained: bool,
    /// Why the ledger stopped trusting this guest's receipts, if it did.
    pub suspect: Option<String>,
    pub collector: CollectorState,
}

/// One configured guest.
pub struct GuestHandle {
    pub config: GuestSection,
    pub upstream: Arc<Upstream>,
    attestor: Attestor,
    state: Mutex<GuestState>,
    /// Wakes the watcher to verify again now (the collector saw a new receipt key).
    reverify: Notify,
    metrics: AgentMetrics,
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl GuestHandle {
    pub fn new(config: GuestSection, attestor: Attestor, metrics: AgentMetrics) -> Arc<Self> {
        let upstream = Upstream::new(config.name.clone(), config.address.clone());
        Arc::new(Self {
            config,
            upstream,
            attestor,
            state: Mutex::new(GuestState {
                healthy: false,
                health_detail: None,
                verification: Verification::Pending,
                drained: false,
                suspect: None,
                collector: CollectorState::default(),
            }),
            reverify: Notify::new(),
            metrics,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn lock(&self) -> MutexGuard<'_, GuestState> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the current state.
    pub fn state(&self) -> GuestState {
        self.lock().clone()
    }

    /// The verified receipt key, while the current boot is verified.
    pub fn receipt_key(&self) -> Option<[u8; 32]> {
        match &self.lock().verification {
            Verification::Verified { receipt_key, .. } => decode_key(receipt_key).ok(),
            _ => None,
        }
    }

    /// Applies a change to the state, then makes the relay and the gauges follow it.
    fn update(&self, change: impl FnOnce(&mut GuestState)) {
        let mut state = self.lock();
        change(&mut state);
        let verified = state.verification.is_verified();
        let held_back = state.drained || state.suspect.is_some();
        self.upstream.set_drained(held_back);
        self.upstream.set_serving(state.healthy && verified);
        let label = guest_label(self.name());
        self.metrics
            .guest_healthy
            .get_or_create(&label)
            .set(flag(state.healthy));
        self.metrics
            .guest_verified
            .get_or_create(&label)
            .set(flag(verified));
        self.metrics
            .guest_drained
            .get_or_create(&label)
            .set(flag(held_back));
    }

    /// The operator drains or undrains the guest. Undraining also clears a suspicion: the
    /// operator has looked at the refused receipts.
    pub fn set_drained(&self, drained: bool) {
        self.update(|s| {
            s.drained = drained;
            if !drained {
                s.suspect = None;
            }
        });
    }

    /// The ledger refused a receipt of this guest: no new clients until the operator
    /// undrains it.
    pub fn mark_suspect(&self, why: String) {
        self.update(|s| s.suspect = Some(why));
    }

    /// Marks the guest verified with `key` without a check (the collector's tests stand
    /// in for attestation, which needs a real guest).
    #[cfg(test)]
    pub(crate) fn assume_verified(&self, key: [u8; 32]) {
        self.update(|s| {
            s.healthy = true;
            s.verification = Verification::Verified {
                at: now_secs(),
                tee: "tdx".into(),
                simulated: true,
                debug: false,
                tcb_status: None,
                measurements: BTreeMap::new(),
                config_digest: None,
                receipt_key: hex::encode(key),
                certificate_sha256: None,
            };
        });
    }

    /// Asks for a fresh attestation check now.
    pub fn request_reverify(&self) {
        self.reverify.notify_one();
    }

    pub(crate) fn update_collector(&self, change: impl FnOnce(&mut CollectorState)) {
        change(&mut self.lock().collector);
    }

    /// Checks the guest's attestation; on success records the receipt key in the ledger
    /// (before anything is collected under it) and lets the relay use the guest.
    pub async fn verify(&self, ledger: &SharedLedger, timeout: Duration) -> Result<()> {
        let address = &self.config.address;
        let outcome = async {
            let verified = attest(address, &self.attestor, timeout).await?;
            let key = session_receipt_key(address, &verified.certificate, &verified.session)?;
            let info = EpochInfo {
                tee: verified.certificate.tee.to_string(),
                simulated: verified.certificate.simulated,
                config_digest: verified.certificate.config_digest.clone(),
                verified_at: now_secs(),
            };
            let name = self.name().to_string();
            ledger
                .run(move |l| l.record_verification(&name, &key, &info))
                .await?;
            Ok::<_, Error>((verified.certificate, key))
        }
        .await;
        match outcome {
            Ok((verified, key)) => {
                info!(guest = self.name(), "verified: {}", summary(&verified));
                self.update(|s| {
                    s.verification = verification(&verified, &key);
                    // A verified guest answered over TLS just now.
                    s.healthy = true;
                    s.health_detail = None;
                });
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .verifications_failed
                    .get_or_create(&guest_label(self.name()))
                    .inc();
                let detail = e.to_string();
                self.update(|s| {
                    s.verification = Verification::Failed {
                        at: now_secs(),
                        detail: detail.clone(),
                    }
                });
                Err(e)
            }
        }
    }

    /// Verifies, probes and re-verifies the guest until the task is dropped.
    pub async fn watch(self: Arc<Self>, ledger: SharedLedger, health: HealthSection) {
        let probe = match HealthProbe::new(self.config.address.clone(), health.probe_timeout()) {
            Ok(probe) => probe,
            Err(e) => {
                error!(guest = self.name(), "cannot build the health probe: {e}");
                return;
            }
        };
        let mut failures = 0u32;
        let mut verified_at = tokio::time::Instant::now();
        loop {
            let verified = self.lock().verification.is_verified();
            if !verified {
                match self.verify(&ledger, health.verify_timeout()).await {
                    Ok(()) => {
                        failures = 0;
                        verified_at = tokio::time::Instant::now();
                    }
                    Err(e) => {
                        warn!(guest = self.name(), "not verified: {e}");
                        tokio::time::sleep(health.interval()).await;
                    }
                }
                continue;
            }
            // Verified again in place (periodically, or when the collector saw a new
            // receipt key): open connections are cut only if the check fails.
            let reverify_now = tokio::select! {
                _ = tokio::time::sleep(health.interval()) => verified_at.elapsed() >= health.reverify(),
                _ = self.reverify.notified() => {
                    info!(guest = self.name(), "verifying again (its receipt key changed)");
                    true
                }
            };
            if reverify_now {
                match self.verify(&ledger, health.verify_timeout()).await {
                    Ok(()) => {
                        failures = 0;
                        verified_at = tokio::time::Instant::now();
                    }
                    Err(e) => warn!(guest = self.name(), "verification failed again: {e}"),
                }
                continue;
            }
            match probe.check().await {
                Ok(()) => {
                    failures = 0;
                    if !self.lock().healthy {
                        self.update(|s| {
                            s.healthy = true;
                            s.health_detail = None;
                        });
                    }
                }
                Err(e) => {
                    failures += 1;
                    warn!(guest = self.name(), failures, "health probe failed: {e}");
                    if failures >= health.failures_before_unhealthy {
                        // Whatever answers next may be a new boot: verify it first.
                        self.update(|s| {
                            s.healthy = false;
                            s.health_detail = Some(e.to_string());
                            s.verification = Verification::Pending;
                        });
                    }
                }
            }
        }
    }
}

/// The receipt key both pieces of evidence bind (they come from one boot, so they must
/// agree).
fn session_receipt_key(
    address: &str,
    certificate: &Verified,
    session: &Verified,
) -> Result<[u8; 32]> {
    let fail = |detail: &str| Error::Attestation {
        address: address.to_string(),
        detail: detail.to_string(),
    };
    let key = certificate
        .receipt_key
        .as_deref()
        .ok_or_else(|| fail("the evidence binds no receipt key: the guest has no collector"))?;
    if session.receipt_key.as_deref() != Some(key) {
        return Err(fail(
            "the certificate's and the session's evidence bind different receipt keys",
        ));
    }
    decode_key(key).map_err(|e| fail(&e))
}

fn decode_key(hex_key: &str) -> std::result::Result<[u8; 32], String> {
    hex::decode(hex_key)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("receipt key {hex_key:?} is not 32 bytes of hex"))
}

fn verification(verified: &Verified, key: &[u8; 32]) -> Verification {
    Verification::Verified {
        at: now_secs(),
        tee: verified.tee.to_string(),
        simulated: verified.simulated,
        debug: verified.debug,
        tcb_status: verified.tcb_status.clone(),
        measurements: verified
            .measurements
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        config_digest: verified.config_digest.clone(),
        receipt_key: hex::encode(key),
        certificate_sha256: verified.certificate.as_ref().map(|c| c.sha256.clone()),
    }
}

/// Parses a hex receipt key as the guest's internal API states it.
pub fn parse_key(hex_key: &str) -> Option<[u8; 32]> {
    decode_key(hex_key).ok()
}
