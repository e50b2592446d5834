//! Binding a listener (the relay's, the admin API's), with an error that names the address.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// Listens on `address`; returns the listener and the address it got (port 0 resolved).
pub async fn listen(address: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let fail = |source| Error::Listen { address, source };
    let listener = TcpListener::bind(address).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}
