//! `cocoon-host-agent run`: the agent in front of one or more running guests.
//!
//! It relays clients to healthy, verified guests (least connections), collects each
//! guest's signed receipts into the SQLite ledger, and serves the admin API and metrics
//! on a listener of its own. It holds no secret a guest depends on: the receipts are
//! signed inside the TEE and the agent only stores what verifies under the key the
//! guest's attestation binds, so a compromised host can withhold receipts (and the guest
//! then stops serving) but not forge or alter one.

pub mod collector;
pub mod config;
pub mod guest;
pub mod internal_api;
pub mod metrics;

mod backend;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::admin::token::{check_strength, read_token_file};
use crate::admin::{serve_admin, AdminAuth};
use crate::agent::backend::AgentBackend;
use crate::agent::collector::Collector;
use crate::agent::config::LoadedAgentConfig;
use crate::agent::guest::GuestHandle;
use crate::agent::internal_api::InternalApi;
use crate::agent::metrics::AgentMetrics;
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::listen::listen;
use crate::relay::{serve_relay, RelayMetrics, UpstreamPool};
use crate::settle::chain_setup::Billing;
use crate::settle::escrow_loop::EscrowReporter;
use crate::settle::metrics::SettleMetrics;
use crate::settle::settler::{system_clock, Settler, SharedWalletStatus, WalletStatus};
use crate::vm::verify::policy_attestor;

/// The ledger, shared by the collectors and the admin API. SQLite calls block, so they
/// run on tokio's blocking pool, one at a time.
#[derive(Clone)]
pub struct SharedLedger {
    inner: Arc<Mutex<Ledger>>,
}

impl SharedLedger {
    pub fn new(ledger: Ledger) -> Self {
        Self {
            inner: Arc::new(Mutex::new(ledger)),
        }
    }

