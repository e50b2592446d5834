//! The HTTPS listener: TLS 1.3 terminates here, inside the guest.
//!
//! Every socket is bounded: a connection limit (excess connections are closed at once),
//! a TLS handshake timeout, hyper's header-read timeout, which also closes idle
//! keep-alive connections and slow-loris clients, and a write-stall timeout: a client
//! that takes no bytes for that long (a zero receive window, a relay that stopped
//! reading) loses its connection, so nothing it left unread is held for ever.
//!
//! The host's internal API has its own listener ([`serve_internal`]): plain HTTP on an
//! address only the host reaches (loopback; vsock in a VM, not implemented yet), so the
//! public port that the relay forwards never routes to it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use cocoon_attestation::report_data::TLS_EXPORTER_LABEL;

use crate::http::router::{handle, handle_internal};
use crate::http::state::{AppState, Session};

/// Socket-level limits.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// How long a write may wait for the client to take bytes.
    pub write_stall_timeout: Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    limits: SocketLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down: no longer accepting connections");
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, "connection limit ({}) reached; closing", limits.max_connections);
            drop(tcp);
            continue;
        };
        tcp.set_nodelay(true).ok();
        let acceptor = acceptor.clone();
        let state = state.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut tcp = TimeoutStream::new(tcp);
            tcp.set_write_timeout(Some(limits.write_stall_timeout));
            let tcp = Box::pin(tcp);
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut tls_exporter = [0u8; 32];
            if let Err(e) =
                tls.get_ref()
                    .1
                    .export_keying_material(&mut tls_exporter, TLS_EXPORTER_LABEL, None)
            {
                debug!(%peer, "no TLS exporter: {e}");
                return;
            }
            let session = Session::new(tls_exporter);
            let service = service_fn(move |request| {
                let (state, session) = (state.clone(), session.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(state, session, request).await) }
            });
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Connections the internal listener keeps open at once (its only client is the host's
/// collector).
const MAX_INTERNAL_CONNECTIONS: usize = 16;

/// Serves the host's internal API (plain HTTP/1.1) on its own listener until the process
/// ends. Connections are bounded in number and by the header-read timeout, as on the
/// public port.
pub async fn serve_internal(
    listener: TcpListener,
    state: Arc<AppState>,
    header_read_timeout: Duration,
) {
    let connections = Arc::new(Semaphore::new(MAX_INTERNAL_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                warn!("internal listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, "internal listener: connection limit ({MAX_INTERNAL_CONNECTIONS}) reached; closing");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle_internal(state, request).await) }
            });
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(e) = result {
                debug!(%peer, "internal connection ended: {e}");
            }
        });
    }
}
