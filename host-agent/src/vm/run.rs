//! `vm run`: the supervisor's state machine ([`Supervisor`]) wired to the real things it
//! commands: the QEMU process, the health probe, the attestation check, the relay's guest (whose
//! serving switch opens and shuts the relay) and
//! the backoff timer.
//!
//! One loop: do the actions the machine asked for, wait for the next event (QEMU exited,
//! the current step finished, or shutdown), hand it to the machine. At most one step runs
//! at a time (waiting for health, verifying, watching a serving guest's health, or backing
//! off), and a new step replaces the old one, so a late result from a stopped guest can
//! never reach the machine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_client::Attestor;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::listen::listen;
use crate::relay::{serve_relay, RelayMetrics, Upstream, UpstreamPool};
use crate::vm::config::{LoadedConfig, SuperviseSection};
use crate::vm::health::HealthProbe;
use crate::vm::process::QemuProcess;
use crate::vm::qemu::{kvm_usable, qemu_args, Accel};
use crate::vm::supervise::{Action, Event, RestartPolicy, State, Supervisor};
use crate::vm::verify::{operator_attestor, verify_guest};
use crate::vm::vfio::{preflight, HostPaths};

/// Runs the VM described by `loaded` and the relay in front of it until `shutdown`
/// resolves (then `Ok`) or the supervisor gives up (then [`Error::GaveUp`]).
pub async fn run_vm(
    loaded: &LoadedConfig,
    host_paths: &HostPaths,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = &loaded.config;
    loaded.check_input_files()?;
    if let Some(gpu) = &config.gpu {
        for device in preflight(&gpu.devices, host_paths)? {
            info!(address = %device.address, iommu_group = %device.iommu_group, "GPU ready for vfio-pci");
        }
    }
    let accel = Accel::resolve(config.vm.accel, kvm_usable);
    let args = qemu_args(loaded, accel, &loaded.kernel_cmdline()?);
    let (attestor, warning) = operator_attestor(loaded)?;
    if let Some(warning) = warning {
        warn!("{warning}");
    }
    let guest_address = format!("127.0.0.1:{}", config.network.https_host_port);
    let supervise = &config.supervise;
    let probe = HealthProbe::new(guest_address.clone(), supervise.probe_timeout())?;

    let relay = &config.relay;
    let (listener, listening) = listen(relay.listen).await?;
    println!(
        "cocoon-host-agent: relaying {listening} -> {guest_address} once the guest is verified \
         (TLS passes through untouched)"
    );
    // Not serving until the supervisor has verified the guest's current boot.
    let guest = Upstream::new("guest", guest_address.clone());
    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relay_task = tokio::spawn(serve_relay(
        listener,
        Arc::new(UpstreamPool::new(vec![guest.clone()])),
        relay.limits(),
        Arc::new(RelayMetrics::default()),
        async {
            let _ = relay_stopped.await;
        },
    ));

    let driver = Driver {
        loaded,
        args,
        probe,
        attestor,
        guest_address,
        guest,
    };
    let outcome = driver.supervise(shutdown).await;
    let _ = stop_relay.send(());
    if let Err(e) = relay_task.await {
        warn!("relay task ended abnormally: {e}");
    }
    outcome
}

/// The restart policy `[supervise]` sets.
pub fn restart_policy(supervise: &SuperviseSection) -> RestartPolicy {
    RestartPolicy {
        backoff_initial: Duration::from_millis(supervise.restart_backoff_initial_ms),
        backoff_max: Duration::from_millis(supervise.restart_backoff_max_ms),
        max_restarts: supervise.max_restarts,
        stable_after: Duration::from_secs(supervise.stable_after_secs),
    }
}

/// The step in progress: resolves to the event it ends with.
type Step = Pin<Box<dyn Future<Output = Event> + Send>>;

/// What woke the loop.
enum Wake {
    Shutdown,
    QemuExited(String),
    Step(Event),
}

/// Everything the actions need.
struct Driver<'a> {
    loaded: &'a LoadedConfig,
    args: Vec<String>,
    probe: HealthProbe,
    attestor: Attestor,
    guest_address: String,
    /// The relay's one guest: serving exactly while verified and healthy.
    guest: Arc<Upstream>,
}

