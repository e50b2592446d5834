//! The relay over a pool of guests, through its public API on loopback: which guest a
//! client reaches, what the switches do to open connections, the limits, the timeouts and
//! the metrics they leave. Guests are plain listeners the test accepts on itself, so every
//! step waits on the event it needs; the bounds only guard against hangs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cocoon_host_agent::relay::{
    run_relay, serve_relay, RelayLimits, RelayMetrics, Upstream, UpstreamPool,
};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound against hangs; no assertion depends on timing.
const BOUND: Duration = Duration::from_secs(10);

/// A test guest: a listener and the upstream that points at it (serving).
struct Guest {
    listener: TcpListener,
    upstream: Arc<Upstream>,
}

impl Guest {
    async fn new(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream::new(name, listener.local_addr().unwrap().to_string());
        upstream.set_serving(true);
        Self { listener, upstream }
    }

    /// The guest side of the next relayed connection.
    async fn accept(&self) -> TcpStream {
        bounded(self.listener.accept()).await.unwrap().0
    }
}

/// A running `serve_relay`; stops when dropped.
struct Relay {
    address: SocketAddr,
    metrics: Arc<RelayMetrics>,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<()>,
}

impl Relay {
    async fn start(guests: &[&Guest], limits: RelayLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let pool = UpstreamPool::new(guests.iter().map(|g| g.upstream.clone()).collect());
        let metrics = Arc::new(RelayMetrics::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_relay(
            listener,
            Arc::new(pool),
            limits,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            metrics,
            _stop: stop,
            _task: task,
        }
    }

    async fn connect(&self) -> TcpStream {
        bounded(TcpStream::connect(self.address)).await.unwrap()
    }

    /// Waits until `value` connections to `guest` closed for `reason`.
    async fn await_closed(&self, guest: &str, reason: &str, value: u64) {
        let sample = format!(
            r#"cocoon_relay_connections_closed_total{{guest="{guest}",reason="{reason}"}}"#
        );
        self.await_sample(&sample, value).await;
    }

    /// The metrics as Prometheus text.
    fn text(&self) -> String {
        let mut registry = Registry::default();
        self.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    /// The value of the sample `name{labels}`, 0 when absent.
    fn sample(&self, sample: &str) -> u64 {
        let prefix = format!("{sample} ");
        self.text()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |value| value.parse().unwrap())
    }

    /// Waits until the sample reaches `value` (the relay counts just after the event the
    /// test saw), then checks it is exactly that.
    async fn await_sample(&self, sample: &str, value: u64) {
        eventually(|| self.sample(sample) >= value).await;
        assert_eq!(self.sample(sample), value, "{sample}\n{}", self.text());
    }
}

/// One guest "a" behind a relay with `limits`, and one client relayed to it: the client
/// and the guest's side of the connection.
async fn connected(limits: RelayLimits) -> (Guest, Relay, TcpStream, TcpStream) {
    let guest = Guest::new("a").await;
    let relay = Relay::start(&[&guest], limits).await;
    let client = relay.connect().await;
    let at_guest = guest.accept().await;
    (guest, relay, client, at_guest)
}

fn limits() -> RelayLimits {
    RelayLimits {
        connect_timeout: BOUND,
        idle_timeout: Duration::from_secs(60),
        ..RelayLimits::default()
    }
}

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .expect("did not happen within the hang guard")
}

