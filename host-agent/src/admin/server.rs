//! The admin listener: plain HTTP/1.1 on an address of the operator's choosing, bounded so
//! that a stray or hostile client can hold little: a cap on connections at once (more are
//! closed at once), a deadline for each request head, an idle timeout on every
//! connection, a small request body limit. On shutdown it stops accepting, lets open
//! requests finish for a short grace, and then cuts what is left.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::idle::IdleTimeout;
use super::routes::{handle, Admin};
use super::{AdminAuth, AdminBackend};

/// The admin listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time a client has to send a request head (from the first byte of the connection,
    /// or from the previous response on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A connection where no byte moved either way for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request body, in bytes (no route takes one; this bounds what is read).
    pub body_limit: usize,
    /// Largest request head (request line and headers), in bytes (8 KiB at least).
    pub head_limit: usize,
    /// On shutdown, time open connections get to finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_limit: 64 * 1024,
            head_limit: 16 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the admin API on `listener` with the default [`AdminLimits`] until `shutdown`
/// resolves.
pub async fn serve_admin(
    listener: TcpListener,
    auth: AdminAuth,
    backend: Arc<dyn AdminBackend>,
    shutdown: impl Future<Output = ()>,
) {
    serve_admin_with(listener, auth, backend, AdminLimits::default(), shutdown).await
}

/// [`serve_admin`] with other limits.
pub async fn serve_admin_with(
    listener: TcpListener,
    auth: AdminAuth,
    backend: Arc<dyn AdminBackend>,
    limits: AdminLimits,
    shutdown: impl Future<Output = ()>,
) {
    let admin = Arc::new(Admin {
        auth,
        backend,
        body_limit: limits.body_limit,
    });
    if let Ok(address) = listener.local_addr() {
        info!(%address, token = admin.auth.requires_token(), "admin API listening");
    }
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        // Count only the connections still open: collect the ones that ended.
        while let Some(ended) = connections.try_join_next() {
            if let Err(e) = ended {
                warn!("admin connection task failed: {e}");
            }
        }
        if connections.len() >= limits.max_connections {
            warn!(%peer, "admin connection limit ({}) reached; closing", limits.max_connections);
            continue;
        }
        connections.spawn(serve_connection(
            stream,
            peer,
            Arc::clone(&admin),
            limits,
            stopped.clone(),
        ));
    }
    info!("admin API stopping");
    stop.send_replace(true);
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        warn!(
            "cutting {} admin connections still open after {:?}",
            connections.len(),
            limits.shutdown_grace
        );
        connections.shutdown().await;
    }
}

/// The next connection. An accept error (out of file descriptors, mostly) is logged and
/// retried after a pause rather than in a spin. Cancel-safe, like `accept` itself.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection until the client closes it, a limit closes it, or shutdown.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admin: Arc<Admin>,
    limits: AdminLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
    let service = service_fn(move |request| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, Infallible>(handle(&admin, peer, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.head_limit.max(8192));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = async { let _ = stopped.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        debug!(%peer, "admin connection ended: {e}");
    }
}
