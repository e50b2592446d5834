//! Which guest a new client goes to.
//!
//! Least connections, because an inference request holds its connection for as long as the
//! model generates: a guest with fewer open connections is, to the relay's best knowledge,
//! the less loaded one. Ties rotate (round-robin over the tied guests, starting one place
//! further on each pick), so idle guests share the first clients instead of the first
//! guest in the list taking them all.
//!
//! Counts are read and the lease taken without a lock: two picks at the very same moment
//! may both see the same counts. The relay picks from its one accept loop, so for the relay
//! the choice is exact; other callers get a close approximation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::upstream::{Lease, Upstream};

/// The guests a relay passes clients to.
#[derive(Debug)]
pub struct UpstreamPool {
    upstreams: Vec<Arc<Upstream>>,
    /// Where the next pick starts looking, so ties rotate.
    next: AtomicUsize,
}

impl UpstreamPool {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        Self {
            upstreams,
            next: AtomicUsize::new(0),
        }
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The serving, undrained guest with the fewest active connections (ties rotate),
    /// counted as one more connection until the lease is dropped; `None` if no guest
    /// takes new connections.
    pub fn pick(&self) -> Option<Lease> {
        let count = self.upstreams.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut best: Option<(&Arc<Upstream>, usize)> = None;
        for offset in 0..count {
            let upstream = &self.upstreams[(start + offset) % count];
            if !upstream.takes_new() {
                continue;
            }
            let active = upstream.active();
            if best.is_none_or(|(_, fewest)| active < fewest) {
                best = Some((upstream, active));
            }
        }
        best.map(|(upstream, _)| upstream.lease())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(name: &str) -> Arc<Upstream> {
        let upstream = Upstream::new(name, "127.0.0.1:1");
        upstream.set_serving(true);
        upstream
    }

    fn picked(pool: &UpstreamPool) -> Option<(String, Lease)> {
        pool.pick()
            .map(|lease| (lease.upstream().name().to_string(), lease))
    }

    #[test]
    fn picks_the_guest_with_the_fewest_connections() {
        let (a, b) = (serving("a"), serving("b"));
        let pool = UpstreamPool::new(vec![a.clone(), b.clone()]);
        let _held = (a.lease(), a.lease());
        // Round-robin would alternate; least connections fills b up to a's two first.
        let (first, _l1) = picked(&pool).unwrap();
        let (second, _l2) = picked(&pool).unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("b", "b"));
        assert_eq!((a.active(), b.active()), (2, 2));
    }

    #[test]
    fn ties_rotate() {
        let pool = UpstreamPool::new(vec![serving("a"), serving("b"), serving("c")]);
        // Each lease is dropped at once: every pick sees a three-way tie.
        let names: Vec<String> = (0..3).map(|_| picked(&pool).unwrap().0).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn skips_drained_and_not_serving_guests() {
        let (a, b, c) = (
            serving("a"),
            serving("b"),
            Upstream::new("c", "127.0.0.1:1"),
        );
        let pool = UpstreamPool::new(vec![a.clone(), b.clone(), c]);
        a.set_drained(true);
        let _held = (b.lease(), b.lease());
        for _ in 0..3 {
            assert_eq!(picked(&pool).unwrap().0, "b");
        }
        b.set_serving(false);
        assert!(pool.pick().is_none());
        a.set_drained(false);
        assert_eq!(picked(&pool).unwrap().0, "a");
    }

    #[test]
    fn an_empty_pool_picks_nothing() {
        assert!(UpstreamPool::new(Vec::new()).pick().is_none());
    }

    #[test]
    fn a_dropped_lease_gives_its_count_back() {
        let a = serving("a");
        let pool = UpstreamPool::new(vec![a.clone()]);
        let lease = pool.pick().unwrap();
        assert_eq!(a.active(), 1);
        drop(lease);
        assert_eq!(a.active(), 0);
    }
}
