//! The state machine driven by hand: events and a fake clock (plain durations), no sleeps.

use super::*;

fn policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(5),
        max_restarts,
        stable_after: Duration::from_secs(600),
    }
}

fn at(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// What a failure of a serving guest asks for: close, stop, back off `secs`.
fn cut_off_then_wait(secs: u64) -> Vec<Action> {
    vec![
        Action::CloseRelay,
        Action::StopQemu,
        Action::Wait(Duration::from_secs(secs)),
    ]
}

/// Runs one boot from `Starting` to `Serving`.
fn boot_to_serving(machine: &mut Supervisor, now: Duration) {
    assert_eq!(machine.state(), &State::Starting);
    assert_eq!(
        machine.handle(Event::Launched, now),
        vec![Action::AwaitHealthy]
    );
    assert_eq!(machine.state(), &State::WaitingHealthy);
    assert!(!machine.relay_open());
    assert_eq!(machine.handle(Event::Healthy, now), vec![Action::Verify]);
    assert_eq!(machine.state(), &State::Verifying);
    assert!(!machine.relay_open());
    assert_eq!(
        machine.handle(Event::Verified("tdx mrtd=..".into()), now),
        vec![Action::OpenRelay]
    );
    assert_eq!(machine.state(), &State::Serving);
    assert!(machine.relay_open());
}

#[test]
fn a_healthy_verified_guest_is_served() {
    let mut machine = Supervisor::new(policy(3));
    assert_eq!(machine.start(), vec![Action::Launch]);
    boot_to_serving(&mut machine, at(0));
    assert_eq!(machine.restarts(), 0);
}

#[test]
fn the_relay_opens_only_after_verification() {
    let mut machine = Supervisor::new(policy(3));
    machine.handle(Event::Launched, at(0));
    // A verification result before health (a stale one) changes nothing.
    assert!(machine
        .handle(Event::Verified("stale".into()), at(1))
        .is_empty());
    assert_eq!(machine.state(), &State::WaitingHealthy);
    assert!(!machine.relay_open());
    machine.handle(Event::Healthy, at(2));
    let actions = machine.handle(Event::VerificationFailed("MRTD differs".into()), at(3));
    assert_eq!(
        actions,
        vec![Action::StopQemu, Action::Wait(Duration::from_secs(1))]
    );
    assert!(!machine.relay_open());
    assert!(machine
        .last_failure()
        .is_some_and(|f| f.contains("MRTD differs")));
}

#[test]
fn a_serving_guest_that_dies_is_cut_off_then_restarted_with_growing_backoff() {
    let mut machine = Supervisor::new(policy(10));
    boot_to_serving(&mut machine, at(0));
    let actions = machine.handle(Event::QemuExited("signal: 9".into()), at(10));
    assert_eq!(actions, cut_off_then_wait(1));
    assert_eq!(
        machine.state(),
        &State::Backoff {
            delay: Duration::from_secs(1)
        }
    );
    assert_eq!(
        machine.handle(Event::BackoffElapsed, at(11)),
        vec![Action::Launch]
    );
    // Each failure doubles the delay, up to the maximum.
    let mut delays = Vec::new();
    for t in 0..4 {
        machine.handle(Event::Launched, at(12 + t));
        let actions = machine.handle(Event::Unhealthy("no 200".into()), at(12 + t));
        assert_eq!(
            actions[0],
            Action::StopQemu,
            "no relay to close: it never opened"
        );
        if let Some(Action::Wait(delay)) = actions.last() {
            delays.push(delay.as_secs());
        }
        machine.handle(Event::BackoffElapsed, at(12 + t));
    }
    assert_eq!(delays, vec![2, 4, 5, 5]);
    assert_eq!(machine.restarts(), 5);
}

#[test]
fn max_restarts_ends_in_failed_with_the_reason() {
    let mut machine = Supervisor::new(policy(2));
    for round in 0..2 {
        machine.handle(Event::LaunchFailed("no such file".into()), at(round));
        assert!(matches!(machine.state(), State::Backoff { .. }));
        machine.handle(Event::BackoffElapsed, at(round));
    }
    let actions = machine.handle(Event::LaunchFailed("no such file".into()), at(3));
    let Some(Action::Exit(message)) = actions.last() else {
        panic!("expected Exit, got {actions:?}");
    };
    assert!(
        message.contains("max_restarts = 2") && message.contains("no such file"),
        "{message}"
    );
    assert!(matches!(machine.state(), State::Failed { .. }));
    // Failed is final.
    assert!(machine.handle(Event::BackoffElapsed, at(4)).is_empty());
    assert!(machine.handle(Event::Launched, at(4)).is_empty());
}

#[test]
fn zero_restarts_means_the_first_failure_is_final() {
    let mut machine = Supervisor::new(policy(0));
    machine.handle(Event::Launched, at(0));
    let actions = machine.handle(Event::QemuExited("exit status: 1".into()), at(1));
    assert_eq!(actions[0], Action::StopQemu);
    assert!(matches!(actions.last(), Some(Action::Exit(_))));
}

#[test]
fn a_stable_period_resets_the_restart_budget() {
    let mut machine = Supervisor::new(policy(1));
    machine.handle(Event::Launched, at(0));
    machine.handle(Event::Unhealthy("slow".into()), at(1));
    assert_eq!(machine.restarts(), 1);
    machine.handle(Event::BackoffElapsed, at(2));
    boot_to_serving(&mut machine, at(3));
    // Served 10 minutes (stable_after): this failure is the first of a new series.
    let actions = machine.handle(Event::Unhealthy("3 probes failed".into()), at(603));
    assert_eq!(actions, cut_off_then_wait(1));
    assert_eq!(machine.restarts(), 1);
    // A short-lived serving period does not reset it: the budget (1) is now used up.
    machine.handle(Event::BackoffElapsed, at(604));
    boot_to_serving(&mut machine, at(605));
    let actions = machine.handle(Event::QemuExited("exit status: 1".into()), at(606));
    assert!(
        matches!(actions.last(), Some(Action::Exit(_))),
        "{actions:?}"
    );
}

#[test]
fn events_that_do_not_belong_change_nothing() {
    let mut machine = Supervisor::new(policy(3));
    for event in [
        Event::Healthy,
        Event::Verified("x".into()),
        Event::BackoffElapsed,
    ] {
        assert!(machine.handle(event, at(0)).is_empty());
        assert_eq!(machine.state(), &State::Starting);
    }
    boot_to_serving(&mut machine, at(0));
    assert!(machine.handle(Event::Healthy, at(1)).is_empty());
    assert!(machine.handle(Event::Launched, at(1)).is_empty());
    assert_eq!(machine.state(), &State::Serving);
}
