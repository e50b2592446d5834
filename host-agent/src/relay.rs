//! An L4 relay: bytes in, bytes out, TLS never terminated.
//!
//! The host is untrusted, so the relay must not be able to read traffic; it also must not
//! let one client hold resources forever. Each connection gets a connect timeout towards
//! the guest, an idle timeout (no byte either way), and counts against a connection
//! limit; half-closes are forwarded so HTTP/1.1 and TLS close_notify behave as direct.
//!
//! Under `vm run` the relay is gated: the supervisor opens the gate only while the guest's
//! current boot has passed the operator's attestation check. A client that arrives while
//! the gate is shut is closed at once (never relayed), and shutting the gate cuts the
//! connections already relayed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    /// `host:port` of the guest.
    pub upstream: String,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed.
    Finished,
    /// No byte moved for the idle timeout.
    Idle,
    /// A socket error.
    Error(String),
    /// The guest stopped being verified (byte counts are not kept for these).
    GateShut,
}

const BUF: usize = 16 * 1024;

/// Whether the relay may pass clients on (`true`), set by whoever owns the sender.
pub type RelayGate = watch::Receiver<bool>;

/// Accepts and relays until `shutdown` resolves.
pub async fn run_relay(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) {
    // Always open: the sender lives as long as the relay and never changes the value.
    let (_always_open, gate) = watch::channel(true);
    run_gated_relay(listener, config, gate, shutdown).await
}

/// Resolves when the gate is shut (never, once its sender is gone with the gate open).
async fn gate_shut(gate: &mut RelayGate) {
    loop {
        if !*gate.borrow_and_update() {
            return;
        }
        if gate.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Like [`run_relay`], passing clients on only while `gate` is open.
pub async fn run_gated_relay(
    listener: TcpListener,
    config: RelayConfig,
    gate: RelayGate,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let next_id = AtomicU64::new(1);
    tokio::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            _ = &mut shutdown => { info!("relay stopping"); return; }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if !*gate.borrow() {
            warn!(conn = id, %peer, "the guest is not verified (yet); closing");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(conn = id, %peer, "connection limit ({}) reached; closing", config.max_connections);
            continue;
        };
        let config = config.clone();
        let mut gate = gate.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            info!(conn = id, %peer, upstream = %config.upstream, "accepted");
            let upstream = match tokio::time::timeout(
                config.connect_timeout,
                TcpStream::connect(&config.upstream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    warn!(conn = id, %peer, "guest {} unreachable: {e}", config.upstream);
                    return;
                }
                Err(_) => {
                    warn!(conn = id, %peer, "guest {} did not accept within {:?}", config.upstream, config.connect_timeout);
                    return;
                }
            };
            client.set_nodelay(true).ok();
            upstream.set_nodelay(true).ok();
            let (reason, up, down) = tokio::select! {
                ended = relay(client, upstream, config.idle_timeout) => ended,
                () = gate_shut(&mut gate) => (CloseReason::GateShut, 0, 0),
            };
            info!(
                conn = id, %peer, bytes_to_guest = up, bytes_to_client = down,
                secs = format!("{:.3}", started.elapsed().as_secs_f64()),
                "closed: {reason:?}"
            );
        });
    }
}

