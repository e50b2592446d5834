//! The transport to Intel's Quote Generation Service: a stream socket to the host (vsock
//! CID 2, port 4050 by default, as `/etc/tdx-attest.conf` configures `libtdx_attest`),
//! one length-prefixed `GET_QUOTE_REQ` out, one `GET_QUOTE_RESP` back. The message
//! codec is `cocoon_attestation::tdx::qgs`; tests talk to a fake QGS on a Unix socket.
//!
//! Every read and write has a timeout, and the announced response length is bounded
//! before it is read, so a stuck or hostile QGS cannot hang or exhaust the guest.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use cocoon_attestation::tdx::qgs::{
    frame, framed_len, qgs_error_name, GetQuoteRequest, GetQuoteResponse, LENGTH_PREFIX_LEN,
};

use crate::{Error, Result};

/// `VMADDR_CID_HOST`: the hypervisor's side of vsock.
pub const QGS_VSOCK_CID: u32 = 2;
/// The port the QGS listens on by default.
pub const QGS_VSOCK_PORT: u32 = 4050;

/// Where the QGS listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QgsAddress {
    Vsock {
        cid: u32,
        port: u32,
    },
    /// A Unix socket (a QGS reachable inside the guest, or a fake one in tests).
    Unix(PathBuf),
}

impl Default for QgsAddress {
    fn default() -> Self {
        Self::Vsock {
            cid: QGS_VSOCK_CID,
            port: QGS_VSOCK_PORT,
        }
    }
}

impl std::fmt::Display for QgsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vsock { cid, port } => write!(f, "QGS at vsock CID {cid} port {port}"),
            Self::Unix(path) => write!(f, "QGS at unix:{}", path.display()),
        }
    }
}

/// A stream the QGS conversation runs over.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Asks the QGS for quotes.
#[derive(Debug, Clone)]
pub struct QgsClient {
    address: QgsAddress,
    timeout: Duration,
}

impl QgsClient {
    /// `timeout` bounds every read and write (quote generation takes a few seconds).
    pub fn new(address: QgsAddress, timeout: Duration) -> Self {
        Self { address, timeout }
    }

    pub fn address(&self) -> &QgsAddress {
        &self.address
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        Error::TeeInterface {
            interface: self.address.to_string(),
            detail: detail.into(),
        }
    }

    fn connect(&self) -> Result<Box<dyn Stream>> {
        match &self.address {
            QgsAddress::Vsock { cid, port } => super::sys::vsock_connect(*cid, *port, self.timeout)
                .map(|s| Box::new(s) as Box<dyn Stream>)
                .map_err(|e| {
                    self.err(format!(
                        "cannot connect ({e}): is the QGS running on the host and is the \
                         vsock device attached to this TD?"
                    ))
                }),
            QgsAddress::Unix(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)
                    .map_err(|e| self.err(format!("cannot connect: {e}")))?;
                stream
                    .set_read_timeout(Some(self.timeout))
                    .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
                    .map_err(|e| self.err(format!("cannot set timeouts: {e}")))?;
                Ok(Box::new(stream))
            }
        }
    }

    /// The quote for `td_report` (a 1024-byte TDREPORT).
    pub fn get_quote(&self, td_report: &[u8]) -> Result<Vec<u8>> {
        let request = GetQuoteRequest {
            report: td_report.to_vec(),
            id_list: Vec::new(),
        }
        .encode()?;
        let mut stream = self.connect()?;
        stream
            .write_all(&frame(&request)?)
            .and_then(|()| stream.flush())
            .map_err(|e| self.err(format!("sending GET_QUOTE_REQ failed: {e}")))?;
        let mut prefix = [0u8; LENGTH_PREFIX_LEN];
        read_exact(&mut stream, &mut prefix)
            .map_err(|e| self.err(format!("reading the response length failed: {e}")))?;
        let len = framed_len(prefix).map_err(|e| self.err(e.to_string()))?;
        let mut body = vec![0u8; len];
        read_exact(&mut stream, &mut body)
            .map_err(|e| self.err(format!("reading the {len}-byte GET_QUOTE_RESP failed: {e}")))?;
        let response = GetQuoteResponse::decode(&body).map_err(|e| self.err(e.to_string()))?;
        if response.error_code != 0 {
            return Err(self.err(format!(
                "the QGS answered error {:#x} ({})",
                response.error_code,
                qgs_error_name(response.error_code)
            )));
        }
        Ok(response.quote)
    }
}

/// `read_exact` that says how far it got when the peer closes early.
fn read_exact(stream: &mut dyn Stream, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "short read: the QGS closed after {got} of {} bytes",
                        buf.len()
                    ),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
