//! Moving bytes between one client and one guest, both ways, until the connection ends.
//!
//! The relay never reads what it moves (it is TLS the guest terminates); it only decides
//! when to stop. A connection ends when both directions finished (each side's EOF is
//! forwarded as a half-close, so HTTP/1.1 and TLS close_notify behave as they would
//! direct), when a socket fails, when nothing moved for the idle timeout, at the total
//! deadline, or when the guest is cut. Ending drops both sockets, so neither side hangs.
//!
//! Both directions run in one task: a connection costs one task and two 32 KiB buffers.
//! 32 KiB measured best for one bulk stream on loopback with `examples/relay-bench.rs`
//! (about 1.2x the throughput of 8 KiB and of 64 KiB, which is oddly the slowest there);
//! larger buffers only cost memory per connection.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::metrics::ConnectionMeters;

/// Bytes per read, per direction.
const BUF: usize = 32 * 1024;

/// How a relayed connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed.
    Finished,
    /// No byte moved for the idle timeout.
    Idle,
    /// The connection reached its total duration limit.
    TotalTimeout,
    /// A socket error, or the guest could not be reached (never payload).
    Error(String),
    /// The guest stopped serving.
    Cut,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Finished => f.write_str("finished"),
            Self::Idle => f.write_str("idle timeout"),
            Self::TotalTimeout => f.write_str("total duration limit"),
            Self::Error(e) => write!(f, "error: {e}"),
            Self::Cut => f.write_str("cut: the guest stopped serving"),
        }
    }
}

/// When to give up on a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// No byte either way for this long.
    pub idle: Duration,
    /// The connection's end, whatever moves (`None`: no end).
    pub total: Option<Instant>,
}

/// How a relay ended, with the bytes moved each way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relayed {
    pub reason: CloseReason,
    pub to_guest: u64,
    pub to_client: u64,
}

/// When a byte last moved, as milliseconds since the relay began: cheap to update from
/// both directions without a lock.
struct Activity {
    began: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            began: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the connection goes idle if nothing moves before then.
    fn idle_at(&self, idle: Duration) -> Instant {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        far(self.began, last.saturating_add(idle))
    }
}

/// `from + after`, or a year away if that overflows.
fn far(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| from + Duration::from_secs(365 * 24 * 3600))
}

/// Relays between `client` and `guest` until the connection ends (see the module docs);
/// `cut` resolving ends it at once. Bytes are added to `meters` as they are written.
pub(crate) async fn relay(
    mut client: TcpStream,
    mut guest: TcpStream,
    deadlines: Deadlines,
    meters: &ConnectionMeters,
    cut: impl Future<Output = ()>,
) -> Relayed {
    let activity = Activity::new();
    let (to_guest_count, to_client_count) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut client_read, mut client_write) = client.split();
    let (mut guest_read, mut guest_write) = guest.split();
    let to_guest = pump(
        &mut client_read,
        &mut guest_write,
        Meter::new(&meters.to_guest, &to_guest_count, &activity),
    );
    let to_client = pump(
        &mut guest_read,
        &mut client_write,
        Meter::new(&meters.to_client, &to_client_count, &activity),
    );
    let ends = async {
        match deadlines.total {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let idle = tokio::time::sleep(deadlines.idle);
    tokio::pin!(to_guest, to_client, ends, idle, cut);
    let (mut guest_done, mut client_done) = (false, false);
    let reason = loop {
        tokio::select! {
            done = &mut to_guest, if !guest_done => match done {
                Ok(()) => guest_done = true,
                Err(e) => break CloseReason::Error(format!("client to guest: {e}")),
            },
            done = &mut to_client, if !client_done => match done {
                Ok(()) => client_done = true,
                Err(e) => break CloseReason::Error(format!("guest to client: {e}")),
            },
            () = &mut idle => {
                let at = activity.idle_at(deadlines.idle);
                if at <= Instant::now() {
                    break CloseReason::Idle;
                }
                idle.as_mut().reset(at);
            }
            () = &mut ends => break CloseReason::TotalTimeout,
            () = &mut cut => break CloseReason::Cut,
        }
        if guest_done && client_done {
            break CloseReason::Finished;
        }
    };
    Relayed {
        reason,
        to_guest: to_guest_count.load(Ordering::Relaxed),
        to_client: to_client_count.load(Ordering::Relaxed),
    }
}

/// Where one direction records what it moved.
struct Meter<'a> {
    metric: &'a Counter,
    count: &'a AtomicU64,
    activity: &'a Activity,
}

