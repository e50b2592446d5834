//! One guest the relay can pass clients to, and the two switches its owner turns.
//!
//! The owner (the supervisor of `vm run`, or the daemon) knows whether a guest is verified
//! and healthy; the relay only reads that. Two switches, because they mean different things
//! to the clients already relayed: *serving* off means the guest can no longer be trusted
//! or reached, so the connections through it are cut at once; *drained* means the guest is
//! fine but leaving (an upgrade, a rebalance), so it only stops getting new connections and
//! the open ones finish on their own.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// One guest: where it listens, whether it may be used, and how many connections it has.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    address: String,
    /// Verified and healthy. A watch, so that open connections hear it turn false.
    serving: watch::Sender<bool>,
    drained: AtomicBool,
    active: AtomicUsize,
}

impl Upstream {
    /// A guest called `name` (metrics label, logs) at `address` (`host:port`). It starts
    /// not serving: nobody is relayed to a guest before its owner says it was verified.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            address: address.into(),
            serving: watch::Sender::new(false),
            drained: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port` the relay connects to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Verified and healthy (`true`) or not. Turning it `false` cuts every connection open
    /// through this guest, and no new one is relayed to it until it turns `true` again.
    pub fn set_serving(&self, serving: bool) {
        self.serving.send_replace(serving);
    }

    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Drained (`true`): no new connections; the open ones finish normally.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::SeqCst);
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::SeqCst)
    }

    /// Connections relayed (or being connected) to this guest now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Whether a new connection may go to this guest.
    pub(crate) fn takes_new(&self) -> bool {
        self.is_serving() && !self.is_drained()
    }

    /// Counts one more connection on this guest until the lease is dropped.
    pub(crate) fn lease(self: &Arc<Self>) -> Lease {
        self.active.fetch_add(1, Ordering::SeqCst);
        Lease {
            upstream: Arc::clone(self),
        }
    }

    /// Resolves once the guest is not serving. It watches from the moment of the call, so
    /// a switch made between picking the guest and awaiting this is not missed.
    pub(crate) fn stopped_serving(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut serving = self.serving.subscribe();
        async move {
            // An error means the sender (this upstream) is gone: nothing left to relay to.
            let _ = serving.wait_for(|serving| !serving).await;
        }
    }
}

/// One connection counted on a guest; dropping it gives the count back.
#[derive(Debug)]
pub struct Lease {
    upstream: Arc<Upstream>,
}

impl Lease {
    /// The guest this connection goes to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.upstream.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_upstream_is_not_serving_and_takes_nothing() {
        let guest = Upstream::new("a", "127.0.0.1:1");
        assert!(!guest.is_serving() && !guest.is_drained() && !guest.takes_new());
        assert_eq!((guest.name(), guest.address()), ("a", "127.0.0.1:1"));
        guest.set_serving(true);
        assert!(guest.takes_new());
        guest.set_drained(true);
        assert!(guest.is_serving() && !guest.takes_new());
    }

    #[test]
    fn leases_count_active_connections() {
        let guest = Upstream::new("a", "127.0.0.1:1");
        let first = guest.lease();
        let second = guest.lease();
        assert_eq!(guest.active(), 2);
        drop(first);
        assert_eq!(guest.active(), 1);
        assert!(Arc::ptr_eq(second.upstream(), &guest));
        drop(second);
        assert_eq!(guest.active(), 0);
    }

    #[tokio::test]
    async fn stopped_serving_resolves_on_the_switch_even_if_made_before_awaiting() {
        let guest = Upstream::new("a", "127.0.0.1:1");
        guest.set_serving(true);
        let stopped = guest.stopped_serving();
        guest.set_serving(false);
        stopped.await;
        // Already off when called: resolves at once.
        guest.stopped_serving().await;
    }
}
