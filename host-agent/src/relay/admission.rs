//! Whether one more client fits: the global and the per-source connection limits.
//!
//! A client over a limit is closed at once rather than queued: a queue would hold the
//! socket (the very resource the limit protects) and give the client no signal; a closed
//! connection tells it to back off now. The counts are held by a permit that travels with
//! the connection, so every way a connection ends gives its place back.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limits::RelayLimits;

/// Why a client was closed before it reached a guest (the metrics' `reason` label).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` relayed already.
    GlobalLimit,
    /// `max_connections_per_source` relayed for this client already.
    SourceLimit,
    /// No guest serving and undrained (the pool's answer, not admission's).
    NoGuest,
}

impl Refusal {
    /// For the log line.
    pub(crate) fn describe(self, limits: &RelayLimits) -> String {
        match self {
            Self::GlobalLimit => {
                format!("connection limit ({}) reached", limits.max_connections)
            }
            Self::SourceLimit => format!(
                "per-source connection limit ({}) reached",
                limits.max_connections_per_source
            ),
            Self::NoGuest => "no guest is serving (not verified, unhealthy or drained)".into(),
        }
    }
}

/// Admits clients within the limits.
pub(crate) struct Admission {
    global: Arc<Semaphore>,
    sources: Arc<SourceCounts>,
    per_source: usize,
}

/// Open connections by source.
#[derive(Default)]
struct SourceCounts(Mutex<HashMap<IpAddr, usize>>);

/// One admitted connection's places, given back on drop.
pub(crate) struct Admitted {
    _global: OwnedSemaphorePermit,
    sources: Arc<SourceCounts>,
    source: IpAddr,
}

impl Admission {
    pub(crate) fn new(limits: &RelayLimits) -> Self {
        Self {
            // The semaphore has a ceiling; any limit above it is as good as none.
            global: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            sources: Arc::default(),
            per_source: limits.max_connections_per_source,
        }
    }

    /// A place for a client from `peer`, or why there is none.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let global = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Refusal::GlobalLimit)?;
        let source = source_of(peer);
        {
            let mut counts = self.sources.lock();
            let count = counts.entry(source).or_insert(0);
            if *count >= self.per_source {
                if *count == 0 {
                    counts.remove(&source);
                }
                return Err(Refusal::SourceLimit);
            }
            *count += 1;
        }
        Ok(Admitted {
            _global: global,
            sources: Arc::clone(&self.sources),
            source,
        })
    }
}

impl SourceCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map stays consistent whatever panicked while it was held: each change is
        // one insert, increment or removal.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.sources.lock();
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// The key a client is counted under: its IPv4 address (also when it arrives IPv4-mapped
/// on an IPv6 socket), or its IPv6 /64.
fn source_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(global: usize, per_source: usize) -> Admission {
        Admission::new(&RelayLimits {
            max_connections: global,
            max_connections_per_source: per_source,
            ..RelayLimits::default()
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_per_source_limit_refuses_one_source_but_not_another() {
        let admission = admission(10, 2);
        let held = [
            admission.admit(ip("10.0.0.1")).unwrap(),
            admission.admit(ip("10.0.0.1")).unwrap(),
        ];
        assert_eq!(
            admission.admit(ip("10.0.0.1")).err(),
            Some(Refusal::SourceLimit)
        );
        assert!(admission.admit(ip("10.0.0.2")).is_ok());
        drop(held);
        assert!(admission.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_global_limit_refuses_everyone_until_a_place_is_given_back() {
        let admission = admission(2, 10);
        let first = admission.admit(ip("10.0.0.1")).unwrap();
        let _second = admission.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.3")).err(),
            Some(Refusal::GlobalLimit)
        );
        drop(first);
        assert!(admission.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn a_source_refusal_gives_the_global_place_back() {
        let admission = admission(2, 1);
        let _held = admission.admit(ip("10.0.0.1")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                admission.admit(ip("10.0.0.1")).err(),
                Some(Refusal::SourceLimit)
            );
        }
        assert!(admission.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn a_zero_per_source_limit_refuses_and_leaves_no_entry() {
        let admission = admission(2, 0);
        assert_eq!(
            admission.admit(ip("10.0.0.1")).err(),
            Some(Refusal::SourceLimit)
        );
        assert!(admission.sources.lock().is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let admission = admission(10, 1);
        let _v6 = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::SourceLimit)
        );
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = admission.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            admission.admit(ip("::ffff:192.0.2.7")).err(),
            Some(Refusal::SourceLimit)
        );
    }
}
