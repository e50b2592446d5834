//! Socket set-up for both ends of a relayed connection.
//!
//! TCP keepalive, so that a peer that vanished without a FIN or reset (a frozen VM, a
//! dropped NAT entry) is eventually noticed by the kernel even on a connection the idle
//! timeout allows to sit quiet; no Nagle delay, because the relay forwards records the
//! peers already sized. Tokio offers `SO_KEEPALIVE` only on an unconnected `TcpSocket`, so
//! for accepted streams it is set through a duplicate of the descriptor (one socket, two
//! descriptors; closing the duplicate leaves the connection alone). The kernel's probe
//! timing applies (`net.ipv4.tcp_keepalive_*`).

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::error::{Error, Result};

/// Turns on keepalive and turns off Nagle's algorithm on `stream`.
pub(crate) fn tune(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    keepalive(stream)?.set_keepalive(true)
}

/// A handle for options tokio exposes only on `TcpSocket`.
fn keepalive(stream: &TcpStream) -> std::io::Result<TcpSocket> {
    let duplicate = stream.as_fd().try_clone_to_owned()?;
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(
        duplicate,
    )))
}

/// Connects to the guest at `address` within `timeout`.
pub(crate) async fn connect(address: &str, timeout: Duration) -> Result<TcpStream> {
    let failed = |detail: String| Error::GuestConnect {
        address: address.to_string(),
        detail,
    };
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("did not accept within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn tune_turns_keepalive_on_and_nagle_off_on_both_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let outgoing = connect(&address, Duration::from_secs(5)).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        for stream in [&outgoing, &accepted] {
            assert!(!keepalive(stream).unwrap().keepalive().unwrap());
            tune(stream).unwrap();
            assert!(keepalive(stream).unwrap().keepalive().unwrap());
            assert!(stream.nodelay().unwrap());
        }
    }

    #[tokio::test]
    async fn a_refused_connect_names_the_guest() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let error = connect(&dead, Duration::from_secs(5)).await.unwrap_err();
        assert!(error.to_string().contains(&dead), "{error}");
    }
}