/// Polls `condition` until it holds (yielding in between), or fails at the hang guard.
async fn eventually(condition: impl Fn() -> bool) {
    bounded(async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Asserts the relay closed `stream`: EOF or a reset, with no byte.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let read = bounded(stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "expected a close: {read:?}");
}

/// Sends `bytes` and checks they arrive on the other side.
async fn pass(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
    from.write_all(bytes).await.unwrap();
    let mut got = vec![0u8; bytes.len()];
    bounded(to.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, bytes);
}

/// `first` sends and half-closes; `second` reads to the end, then sends and half-closes
/// too, and `first`, half-closed for writing, must still receive it all.
async fn half_close_exchange(first: &mut TcpStream, second: &mut TcpStream) {
    send_and_half_close(first, second, b"request").await;
    send_and_half_close(second, first, b"replied").await;
}

/// `from` sends `bytes` and shuts its writing side; `to` must read exactly them, then EOF.
async fn send_and_half_close(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
    from.write_all(bytes).await.unwrap();
    from.shutdown().await.unwrap();
    let mut got = Vec::new();
    bounded(to.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, bytes);
}

#[tokio::test]
async fn the_client_half_closes_first_and_still_receives_the_reply() {
    let (_guest, _relay, mut client, mut at_guest) = connected(limits()).await;
    half_close_exchange(&mut client, &mut at_guest).await;
}

#[tokio::test]
async fn the_guest_half_closes_first_and_still_receives_client_bytes() {
    let (_guest, relay, mut client, mut at_guest) = connected(limits()).await;
    half_close_exchange(&mut at_guest, &mut client).await;
    relay.await_closed("a", "finished", 1).await;
}

#[tokio::test]
async fn least_connections_sends_new_clients_to_the_emptier_guest() {
    let (a, b) = (Guest::new("a").await, Guest::new("b").await);
    let relay = Relay::start(&[&a, &b], limits()).await;
    // Two connections on b while a is drained.
    a.upstream.set_drained(true);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(relay.connect().await);
        held.push(b.accept().await);
    }
    a.upstream.set_drained(false);
    // Round-robin would send one of the next two to b; least connections sends both to a.
    for _ in 0..2 {
        held.push(relay.connect().await);
        let landed = bounded(async {
            tokio::select! {
                accepted = a.listener.accept() => ("a", accepted.unwrap().0),
                accepted = b.listener.accept() => ("b", accepted.unwrap().0),
            }
        })
        .await;
        assert_eq!(landed.0, "a");
        held.push(landed.1);
    }
    assert_eq!((a.upstream.active(), b.upstream.active()), (2, 2));
}

