//! Is the engine making progress? The answer `/healthz` gives the host agent.
//!
//! mistral.rs runs every sequence in one engine loop. If that loop ever stops (a bug, a
//! GPU fault that hangs instead of crashing, a send it waits on forever), the HTTP server
//! keeps accepting and every generation waits until its deadline: a guest that looks up
//! but serves nothing. The host agent's supervision can only restart what it can see, so
//! `/healthz` reports the engine's state: while work is outstanding, the engine must
//! answer something (a token, an error, an end) within `stall_after`, or the guest says
//! it is stalled (503). With nothing outstanding an idle engine is healthy.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tracks outstanding engine jobs and the last time the engine answered one.
#[derive(Debug)]
pub struct EngineWatchdog {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `origin` of the last engine answer (or of the moment the
    /// engine went from idle to busy).
    last_progress_ms: AtomicU64,
    stall_after: Duration,
}

/// What `/healthz` reports about the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineHealth {
    /// Engine jobs (one per choice) sent and not yet ended.
    pub in_flight: usize,
    /// Time since the engine last answered, while jobs are outstanding (zero when idle).
    pub silent_for: Duration,
    /// True when jobs are outstanding and the engine has been silent for longer than the
    /// configured bound.
    pub stalled: bool,
}

impl EngineWatchdog {
    /// A watchdog that calls the engine stalled after `stall_after` of silence with work
    /// outstanding.
    pub fn new(stall_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(0),
            stall_after,
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// One engine job starts; it ends when the guard is dropped.
    pub fn job(self: &Arc<Self>) -> EngineJob {
        self.job_at(Instant::now())
    }

    fn job_at(self: &Arc<Self>, now: Instant) -> EngineJob {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            // The engine was idle: silence is measured from now, not from its last job.
            self.last_progress_ms
                .store(self.millis(now), Ordering::SeqCst);
        }
        EngineJob {
            watchdog: self.clone(),
        }
    }

    /// The engine answered something.
    pub fn progress(&self) {
        self.progress_at(Instant::now());
    }

    fn progress_at(&self, now: Instant) {
        self.last_progress_ms
            .fetch_max(self.millis(now), Ordering::SeqCst);
    }

    /// The engine's state now.
    pub fn health(&self) -> EngineHealth {
        self.health_at(Instant::now())
    }

    fn health_at(&self, now: Instant) -> EngineHealth {
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        if in_flight == 0 {
            return EngineHealth {
                in_flight,
                silent_for: Duration::ZERO,
                stalled: false,
            };
        }
        let last = self.last_progress_ms.load(Ordering::SeqCst);
        let silent_for = Duration::from_millis(self.millis(now).saturating_sub(last));
        EngineHealth {
            in_flight,
            silent_for,
            stalled: silent_for > self.stall_after,
        }
    }
}

/// An outstanding engine job; dropping it ends the job.
#[derive(Debug)]
pub struct EngineJob {
    watchdog: Arc<EngineWatchdog>,
}

impl EngineJob {
    /// The engine answered this job.
    pub fn progress(&self) {
        self.watchdog.progress();
    }
}

impl Drop for EngineJob {
    fn drop(&mut self) {
        self.watchdog.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_with_work_outstanding_is_a_stall_and_idleness_is_not() {
        let dog = EngineWatchdog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        // Idle for an hour: healthy.
        assert!(!dog.health_at(later(3600)).stalled);

        // A job starts at +3600: silence counts from then, not from the origin.
        let job = dog.job_at(later(3600));
        let h = dog.health_at(later(3605));
        assert_eq!(
            (h.in_flight, h.silent_for, h.stalled),
            (1, Duration::from_secs(5), false)
        );
        // The engine answers at +3608; at +3617 it has been silent 9 s: fine.
        dog.progress_at(later(3608));
        assert!(!dog.health_at(later(3617)).stalled);
        // At +3619 it has been silent 11 s with the job outstanding: stalled.
        let h = dog.health_at(later(3619));
        assert!(h.stalled, "{h:?}");
        assert_eq!(h.silent_for, Duration::from_secs(11));
        // An answer clears it.
        dog.progress_at(later(3619));
        assert!(!dog.health_at(later(3620)).stalled);
        // The job ends: healthy again however long the engine stays quiet.
        drop(job);
        assert_eq!(dog.health_at(later(9999)).in_flight, 0);
        assert!(!dog.health_at(later(9999)).stalled);
    }

    #[test]
    fn progress_never_moves_backwards() {
        let dog = EngineWatchdog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let _job = dog.job_at(t0);
        dog.progress_at(t0 + Duration::from_secs(5));
        // A late report of an earlier answer (another task's clock read) must not make
        // the engine look more silent than it is.
        dog.progress_at(t0 + Duration::from_secs(2));
        assert!(!dog.health_at(t0 + Duration::from_millis(5500)).stalled);
    }
}