/// Copies bytes both ways until both directions finish, one fails, or nothing moves for
/// `idle`. Returns the reason and the byte counts (client→guest, guest→client).
pub async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    idle: Duration,
) -> (CloseReason, u64, u64) {
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = upstream.into_split();
    let activity = Arc::new(std::sync::Mutex::new(Instant::now()));
    let to_guest = pump(client_read, up_write, activity.clone());
    let to_client = pump(up_read, client_write, activity.clone());
    tokio::pin!(to_guest, to_client);
    let mut up: Option<Result<u64, (String, u64)>> = None;
    let mut down: Option<Result<u64, (String, u64)>> = None;
    let count = |r: &Option<Result<u64, (String, u64)>>| match r {
        Some(Ok(n)) | Some(Err((_, n))) => *n,
        None => 0,
    };
    let mut tick = tokio::time::interval(
        idle.min(Duration::from_secs(1))
            .max(Duration::from_millis(10)),
    );
    loop {
        tokio::select! {
            r = &mut to_guest, if up.is_none() => up = Some(r),
            r = &mut to_client, if down.is_none() => down = Some(r),
            _ = tick.tick() => {
                let last = activity.lock().map(|t| *t).unwrap_or_else(|_| Instant::now());
                if last.elapsed() >= idle {
                    return (CloseReason::Idle, count(&up), count(&down));
                }
            }
        }
        match (&up, &down) {
            (Some(Err((e, _))), _) | (_, Some(Err((e, _)))) => {
                return (CloseReason::Error(e.clone()), count(&up), count(&down));
            }
            (Some(Ok(a)), Some(Ok(b))) => return (CloseReason::Finished, *a, *b),
            _ => {}
        }
    }
}

/// Copies one direction; on EOF, half-closes the other side. Returns bytes copied.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    activity: Arc<std::sync::Mutex<Instant>>,
) -> Result<u64, (String, u64)> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err((e.to_string(), total)),
        };
        if let Err(e) = to.write_all(&buf[..n]).await {
            return Err((e.to_string(), total));
        }
        total += n as u64;
        if let Ok(mut t) = activity.lock() {
            *t = Instant::now();
        }
    }
    // Forward the half-close; the peer may already be gone, which is not an error here.
    let _ = to.shutdown().await;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn relays_both_ways_and_forwards_half_close() {
        let (mut client, relay_client_side) = pair().await;
        let (relay_guest_side, mut guest) = pair().await;
        let task = tokio::spawn(relay(
            relay_client_side,
            relay_guest_side,
            Duration::from_secs(5),
        ));
        client.write_all(b"hello guest").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        guest.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello guest");
        guest.write_all(b"ciphertext back").await.unwrap();
        guest.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ciphertext back");
        let (reason, up, down) = task.await.unwrap();
        assert_eq!((reason, up, down), (CloseReason::Finished, 11, 15));
    }

    #[tokio::test]
    async fn closes_idle_connections() {
        let (_client, relay_client_side) = pair().await;
        let (relay_guest_side, _guest) = pair().await;
        let (reason, up, down) = relay(
            relay_client_side,
            relay_guest_side,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!((reason, up, down), (CloseReason::Idle, 0, 0));
    }

    #[tokio::test]
    async fn unreachable_guest_closes_the_client() {
        // A port with nothing listening: bind, learn the port, drop the listener.
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = RelayConfig {
            listen: addr,
            upstream: dead.to_string(),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            max_connections: 4,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run_relay(listener, config, async {
            let _ = stop_rx.await;
        }));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "client must see the connection close"
        );
        stop_tx.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_shut_gate_refuses_clients_and_cuts_relayed_ones() {
        let guest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = RelayConfig {
            listen: addr,
            upstream: guest.local_addr().unwrap().to_string(),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4,
        };
        let (gate, gate_view) = watch::channel(false);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run_gated_relay(listener, config, gate_view, async {
            let _ = stop_rx.await;
        }));
        let bound = Duration::from_secs(10);
        let mut buf = [0u8; 16];

        // Shut: closed at once, the guest never sees a connection.
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let n = tokio::time::timeout(bound, refused.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "refused while shut");

        // Open: relayed.
        gate.send_replace(true);
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut at_guest, _) = tokio::time::timeout(bound, guest.accept())
            .await
            .unwrap()
            .unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        at_guest.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // Shut again: the relayed connection is cut.
        gate.send_replace(false);
        let n = tokio::time::timeout(bound, client.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "cut when the gate shuts");
        stop_tx.send(()).unwrap();
        server.await.unwrap();
    }
}