#[tokio::test]
async fn a_drained_guest_takes_no_new_client_but_its_open_connection_completes() {
    let (a, b) = (Guest::new("a").await, Guest::new("b").await);
    b.upstream.set_serving(false);
    let relay = Relay::start(&[&a, &b], limits()).await;
    let mut first = relay.connect().await;
    let mut first_at_a = a.accept().await;
    pass(&mut first, &mut first_at_a, b"before").await;

    a.upstream.set_drained(true);
    b.upstream.set_serving(true);
    let mut second = relay.connect().await;
    let mut second_at_b = b.accept().await;
    pass(&mut second, &mut second_at_b, b"to b").await;

    // The drained guest's connection carries on and ends normally.
    pass(&mut first_at_a, &mut first, b"after the drain").await;
    first.shutdown().await.unwrap();
    let mut rest = Vec::new();
    bounded(first_at_a.read_to_end(&mut rest)).await.unwrap();
    first_at_a.write_all(b"bye").await.unwrap();
    drop(first_at_a);
    bounded(first.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"bye");
    relay.await_closed("a", "finished", 1).await;

    // Both drained: nobody takes the next client.
    b.upstream.set_drained(true);
    let mut third = relay.connect().await;
    assert_closed(&mut third).await;
    assert_eq!(
        relay.sample(r#"cocoon_relay_connections_refused_total{reason="no_guest"}"#),
        1
    );
}

#[tokio::test]
async fn turning_serving_off_cuts_open_connections() {
    let (guest, relay, mut client, mut at_guest) = connected(limits()).await;
    pass(&mut client, &mut at_guest, b"ping").await;
    guest.upstream.set_serving(false);
    assert_closed(&mut client).await;
    assert_closed(&mut at_guest).await;
    relay.await_closed("a", "cut", 1).await;
    // And, still off, it takes no new client.
    let mut refused = relay.connect().await;
    assert_closed(&mut refused).await;
}

#[tokio::test]
async fn with_no_serving_guest_the_client_is_closed_and_counted() {
    let guest = Guest::new("a").await;
    guest.upstream.set_serving(false);
    let relay = Relay::start(&[&guest], limits()).await;
    let mut client = relay.connect().await;
    assert_closed(&mut client).await;
    assert_eq!(
        relay.sample(r#"cocoon_relay_connections_refused_total{reason="no_guest"}"#),
        1
    );
    assert_eq!(guest.upstream.active(), 0);
}

/// Starts a relay with these limits, holds two connections from 127.0.0.1 and checks
/// that a third is closed and counted under `reason`.
async fn a_third_connection_is_refused(
    per_source: usize,
    global: usize,
    reason: &str,
) -> (Guest, Relay, Vec<TcpStream>) {
    let guest = Guest::new("a").await;
    let relay = Relay::start(
        &[&guest],
        RelayLimits {
            max_connections_per_source: per_source,
            max_connections: global,
            ..limits()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(relay.connect().await);
        held.push(guest.accept().await);
    }
    let mut third = relay.connect().await;
    assert_closed(&mut third).await;
    for counted in ["source_limit", "global_limit", "no_guest"] {
        assert_eq!(
            relay.sample(&format!(
                r#"cocoon_relay_connections_refused_total{{reason="{counted}"}}"#
            )),
            u64::from(counted == reason),
            "{counted}"
        );
    }
    (guest, relay, held)
}

#[tokio::test]
async fn the_per_source_limit_refuses_the_next_connection_from_the_same_address() {
    let (guest, relay, mut held) = a_third_connection_is_refused(2, 10, "source_limit").await;
    // Closing one gives its place back.
    held.truncate(2);
    eventually(|| guest.upstream.active() == 1).await;
    let mut fourth = relay.connect().await;
    let mut fourth_at_guest = guest.accept().await;
    pass(&mut fourth, &mut fourth_at_guest, b"admitted").await;
}

#[tokio::test]
async fn the_global_limit_refuses_the_next_connection() {
    a_third_connection_is_refused(10, 2, "global_limit").await;
}

#[tokio::test]
async fn the_total_duration_limit_closes_a_busy_connection() {
    let (_guest, relay, mut client, mut at_guest) = connected(RelayLimits {
        max_connection_duration: Some(Duration::from_millis(300)),
        ..limits()
    })
    .await;
    tokio::spawn(async move {
        let (mut read, mut write) = at_guest.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
    });
    // Keep it busy (never idle) until the relay ends it.
    bounded(async {
        let mut buf = [1u8; 64];
        loop {
            if client.write_all(&buf).await.is_err() {
                break;
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    relay.await_closed("a", "total_timeout", 1).await;
}

#[tokio::test]
async fn a_guest_that_dies_mid_stream_closes_the_client() {
    let guest = Guest::new("a").await;
    let relay = Relay::start(&[&guest], limits()).await;
    // A guest that resets (a crash with unread data) and one that just goes away (FIN).
    for reset in [true, false] {
        let mut client = relay.connect().await;
        let mut at_guest = guest.accept().await;
        pass(&mut client, &mut at_guest, b"prompt").await;
        at_guest.write_all(b"half a resp").await.unwrap();
        let mut part = [0u8; 11];
        bounded(client.read_exact(&mut part)).await.unwrap();
        if reset {
            at_guest.set_zero_linger().unwrap();
        }
        drop(at_guest);
        assert_closed(&mut client).await;
    }
    relay.await_closed("a", "error", 1).await;
}

#[tokio::test]
async fn an_unreachable_guest_closes_the_client_and_counts_an_error() {
    // A port nobody listens on: bind, learn it, let go.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let guest = Guest {
        listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        upstream: Upstream::new("dead", dead.to_string()),
    };
    guest.upstream.set_serving(true);
    let relay = Relay::start(&[&guest], limits()).await;
    let mut client = relay.connect().await;
    assert_closed(&mut client).await;
    relay.await_closed("dead", "error", 1).await;
}

#[tokio::test]
async fn the_metrics_count_connections_and_bytes_per_guest() {
    let (_guest, relay, mut client, mut at_guest) = connected(limits()).await;
    pass(&mut client, &mut at_guest, b"12345").await;
    relay
        .await_sample(
            r#"cocoon_relay_bytes_total{guest="a",direction="to_guest"}"#,
            5,
        )
        .await;
    assert_eq!(
        relay.sample(r#"cocoon_relay_connections_open{guest="a"}"#),
        1
    );
    pass(&mut at_guest, &mut client, b"1234567").await;
    drop((client, at_guest));
    relay.await_closed("a", "finished", 1).await;
    for (sample, value) in [
        (r#"cocoon_relay_connections_total{guest="a"}"#, 1),
        (r#"cocoon_relay_connections_open{guest="a"}"#, 0),
        (
            r#"cocoon_relay_bytes_total{guest="a",direction="to_guest"}"#,
            5,
        ),
        (
            r#"cocoon_relay_bytes_total{guest="a",direction="to_client"}"#,
            7,
        ),
    ] {
        assert_eq!(relay.sample(sample), value, "{sample}\n{}", relay.text());
    }
}

#[tokio::test]
async fn run_relay_relays_to_its_one_guest() {
    let guest = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_relay(
        listener,
        guest.local_addr().unwrap().to_string(),
        limits(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = bounded(TcpStream::connect(address)).await.unwrap();
    let (mut at_guest, _) = bounded(guest.accept()).await.unwrap();
    pass(&mut client, &mut at_guest, b"hello").await;
    pass(&mut at_guest, &mut client, b"ciphertext").await;
    stop.send(()).unwrap();
    bounded(task).await.unwrap();
}
