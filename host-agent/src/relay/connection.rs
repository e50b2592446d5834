//! One admitted client, from choosing its guest to its closing log line.
//!
//! Everything the connection holds (its places under the limits, its count on the guest,
//! its place in the open gauge) is owned here and given back when this ends, however it
//! ends. Logs name the connection, the client's address, the guest and the byte counts,
//! never a byte of payload.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{info, warn};

use super::admission::Admitted;
use super::limits::RelayLimits;
use super::metrics::RelayMetrics;
use super::pump::{relay, CloseReason, Deadlines, Relayed};
use super::socket::{connect, tune};
use super::upstream::Lease;

/// A client the relay accepted, admitted and gave a guest.
pub(crate) struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
    pub client: TcpStream,
    pub lease: Lease,
    pub admitted: Admitted,
    pub limits: Arc<RelayLimits>,
    pub metrics: Arc<RelayMetrics>,
}

impl Connection {
    /// Connects to the guest and relays until the connection ends.
    pub(crate) async fn serve(self) {
        let Self {
            id,
            peer,
            client,
            lease,
            admitted,
            limits,
            metrics,
        } = self;
        let began = Instant::now();
        let guest = lease.upstream();
        // Watching starts now: a switch made since the pick still counts.
        let cut = guest.stopped_serving();
        tokio::pin!(cut);
        let meters = metrics.connection(guest.name());
        info!(conn = id, %peer, guest = guest.name(), "accepted");
        let connected = tokio::select! {
            connected = connect(guest.address(), limits.connect_timeout) => {
                connected.map_err(|e| {
                    warn!(conn = id, %peer, guest = guest.name(), "{e}");
                    CloseReason::Error(e.to_string())
                })
            }
            () = &mut cut => Err(CloseReason::Cut),
        };
        let ended = match connected {
            Ok(upstream) => {
                for stream in [&client, &upstream] {
                    if let Err(e) = tune(stream) {
                        warn!(conn = id, "cannot set keepalive or nodelay: {e}");
                    }
                }
                let deadlines = Deadlines {
                    idle: limits.idle_timeout,
                    total: limits
                        .max_connection_duration
                        .and_then(|total| began.checked_add(total)),
                };
                relay(client, upstream, deadlines, &meters, cut).await
            }
            Err(reason) => Relayed {
                reason,
                to_guest: 0,
                to_client: 0,
            },
        };
        meters.closed(&ended.reason);
        info!(
            conn = id, %peer, guest = guest.name(), bytes_to_guest = ended.to_guest,
            bytes_to_client = ended.to_client,
            secs = format!("{:.3}", began.elapsed().as_secs_f64()),
            "closed: {}", ended.reason
        );
        // The places under the limits go back before the count on the guest, so whoever
        // sees `Upstream::active` drop can rely on the limits having room again.
        drop(meters);
        drop(admitted);
        drop(lease);
    }
}