impl<'a> Meter<'a> {
    fn new(metric: &'a Counter, count: &'a AtomicU64, activity: &'a Activity) -> Self {
        Self {
            metric,
            count,
            activity,
        }
    }

    fn moved(&self, bytes: usize) {
        let bytes = bytes as u64;
        self.metric.inc_by(bytes);
        self.count.fetch_add(bytes, Ordering::Relaxed);
        self.activity.touch();
    }
}

/// Copies one direction until EOF, which it forwards as a half-close.
async fn pump<R, W>(from: &mut R, to: &mut W, meter: Meter<'_>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let read = from.read(&mut buf).await?;
        if read == 0 {
            // The other side may be gone already; the other direction will tell.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..read]).await?;
        meter.moved(read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayMetrics;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// The total deadline is tested through the relay (tests/relay.rs).
    fn idle_after(idle_ms: u64) -> Deadlines {
        Deadlines {
            idle: Duration::from_millis(idle_ms),
            total: None,
        }
    }

    /// A client and a guest socket with a relay between them, running in a task.
    async fn relayed(
        deadlines: Deadlines,
        cut: impl Future<Output = ()> + Send + 'static,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<Relayed>,
        std::sync::Arc<RelayMetrics>,
    ) {
        let (client, relay_client_side) = pair().await;
        let (relay_guest_side, guest) = pair().await;
        let metrics = std::sync::Arc::new(RelayMetrics::default());
        let shared = metrics.clone();
        let task = tokio::spawn(async move {
            let meters = shared.connection("g");
            relay(relay_client_side, relay_guest_side, deadlines, &meters, cut).await
        });
        (client, guest, task, metrics)
    }

    #[tokio::test]
    async fn forwards_half_closes_and_reports_the_bytes_each_way() {
        let (mut client, mut guest, task, _) =
            relayed(idle_after(30_000), std::future::pending()).await;
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
        let ended = task.await.unwrap();
        assert_eq!(
            ended,
            Relayed {
                reason: CloseReason::Finished,
                to_guest: 11,
                to_client: 15
            }
        );
    }

    #[tokio::test]
    async fn closes_idle_connections() {
        let (_client, _guest, task, _) = relayed(idle_after(200), std::future::pending()).await;
        let ended = task.await.unwrap();
        assert_eq!(
            (ended.reason, ended.to_guest, ended.to_client),
            (CloseReason::Idle, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_cut_closes_both_sides() {
        let (cut, cut_view) = tokio::sync::oneshot::channel::<()>();
        let (mut client, mut guest, task, _) = relayed(idle_after(30_000), async {
            let _ = cut_view.await;
        })
        .await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        guest.read_exact(&mut one).await.unwrap();
        cut.send(()).unwrap();
        assert_eq!(task.await.unwrap().reason, CloseReason::Cut);
        let mut rest = Vec::new();
        // Both see the end (EOF, or a reset where data was left unread).
        let _ = client.read_to_end(&mut rest).await;
        let _ = guest.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_guest_reset_ends_the_relay_with_an_error_and_closes_the_client() {
        let (mut client, guest, task, _) =
            relayed(idle_after(30_000), std::future::pending()).await;
        // Linger 0: close sends a reset, as a crashed guest's kernel may.
        guest.set_zero_linger().unwrap();
        drop(guest);
        let ended = task.await.unwrap();
        assert!(matches!(ended.reason, CloseReason::Error(_)), "{ended:?}");
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn bytes_are_counted_while_the_stream_is_still_open() {
        let (mut client, mut guest, task, metrics) =
            relayed(idle_after(30_000), std::future::pending()).await;
        let chunk = vec![7u8; 256 * 1024];
        client.write_all(&chunk).await.unwrap();
        let mut got = vec![0u8; chunk.len()];
        guest.read_exact(&mut got).await.unwrap();
        // The relay adds a chunk's count just after writing it: wait for the last one.
        let bound = Instant::now() + Duration::from_secs(10);
        while metrics_to_guest(&metrics) < chunk.len() as u64 && Instant::now() < bound {
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics_to_guest(&metrics), chunk.len() as u64);
        assert!(!task.is_finished(), "still open");
        drop((client, guest));
        task.await.unwrap();
    }

    fn metrics_to_guest(metrics: &RelayMetrics) -> u64 {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(r#"cocoon_relay_bytes_total{guest="g",direction="to_guest"} "#)
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}