    /// Runs `f` on the ledger on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| Error::Task(format!("ledger task: {e}")))?
    }

    /// Runs `f` on the ledger in the calling thread (for callers already on the blocking
    /// pool, like the admin API's).
    pub fn run_blocking<T>(&self, f: impl FnOnce(&mut Ledger) -> Result<T>) -> Result<T> {
        f(&mut lock(&self.inner))
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // SQLite rolls back an unfinished transaction itself; the connection stays usable.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens the ledger at `path`, on the blocking pool.
async fn open_ledger(path: PathBuf) -> Result<Ledger> {
    tokio::task::spawn_blocking(move || Ledger::open(&path))
        .await
        .map_err(|e| Error::Task(format!("opening the ledger: {e}")))?
}

/// Runs the agent until `shutdown` resolves. Prints `cocoon-host-agent: admin API on
/// http://ADDR` and then `cocoon-host-agent: relaying ADDR -> ...` once both listen.
pub async fn run_agent(
    loaded: &LoadedAgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = &loaded.config;
    let metrics = AgentMetrics::default();
    let relay_metrics = Arc::new(RelayMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    relay_metrics.register(&mut registry);

    // Everything that can be refused is checked before anything listens.
    let mut guests = Vec::new();
    let mut apis = Vec::new();
    for (i, guest) in config.guests.iter().enumerate() {
        // The guest refuses a guessable host token too; the same rule as the admin token's.
        let key = format!("guest[{i}].host_token_file");
        let token =
            read_token_file(&guest.host_token_file).map_err(|e| loaded.bad(&key, e.to_string()))?;
        check_strength(&token).map_err(|message| {
            loaded.bad(
                &key,
                format!("{}: {message}", guest.host_token_file.display()),
            )
        })?;
        let (attestor, warning) = policy_attestor(&guest.attestation, &guest.collateral)
            .map_err(|e| loaded.bad(&format!("guest[{i}].attestation"), e.to_string()))?;
        if let Some(warning) = warning {
            warn!(guest = %guest.name, "{warning}");
        }
        apis.push(InternalApi::new(
            guest.internal_address.clone(),
            token,
            config.collector.timeout(),
        ));
        guests.push(GuestHandle::new(guest.clone(), attestor, metrics.clone()));
    }
    let auth = AdminAuth::new(
        config.admin.listen,
        config.admin.token_file.as_deref(),
        config.admin.allow_unauthenticated_loopback,
    )?;
    // Billing: the wallet and the chain (the embedded one's state file is loaded here).
    let billing = match &config.billing {
        Some(section) => Some(Billing::open(section, &loaded.checker())?),
        None => None,
    };
    let settle_metrics = SettleMetrics::default();
    let wallet_status: Option<SharedWalletStatus> = billing
        .as_ref()
        .map(|_| Arc::new(Mutex::new(WalletStatus::default())));
    if billing.is_some() {
        settle_metrics.register(&mut registry);
    }
    let ledger = SharedLedger::new(open_ledger(config.ledger.path.clone()).await?);
    let (admin_listener, admin_address) = listen(config.admin.listen).await?;
    let (relay_listener, relay_address) = listen(config.relay.listen).await?;
    let chain_api = match &billing {
        Some(billing) => billing.serve_local_api().await?,
        None => None,
    };

    let backend = Arc::new(AgentBackend {
        started: Instant::now(),
        guests: guests.clone(),
        ledger: ledger.clone(),
        registry,
        wallet: wallet_status.clone(),
    });
    let pool = Arc::new(UpstreamPool::new(
        guests.iter().map(|g| g.upstream.clone()).collect(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    if let (Some(billing), Some(status)) = (&billing, &wallet_status) {
        for (guest, api) in guests.iter().zip(&apis) {
            let reporter = EscrowReporter {
                guest: guest.clone(),
                api: api.clone(),
                chain: billing.chain.clone(),
                timeout: billing.section.chain_timeout(),
                metrics: settle_metrics.clone(),
            };
            tasks.spawn(reporter.run(billing.section.poll()));
        }
        let settler = Settler::new(
            billing.chain.clone(),
            billing.wallet.clone(),
            ledger.clone(),
            billing.params(),
            system_clock(),
            settle_metrics.clone(),
            status.clone(),
        );
        tasks.spawn(settler.run(billing.section.poll()));
        println!(
            "cocoon-host-agent: settling escrow charges from wallet {} ({:?} chain)",
            billing.wallet.address(),
            billing.section.chain
        );
    }
    if let Some(server) = &chain_api {
        println!(
            "cocoon-host-agent: TON HTTP API of the local chain on {}",
            server.base_url()
        );
    }
    for (guest, api) in guests.iter().zip(apis) {
        tasks.spawn(guest.clone().watch(ledger.clone(), config.health.clone()));
        let collector = Collector::new(
            guest.clone(),
            api,
            ledger.clone(),
            metrics.clone(),
            config.collector.clone(),
        );
        tasks.spawn(collector.run());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tasks.spawn(serve_admin(
        admin_listener,
        auth,
        backend,
        until_stopped(stopped.clone()),
    ));
    tasks.spawn(serve_relay(
        relay_listener,
        pool,
        config.relay.limits(),
        relay_metrics,
        until_stopped(stopped),
    ));
    println!("cocoon-host-agent: admin API on http://{admin_address}");
    println!(
        "cocoon-host-agent: relaying {relay_address} -> {} guest(s) once verified (TLS passes \
         through untouched); ledger {}",
        guests.len(),
        config.ledger.path.display()
    );
    tokio::select! {
        () = shutdown => info!("stopping"),
        Some(ended) = tasks.join_next() => {
            // Every task runs until stopped: one that ends is a fault.
            let _ = stop.send(true);
            return Err(Error::Task(format!("a task of the agent ended unexpectedly: {ended:?}")));
        }
    }
    let _ = stop.send(true);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    if let Some(server) = chain_api {
        server.shutdown().await;
    }
    Ok(())
}
