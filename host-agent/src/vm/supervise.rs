//! The supervisor's state machine, as a plain value: events in, actions out, no I/O and no
//! clock of its own (the caller passes the time), so every path is tested without QEMU,
//! sockets or sleeps.
//!
//! ```text
//! Starting --Launched--> WaitingHealthy --Healthy--> Verifying --Verified--> Serving
//!    |                        |                         |                     |
//!    +---- any failure -------+-------------------------+---------------------+
//!                                  |
//!                   restarts left? +--yes--> Backoff --BackoffElapsed--> Starting
//!                                  +--no---> Failed (the agent exits non-zero)
//! ```
//!
//! The relay is open only in `Serving`, which is entered only from a successful
//! verification of the current boot; every way out of `Serving` closes it first.
//!
//! Choices:
//! - A guest that fails verification is stopped and restarted like any other failure, with
//!   the same backoff and the same restart budget: a fresh boot makes fresh evidence, and a
//!   transient cause (a collateral server down) gets its retries; a guest that keeps
//!   failing uses up `max_restarts` and the agent exits non-zero, saying why.
//! - Restarts are counted from the last stable period: a guest that served for
//!   `stable_after` gets its restart count and backoff reset, so a months-old agent is not
//!   one failure away from giving up.

use std::time::Duration;

/// Where the supervised guest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// QEMU is being started.
    Starting,
    /// QEMU runs; waiting for `/healthz` to answer 200.
    WaitingHealthy,
    /// Healthy; checking its attestation under the operator's policy.
    Verifying,
    /// Verified: the relay accepts clients.
    Serving,
    /// Stopped after a failure; waiting before the next start.
    Backoff { delay: Duration },
    /// Gave up; the agent exits non-zero.
    Failed { reason: String },
}

impl State {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::WaitingHealthy => "waiting-healthy",
            State::Verifying => "verifying",
            State::Serving => "serving",
            State::Backoff { .. } => "backoff",
            State::Failed { .. } => "failed",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// QEMU started.
    Launched,
    /// QEMU could not be started.
    LaunchFailed(String),
    /// QEMU exited (its status, as text).
    QemuExited(String),
    /// `/healthz` answered 200.
    Healthy,
    /// No 200 within the wait, or a serving guest failed too many probes.
    Unhealthy(String),
    /// The attestation verified (a summary for the log).
    Verified(String),
    /// The attestation did not verify.
    VerificationFailed(String),
    /// The backoff delay has passed.
    BackoffElapsed,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start QEMU.
    Launch,
    /// Probe `/healthz` until it answers 200 or the wait runs out.
    AwaitHealthy,
    /// Verify the guest's attestation.
    Verify,
    /// Let the relay accept clients (and keep probing health).
    OpenRelay,
    /// Refuse new clients and cut the relayed connections.
    CloseRelay,
    /// Kill QEMU (if it still runs) and reap it.
    StopQemu,
    /// Wait this long, then report [`Event::BackoffElapsed`].
    Wait(Duration),
    /// Give up: exit non-zero with this message.
    Exit(String),
}

/// Restart limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_restarts: u32,
    pub stable_after: Duration,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Supervisor {
    state: State,
    policy: RestartPolicy,
    restarts: u32,
    next_delay: Duration,
    serving_since: Option<Duration>,
    last_failure: Option<String>,
}

impl Supervisor {
    /// A supervisor in `Starting`; the first action is [`Supervisor::start`]'s.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            state: State::Starting,
            next_delay: policy.backoff_initial,
            policy,
            restarts: 0,
            serving_since: None,
            last_failure: None,
        }
    }

    /// The actions that begin supervision.
    pub fn start(&self) -> Vec<Action> {
        vec![Action::Launch]
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Restarts counted since the last stable period.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Why the guest was last stopped.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Whether the relay may pass clients to the guest now.
    pub fn relay_open(&self) -> bool {
        self.state == State::Serving
    }

    /// Applies `event` at time `now` (any monotonic clock, as a duration since its start).
    /// Events that do not belong to the current state (a late probe result) change
    /// nothing and return no action.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        use Event::*;
        match (&self.state, event) {
            (State::Starting, Launched) => {
                self.enter(State::WaitingHealthy, vec![Action::AwaitHealthy])
            }
            (State::Starting, LaunchFailed(why)) => {
                self.fail(format!("QEMU did not start: {why}"), now)
            }
            (State::WaitingHealthy, Healthy) => self.enter(State::Verifying, vec![Action::Verify]),
            (State::Verifying, Verified(_)) => {
                self.serving_since = Some(now);
                self.enter(State::Serving, vec![Action::OpenRelay])
            }
            (State::Verifying, VerificationFailed(why)) => {
                self.fail(format!("the guest failed verification: {why}"), now)
            }
            (State::WaitingHealthy | State::Verifying | State::Serving, QemuExited(status)) => {
                self.fail(format!("QEMU exited ({status})"), now)
            }
            (State::WaitingHealthy | State::Serving, Unhealthy(why)) => {
                self.fail(format!("the guest is unhealthy: {why}"), now)
            }
            (State::Backoff { .. }, BackoffElapsed) => {
                self.enter(State::Starting, vec![Action::Launch])
            }
            _ => Vec::new(),
        }
    }

    fn enter(&mut self, state: State, actions: Vec<Action>) -> Vec<Action> {
        self.state = state;
        actions
    }

    /// Stops the guest, then backs off or gives up.
    fn fail(&mut self, reason: String, now: Duration) -> Vec<Action> {
        self.last_failure = Some(reason.clone());
        let mut actions = Vec::new();
        if self.state == State::Serving {
            actions.push(Action::CloseRelay);
        }
        actions.push(Action::StopQemu);
        let was_stable = self
            .serving_since
            .take()
            .is_some_and(|since| now.saturating_sub(since) >= self.policy.stable_after);
        if was_stable {
            self.restarts = 0;
            self.next_delay = self.policy.backoff_initial;
        }
        if self.restarts >= self.policy.max_restarts {
            let message = format!(
                "giving up after {} restart(s) (max_restarts = {}): {reason}",
                self.restarts, self.policy.max_restarts
            );
            actions.push(Action::Exit(message.clone()));
            self.state = State::Failed { reason: message };
            return actions;
        }
        self.restarts += 1;
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(self.policy.backoff_max);
        actions.push(Action::Wait(delay));
        self.state = State::Backoff { delay };
        actions
    }
}

#[cfg(test)]
#[path = "supervise_tests.rs"]
mod tests;
