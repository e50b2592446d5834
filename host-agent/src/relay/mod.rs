//! An L4 relay from clients to a pool of guests: bytes in, bytes out, TLS never terminated.
//!
//! The host is untrusted, so the relay must not be able to read traffic (it moves TLS the
//! guests terminate); it also must not let one client hold resources forever, nor pass a
//! client to a guest its owner has not verified. So:
//!
//! - `upstream`: one guest and its two switches, serving (verified and healthy; off cuts
//!   its connections) and drained (no new connections; open ones finish);
//! - `pool`: which guest a new client goes to (least connections);
//! - `limits` and `admission`: global and per-source connection limits, timeouts;
//! - `connection`, `pump`, `socket`: one connection, the bytes both ways, socket options;
//! - `metrics`: the `cocoon_relay_*` Prometheus families.
//!
//! [`serve_relay`] is the relay over a pool; [`run_relay`] relays to one guest that is
//! always serving (`cocoon-host-agent relay`). `vm run` serves a pool of one guest whose
//! serving switch follows the supervisor's verification.

mod admission;
mod connection;
mod limits;
mod metrics;
mod pool;
mod pump;
mod socket;
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use limits::{limit_from_secs, RelayLimits, RelaySection};
pub use metrics::RelayMetrics;
pub use pool::UpstreamPool;
pub use pump::CloseReason;
pub use upstream::{Lease, Upstream};

use admission::{Admission, Refusal};
use connection::Connection;

/// Relays to the one guest at `guest` (always serving) until `shutdown` resolves.
pub async fn run_relay(
    listener: TcpListener,
    guest: impl Into<String>,
    limits: RelayLimits,
    shutdown: impl Future<Output = ()>,
) {
    let upstream = Upstream::new("guest", guest);
    upstream.set_serving(true);
    let pool = Arc::new(UpstreamPool::new(vec![upstream]));
    serve_relay(
        listener,
        pool,
        limits,
        Arc::new(RelayMetrics::default()),
        shutdown,
    )
    .await
}

/// Accepts clients on `listener` and relays each to a guest of `pool` until `shutdown`
/// resolves.
///
/// A client over a limit, or arriving while no guest is serving and undrained, is closed
/// at once and counted as refused. When `shutdown` resolves the relay stops accepting and
/// returns; connections already relayed carry on to their own end (to cut them, turn
/// their guests' serving switch off).
pub async fn serve_relay(
    listener: TcpListener,
    pool: Arc<UpstreamPool>,
    limits: RelayLimits,
    metrics: Arc<RelayMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Admission::new(&limits);
    let limits = Arc::new(limits);
    let mut next_id = 1u64;
    tokio::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            () = &mut shutdown => {
                info!("relay stopping");
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, mostly: pause rather than spin.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let id = next_id;
        next_id += 1;
        let placed = admission.admit(peer.ip()).and_then(|admitted| {
            let lease = pool.pick().ok_or(Refusal::NoGuest)?;
            Ok((admitted, lease))
        });
        let (admitted, lease) = match placed {
            Ok(placed) => placed,
            Err(refusal) => {
                metrics.refused(refusal);
                warn!(conn = id, %peer, "{}; closing", refusal.describe(&limits));
                continue;
            }
        };
        let connection = Connection {
            id,
            peer,
            client,
            lease,
            admitted,
            limits: Arc::clone(&limits),
            metrics: Arc::clone(&metrics),
        };
        tokio::spawn(connection.serve());
    }
}