impl Driver<'_> {
    async fn supervise(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let supervise = &self.loaded.config.supervise;
        let clock = Instant::now();
        let mut machine = Supervisor::new(restart_policy(supervise));
        let mut qemu: Option<QemuProcess> = None;
        let mut step: Option<Step> = None;
        let mut actions = machine.start();
        tokio::pin!(shutdown);
        loop {
            // An action may lead to more (a launch is reported at once): run them all.
            while !actions.is_empty() {
                for action in std::mem::take(&mut actions) {
                    match action {
                        Action::Launch => {
                            let event =
                                match QemuProcess::spawn(&self.loaded.config.vm.qemu, &self.args) {
                                    Ok(process) => {
                                        qemu = Some(process);
                                        Event::Launched
                                    }
                                    Err(e) => Event::LaunchFailed(e.to_string()),
                                };
                            actions.extend(self.apply(&mut machine, event, clock));
                        }
                        Action::AwaitHealthy => {
                            step = Some(Box::pin(await_healthy(
                                self.probe.clone(),
                                supervise.clone(),
                            )))
                        }
                        Action::Verify => {
                            let (address, attestor) =
                                (self.guest_address.clone(), self.attestor.clone());
                            let timeout = supervise.verify_timeout();
                            step = Some(Box::pin(async move {
                                match verify_guest(&address, &attestor, timeout).await {
                                    Ok(summary) => Event::Verified(summary),
                                    Err(e) => Event::VerificationFailed(e.to_string()),
                                }
                            }))
                        }
                        Action::OpenRelay => {
                            self.guest.set_serving(true);
                            step = Some(Box::pin(watch_health(
                                self.probe.clone(),
                                supervise.clone(),
                            )));
                        }
                        Action::CloseRelay => {
                            self.guest.set_serving(false);
                        }
                        Action::StopQemu => {
                            step = None;
                            if let Some(process) = qemu.take() {
                                process.stop().await;
                            }
                        }
                        Action::Wait(delay) => {
                            step = Some(Box::pin(async move {
                                tokio::time::sleep(delay).await;
                                Event::BackoffElapsed
                            }))
                        }
                        Action::Exit(message) => {
                            error!("{message}");
                            return Err(Error::GaveUp(message));
                        }
                    }
                }
            }
            let wake = tokio::select! {
                () = &mut shutdown => Wake::Shutdown,
                status = async {
                    match qemu.as_mut() {
                        Some(process) => process.exited().await,
                        None => std::future::pending().await,
                    }
                } => Wake::QemuExited(status),
                event = async {
                    match step.as_mut() {
                        Some(running) => running.await,
                        None => std::future::pending().await,
                    }
                } => Wake::Step(event),
            };
            let event = match wake {
                Wake::Shutdown => {
                    info!("shutting down: closing the relay and stopping QEMU");
                    self.guest.set_serving(false);
                    if let Some(process) = qemu.take() {
                        process.stop().await;
                    }
                    return Ok(());
                }
                Wake::QemuExited(status) => {
                    // Already reaped: nothing left to stop.
                    qemu = None;
                    Event::QemuExited(status)
                }
                Wake::Step(event) => {
                    step = None;
                    event
                }
            };
            actions = self.apply(&mut machine, event, clock);
        }
    }

    /// Hands `event` to the machine and logs what it changed.
    fn apply(&self, machine: &mut Supervisor, event: Event, clock: Instant) -> Vec<Action> {
        let before = machine.state().name();
        let summary = match &event {
            Event::Verified(summary) => Some(summary.clone()),
            _ => None,
        };
        let actions = machine.handle(event, clock.elapsed());
        let after = machine.state();
        if before != after.name() {
            match after {
                State::Backoff { delay } => warn!(
                    from = before,
                    to = after.name(),
                    restart = machine.restarts(),
                    delay = ?delay,
                    "guest stopped: {}",
                    machine.last_failure().unwrap_or("unknown")
                ),
                State::Serving => info!(
                    from = before,
                    to = after.name(),
                    "guest verified, relay open: {}",
                    summary.as_deref().unwrap_or("")
                ),
                _ => info!(from = before, to = after.name(), "state change"),
            }
        }
        actions
    }
}

/// Probes until `/healthz` answers 200 ([`Event::Healthy`]) or `healthz_timeout` passes.
async fn await_healthy(probe: HealthProbe, supervise: SuperviseSection) -> Event {
    let timeout = supervise.healthz_timeout();
    let mut last = String::from("no probe finished");
    let waiting = async {
        loop {
            match probe.check().await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(supervise.health_interval()).await;
        }
    };
    match tokio::time::timeout(timeout, waiting).await {
        Ok(()) => Event::Healthy,
        Err(_) => Event::Unhealthy(format!(
            "no 200 from /healthz within {timeout:?}; last probe: {last}"
        )),
    }
}

/// Probes a serving guest every interval; resolves after that many failures in a row.
async fn watch_health(probe: HealthProbe, supervise: SuperviseSection) -> Event {
    let limit = supervise.health_failures_before_restart;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(supervise.health_interval()).await;
        match probe.check().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                warn!(failures, limit, "{e}");
                if failures >= limit {
                    return Event::Unhealthy(format!(
                        "{failures} probes in a row failed; last: {e}"
                    ));
                }
            }
        }
    }
}
